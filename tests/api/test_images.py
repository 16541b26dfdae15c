"""POST /api/documents/<id>/images/ and GET /documents/<id>/images/<image id>: who may add an
image, what is accepted (Pillow decides, never the client's name or header), and how it is
served (only to people who may view the document, locked down against anything that got past
the check)."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from asgiref.sync import async_to_sync
from django.core.files.storage import FileSystemStorage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image
from rest_framework.authtoken.models import Token

from editor.models import DocumentImage, Membership, ShareLink

HOSTILE_NAMES = [
    '"><img src=x onerror=alert(1)>.png',
    "../../../etc/passwd.png",
    "evil\r\nX-Injected: yes.png",
    'quote".png',
    "ünïcödé 😀 name.png",
    "a](javascript:alert(1)).png",
]


def picture(fmt: str = "PNG", size: tuple[int, int] = (3, 2), **save) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buffer, fmt, **save)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A real 1 × 1 PNG whose header announces width × height (checksum fixed), the shape of a
    decompression bomb: tiny on the wire, enormous once decoded."""
    data = bytearray(picture("PNG", (1, 1)))
    ihdr = bytearray(data[16:29])
    ihdr[0:8] = struct.pack(">II", width, height)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + bytes(ihdr)))
    return bytes(data)


SVG = (
    b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)">'
    b"<script>alert(document.cookie)</script><rect width='10' height='10'/></svg>"
)
HTML = b"<!DOCTYPE html><html><body><script>alert(document.cookie)</script></body></html>"


@pytest.fixture(autouse=True)
def image_folder(tmp_path, monkeypatch):
    """Each test's images in a folder of its own (the field's storage is made at import)."""
    storage = FileSystemStorage(location=tmp_path / "images")
    monkeypatch.setattr(DocumentImage._meta.get_field("file"), "storage", storage)
    return tmp_path / "images"


def served_bytes(response) -> bytes:
    """A served image's bytes: its content is an asynchronous iterator (editor/image_views.py),
    read here as the ASGI handler reads it."""

    async def read():
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(read)()


def upload_url(document):
    return reverse("api-images", args=[document.id])


def upload(client, document, data: bytes, name: str = "photo.png", content_type="image/png"):
    file = SimpleUploadedFile(name, data, content_type=content_type)
    return client.post(upload_url(document), {"image": file})


# -- who may add images ------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["owner", "editor"])
def test_it_lets_owners_and_editors_add_an_image(login_as, document, people, who, image_folder):
    data = picture("PNG", (3, 2))

    response = upload(login_as(who), document, data, name="holiday.png")

    assert response.status_code == 201
    image = DocumentImage.objects.get()
    assert response.json() == {
        "id": str(image.pk),
        "url": f"/documents/{document.pk}/images/{image.pk}",
        "content_type": "image/png",
        "width": 3,
        "height": 2,
        "size": len(data),
        "created_at": image.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert image.uploader == people[who]
    assert image.file.name == f"{document.pk}/{image.pk}.png"
    assert (image_folder / image.file.name).read_bytes() == data


def test_it_forbids_viewers_to_add_images(login_as, document, image_folder):
    response = upload(login_as("viewer"), document, picture())

    assert response.status_code == 403
    assert response.json() == {"detail": "Viewers cannot add images to this document."}
    assert not DocumentImage.objects.exists()
    assert not image_folder.exists() or not any(image_folder.rglob("*.*"))


@pytest.mark.parametrize(("who", "status"), [("stranger", 404), ("anonymous", 403)])
def test_it_tells_strangers_nothing(login_as, document, who, status):
    response = upload(login_as(who), document, picture())

    assert response.status_code == status
    assert not DocumentImage.objects.exists()


def test_it_accepts_a_script_with_a_token(client, document, owner):
    token = Token.objects.create(user=owner)
    data = picture()
    file = SimpleUploadedFile("diagram.png", data, content_type="image/png")

    response = client.post(
        upload_url(document), {"image": file}, HTTP_AUTHORIZATION=f"Token {token.key}"
    )
    served = client.get(response.json()["url"], HTTP_AUTHORIZATION=f"Token {token.key}")

    assert response.status_code == 201
    assert served.status_code == 200
    assert served["Content-Type"] == "image/png"
    assert served_bytes(served) == data


# -- what is accepted --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "content_type", "extension"),
    [
        ("PNG", "image/png", "png"),
        ("JPEG", "image/jpeg", "jpg"),
        ("GIF", "image/gif", "gif"),
        ("WEBP", "image/webp", "webp"),
    ],
)
def test_it_accepts_png_jpeg_gif_and_webp_as_what_they_are(
    login_as, document, fmt, content_type, extension
):
    # Named and labelled as something else: Pillow's finding decides.
    data = picture(fmt, (5, 4))
    response = upload(login_as("owner"), document, data, name="x.bmp", content_type="text/html")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["content_type"], body["width"], body["height"]) == (content_type, 5, 4)
    image = DocumentImage.objects.get()
    assert image.file.name.endswith(f"/{image.pk}.{extension}")
    served = login_as("owner").get(body["url"])
    assert served["Content-Type"] == content_type
    assert served["Content-Disposition"] == f'inline; filename="{image.pk}.{extension}"'
    assert served_bytes(served) == data


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("drawing.svg", "image/svg+xml"), ("drawing.png", "image/png")],
)
def test_it_refuses_svg_however_it_is_labelled(login_as, document, name, content_type):
    response = upload(login_as("owner"), document, SVG, name=name, content_type=content_type)

    assert response.status_code == 400
    assert response.json() == {
        "image": [
            "SVG images are not accepted (they can carry scripts): use PNG, JPEG, GIF or WebP."
        ]
    }
    assert not DocumentImage.objects.exists()


