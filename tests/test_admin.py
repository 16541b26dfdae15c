"""The Django admin: every page an administrator uses loads and finds what it should."""

import pytest
from django.urls import reverse

from editor.models import DocumentUpdate, Membership
from tests.conftest import make_user


@pytest.fixture
def admin_client(client, db):
    client.force_login(make_user("root", is_staff=True, is_superuser=True))
    return client


@pytest.mark.parametrize(
    "name",
    [
        "admin:index",
        "admin:auth_user_changelist",
        "admin:auth_user_add",
        "admin:editor_document_changelist",
        "admin:editor_document_add",
        "admin:editor_membership_changelist",
        "admin:editor_membership_add",
        "admin:editor_documentupdate_changelist",
    ],
)
def test_it_loads_each_admin_list_and_form(admin_client, document, name):
    assert admin_client.get(reverse(name)).status_code == 200


def test_it_loads_change_pages(admin_client, document, owner):
    membership = Membership.objects.filter(document=document).first()
    update = DocumentUpdate.objects.create(document=document, data=b"\x00\x00", author=owner)
    for url in [
        reverse("admin:editor_document_change", args=[document.pk]),
        reverse("admin:editor_membership_change", args=[membership.pk]),
        reverse("admin:editor_documentupdate_change", args=[update.pk]),
        reverse("admin:auth_user_change", args=[owner.pk]),
    ]:
        assert admin_client.get(url).status_code == 200, url


def test_it_shows_members_inline_on_the_document(admin_client, document):
    body = admin_client.get(reverse("admin:editor_document_change", args=[document.pk])).content
    assert b"eddie" in body and b"vera" in body


@pytest.mark.parametrize("query", ["Meeting", "olive"])
def test_it_searches_documents_by_title_and_owner(admin_client, document, stranger, query):
    from editor.models import Document

    Document.objects.create_for(stranger, "Unrelated")
    body = admin_client.get(reverse("admin:editor_document_changelist"), {"q": query}).content
    assert b"Meeting notes" in body
    assert b"Unrelated" not in body


def test_it_filters_documents_by_member_role(admin_client, document):
    url = reverse("admin:editor_document_changelist")
    assert admin_client.get(url, {"memberships__role": "viewer"}).status_code == 200


def test_it_keeps_non_staff_out(client, owner):
    client.force_login(owner)
    response = client.get(reverse("admin:index"))
    assert response.status_code == 302


def test_it_lists_and_shows_versions_read_only(admin_client, document, owner):
    from editor import content

    version = content.create_version(document, "Before review", owner)

    listing = admin_client.get(reverse("admin:editor_version_changelist"))
    page = admin_client.get(reverse("admin:editor_version_change", args=[version.pk]))

    assert "Before review" in listing.content.decode()
    assert page.status_code == 200
    assert admin_client.get(reverse("admin:editor_version_add")).status_code == 403


def write_census(*processes) -> None:
    from asgiref.sync import async_to_sync

    from editor.realtime import census
    from editor.realtime.presence import async_client, redis_hosts

    async def write() -> None:
        client = async_client(redis_hosts()[0])
        for process in processes:
            await census.write(client, process)
        await client.aclose()

    async_to_sync(write)()


def test_it_shows_sockets_and_rooms_per_process_and_in_total(admin_client):
    import time

    from editor.realtime.census import ProcessCensus

    write_census(
        ProcessCensus(name="web-1:8001", pid=4101, sockets=12, rooms=3, at=time.time()),
        ProcessCensus(name="web-2:8002", pid=4202, sockets=30, rooms=5, at=time.time()),
    )

    response = admin_client.get(reverse("admin:editor_document_editing_now"))

    assert response.status_code == 200
    assert [(p["name"], p["sockets"], p["rooms"]) for p in response.context["processes"]] == [
        ("web-1:8001", 12, 3),
        ("web-2:8002", 30, 5),
    ]
    assert (response.context["total_sockets"], response.context["total_rooms"]) == (42, 8)
    body = response.content.decode()
    assert "web-1:8001" in body and "4202" in body
    assert "Total (2 processes)" in body
    assert "<th>42</th><th>8</th>" in body


def test_it_says_when_no_process_reports(admin_client):
    body = admin_client.get(reverse("admin:editor_document_editing_now")).content.decode()

    assert "No server process has reported in the last 30 seconds." in body


def test_it_still_shows_the_page_with_redis_down(admin_client, settings):
    from tests.test_healthz import closed_port

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [f"redis://127.0.0.1:{closed_port()}/0"]},
        }
    }

    response = admin_client.get(reverse("admin:editor_document_editing_now"))

    assert response.status_code == 200
    assert "Server processes are unavailable" in response.content.decode()
