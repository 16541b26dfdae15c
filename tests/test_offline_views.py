"""GET /sw.js (editor/offline_views.py): the service worker and what it is told. Its behaviour in a
browser is in tests/browser/test_offline.py."""

import json
import os
import re

import pytest
from django.urls import reverse

from editor import offline_views


def worker_config(response) -> dict:
    match = re.search(r"^const CONFIG = (.*)$", response.content.decode(), re.MULTILINE)
    assert match, "no CONFIG line in the worker"
    return json.loads(match.group(1))


def test_it_serves_the_worker_from_the_root_to_anyone(client):
    response = client.get("/sw.js")

    assert reverse("service-worker") == "/sw.js"  # its scope may then be the whole site
    assert response.status_code == 200
    assert response["Content-Type"] == "application/javascript; charset=utf-8"
    assert response["Cache-Control"] == "no-cache"
    assert "{{" not in response.content.decode()


def test_it_refuses_other_methods(client):
    assert client.post("/sw.js").status_code == 405


def test_it_names_the_urls_that_sign_people_in_and_out(client):
    config = worker_config(client.get("/sw.js"))

    assert set(config["sessionPaths"]) == {
        "/accounts/login/",
        "/accounts/logout/",
        "/accounts/signup/",
        "/admin/login/",
        "/admin/logout/",
    }


@pytest.mark.django_db
def test_its_assets_are_exactly_those_the_document_page_loads(client, owner, document):
    client.force_login(owner)
    page = client.get(document.get_absolute_url()).content.decode()
    loaded = set(re.findall(r'(?:href|src)="(/static/[^"]+)"', page))

    # ... and the chunks the bundle imports as it loads, without which it does not start.
    chunks = {"/static/" + name for name in offline_views.bundle_imports()}
    assert chunks, "the committed bundle is split: editor.js imports chunks as it loads"
    assert set(worker_config(client.get("/sw.js"))["assets"]) == loaded | chunks
    assert 'data-service-worker="/sw.js"' in page


@pytest.mark.django_db
def test_the_document_page_allows_the_worker(client, owner, document):
    client.force_login(owner)
    policy = client.get(document.get_absolute_url())["Content-Security-Policy"]

    assert "worker-src 'self'" in policy.split("; ")


def test_its_version_follows_the_contents_of_the_assets(client, tmp_path, monkeypatch):
    files = {name: tmp_path / name.replace("/", "_") for name in offline_views.PAGE_ASSETS}
    for path in files.values():
        path.write_text("one")
    monkeypatch.setattr(offline_views.finders, "find", lambda name: str(files[name]))
    first = worker_config(client.get("/sw.js"))["version"]
    assert worker_config(client.get("/sw.js"))["version"] == first

    files["editor/editor.js"].write_text("two")
    second = worker_config(client.get("/sw.js"))["version"]
    assert second != first

    # The same contents again, written later: the same version (every host agrees).
    files["editor/editor.js"].write_text("one")
    stat = files["editor/editor.js"].stat()
    os.utime(files["editor/editor.js"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert worker_config(client.get("/sw.js"))["version"] == first