@pytest.mark.parametrize(
    "data",
    [
        HTML,
        b"\x89PNG\r\n\x1a\n" + HTML,  # the PNG signature, then HTML
        picture("PNG")[:40],  # a PNG cut short
        picture("PNG")[:-9] + b"\x00" * 9,  # a PNG whose last chunk is broken
        b"%PDF-1.7\n" + b"0" * 100,
        picture("BMP"),  # an image, but not one collab accepts
        picture("TIFF"),
    ],
    ids=["html", "html-after-png-signature", "truncated-png", "broken-png", "pdf", "bmp", "tiff"],
)
def test_it_refuses_what_is_not_an_accepted_image(login_as, document, data, image_folder):
    response = upload(login_as("owner"), document, data, name="cat.png", content_type="image/png")

    assert response.status_code == 400
    assert response.json() == {
        "image": ["The file is not an image collab accepts: use PNG, JPEG, GIF or WebP."]
    }
    assert not DocumentImage.objects.exists()
    assert not image_folder.exists() or not any(image_folder.rglob("*.*"))


def test_it_refuses_an_image_over_max_image_bytes_with_413(login_as, document, settings):
    data = picture("PNG", (64, 64))
    settings.MAX_IMAGE_BYTES = len(data) - 1

    response = upload(login_as("owner"), document, data)

    assert response.status_code == 413
    assert response.json() == {
        "detail": f"The image is {len(data)} bytes; images are limited to {len(data) - 1} bytes."
    }
    assert not DocumentImage.objects.exists()


def test_it_refuses_a_body_too_large_for_any_image_before_reading_it(login_as, document, settings):
    settings.MAX_IMAGE_BYTES = 1024
    data = picture("PNG", (2, 2)) + b"\x00" * (200 * 1024)

    response = upload(login_as("owner"), document, data)

    assert response.status_code == 413
    # "The request is", not "The image is": refused by its Content-Length, before parsing.
    detail = response.json()["detail"]
    assert detail.startswith("The request is 200.")
    assert detail.endswith(" KiB; images are limited to 1.0 KiB.")


def test_it_refuses_a_decompression_bomb(login_as, document):
    bomb = png_claiming(100_000, 100_000)  # 10 gigapixels in 69 bytes; Pillow's own limit
    assert len(bomb) < 100

    response = upload(login_as("owner"), document, bomb)

    assert response.status_code == 400
    assert response.json() == {
        "image": ["The image has too many pixels; at most 64,000,000 are accepted."]
    }
    assert not DocumentImage.objects.exists()


def test_it_refuses_more_pixels_than_max_image_pixels(login_as, document):
    response = upload(login_as("owner"), document, png_claiming(9_000, 9_000))  # 81 M

    assert response.status_code == 400
    assert response.json() == {
        "image": ["The image has too many pixels (9000 × 9000); at most 64,000,000 are accepted."]
    }


def test_pillows_own_bomb_limit_holds_when_collabs_is_raised(login_as, document, settings):
    settings.MAX_IMAGE_PIXELS = 10**12  # ours out of the way: Pillow refuses past 2 × 89 M

    response = upload(login_as("owner"), document, png_claiming(100_000, 100_000))

    assert response.status_code == 400
    assert response.json()["image"][0].startswith("The image has too many pixels")


def test_it_accepts_an_image_at_the_pixel_limit(login_as, document, settings):
    settings.MAX_IMAGE_PIXELS = 6

    at_limit = upload(login_as("owner"), document, picture("PNG", (3, 2)))
    over = upload(login_as("owner"), document, picture("PNG", (7, 1)))

    assert at_limit.status_code == 201
    assert over.status_code == 400


@pytest.mark.parametrize("data", [{}, {"image": "not a file"}])
def test_it_requires_a_file_in_the_image_field(login_as, document, data):
    response = login_as("owner").post(upload_url(document), data)

    assert response.status_code == 400
    assert list(response.json()) == ["image"]


def test_it_refuses_an_empty_file(login_as, document):
    response = upload(login_as("owner"), document, b"")

    assert response.status_code == 400
    assert list(response.json()) == ["image"]


# -- serving -----------------------------------------------------------------------------------


@pytest.fixture
def stored(document, editor_user):
    """An image the editor added, through a client of its own (the test's stays logged out)."""
    uploader = Client()
    uploader.force_login(editor_user)
    data = picture("PNG", (4, 4))
    body = upload(uploader, document, data).json()
    return body["url"], data


@pytest.mark.parametrize("who", ["owner", "editor", "viewer"])
def test_it_serves_the_image_to_everyone_who_may_view(client, people, stored, who):
    url, data = stored
    client.force_login(people[who])

    response = client.get(url)

    assert response.status_code == 200
    assert served_bytes(response) == data
    image = DocumentImage.objects.get()
    assert response["Content-Type"] == "image/png"
    assert response["Content-Length"] == str(len(data))
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert response["Content-Disposition"] == f'inline; filename="{image.pk}.png"'
    assert response["Cache-Control"] == "private, max-age=3600"
    assert response["Cross-Origin-Resource-Policy"] == "same-origin"


@pytest.mark.parametrize("who", ["stranger", "anonymous"])
def test_it_answers_404_to_anyone_who_may_not_view(login_as, stored, who):
    url, _ = stored

    response = login_as(who).get(url)

    assert response.status_code == 404
    assert b"\x89PNG" not in response.content


def test_it_stops_serving_a_member_who_was_removed(client, viewer, document, stored):
    url, _ = stored
    client.force_login(viewer)
    before = client.get(url)
    assert before.status_code == 200
    served_bytes(before)

    Membership.objects.filter(document=document, user=viewer).delete()

    assert client.get(url).status_code == 404


def guest_through(client, document, anyone: bool) -> ShareLink:
    """Opens a share link without logging in (an "anyone" link goes into the session)."""
    link = ShareLink.objects.create(
        document=document, role="viewer", anyone=anyone, created_by=document.owner
    )
    client.get(link.get_absolute_url())
    return link


def test_a_guest_with_an_anyone_link_sees_images_until_it_is_revoked(client, document, stored):
    url, data = stored
    link = guest_through(client, document, anyone=True)

    served = client.get(url)
    assert served.status_code == 200
    assert served_bytes(served) == data

    link.delete()
    assert client.get(url).status_code == 404


def test_a_link_for_people_with_accounts_shows_a_guest_nothing(client, document, stored):
    url, _ = stored
    guest_through(client, document, anyone=False)

    assert client.get(url).status_code == 404


def test_an_image_is_found_only_under_its_own_document(client, owner, document, stored):
    from editor.models import Document

    url, _ = stored
    other = Document.objects.create_for(owner, "Other")
    client.force_login(owner)
    image_id = url.rsplit("/", 1)[1]

    assert client.get(f"/documents/{other.pk}/images/{image_id}").status_code == 404
    assert client.get(f"{url[:-4]}0000").status_code == 404
    assert client.get(url + "/").status_code == 404


def test_a_bad_token_is_a_stranger(client, stored):
    url, _ = stored

    response = client.get(url, HTTP_AUTHORIZATION="Token not-a-token")

    assert response.status_code == 404


def test_it_answers_head_and_refuses_writes_on_the_image_url(client, owner, stored):
    url, data = stored
    client.force_login(owner)

    head = client.head(url)

    assert head.status_code == 200
    assert (head["Content-Type"], head["Content-Length"]) == ("image/png", str(len(data)))
    assert head.content == b""
    assert client.post(url).status_code == 405
    assert client.delete(url).status_code == 405


def test_a_missing_file_is_a_404_not_a_500(client, owner, stored, image_folder):
    url, _ = stored
    for path in image_folder.rglob("*.png"):
        path.unlink()
    client.force_login(owner)

    assert client.get(url).status_code == 404


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_hostile_file_name_reaches_neither_the_storage_nor_a_header(
    login_as, document, name, image_folder
):
    client = login_as("owner")

    body = upload(client, document, picture(), name=name).json()
    served = client.get(body["url"])
    assert served_bytes(served) == picture()

    image = DocumentImage.objects.get()
    assert image.file.name == f"{document.pk}/{image.pk}.png"
    assert [p.relative_to(image_folder).as_posix() for p in image_folder.rglob("*.png")] == [
        image.file.name
    ]
    headers = "\n".join(f"{key}: {value}" for key, value in served.items())
    for part in ("img", "passwd", "Injected", "quote", "ünï", "javascript", ".."):
        assert part not in headers
    assert "X-Injected" not in served


def test_a_png_with_html_after_it_is_still_only_ever_an_image(client, login_as, document):
    # A valid PNG with a page appended is a PNG: kept, and served so that no browser runs it.
    polyglot = picture() + HTML
    body = upload(login_as("owner"), document, polyglot, name="page.html").json()

    served = client.get(body["url"])

    assert served["Content-Type"] == "image/png"
    assert served["X-Content-Type-Options"] == "nosniff"
    assert served["Content-Security-Policy"] == "default-src 'none'; sandbox"
    assert served["Content-Disposition"].endswith('.png"')
    assert served_bytes(served) == polyglot


def test_deleting_the_document_deletes_its_files(
    client, owner, document, stored, image_folder, django_capture_on_commit_callbacks
):
    assert len(list(image_folder.rglob("*.png"))) == 1

    with django_capture_on_commit_callbacks(execute=True):
        document.delete()

    assert not DocumentImage.objects.exists()
    assert list(image_folder.rglob("*.png")) == []
