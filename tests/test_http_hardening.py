"""HTTP hardening: a Content-Security-Policy on every page and nothing inline that it would
block, deep JSON refused with 400 on every endpoint that reads JSON, and a production
configuration that `manage.py check --deploy` finds nothing to say about."""

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from django.urls import reverse

from editor.models import Version

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION_KEY = "p" * 20 + "-a-production-key-long-enough-for-django-0123456789"


class InlineCode(HTMLParser):
    """Collects what a strict CSP refuses to run or apply: inline scripts (a JSON data block is
    not run), event handler attributes, style attributes and <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = dict(attrs)
        if tag == "script" and "src" not in names and names.get("type") != "application/json":
            self.found.append(f"<script> without src at {self.getpos()}")
        if tag == "style":
            self.found.append(f"<style> at {self.getpos()}")
        for name, _ in attrs:
            if name.startswith("on") or name == "style":
                self.found.append(f"{name}= on <{tag}> at {self.getpos()}")


def inline_code(html: str) -> list[str]:
    parser = InlineCode()
    parser.feed(html)
    return parser.found


@pytest.fixture
def staff_owner(owner):
    owner.is_staff = owner.is_superuser = True
    owner.save()
    return owner


def pages(document):
    """Every kind of page, as (logged in?, URL)."""
    return {
        "home": (False, "/"),
        "login": (False, reverse("login")),
        "signup": (False, reverse("signup")),
        "list": (True, reverse("document-list")),
        "editor": (True, document.get_absolute_url()),
        "share": (True, reverse("document-share", args=[document.id])),
        "delete": (True, reverse("document-delete", args=[document.id])),
        "password": (True, reverse("password_change")),
        "need access": (True, "/documents/00000000-0000-0000-0000-000000000000/"),
        "not found": (True, "/no-such-page/"),
        "admin": (True, reverse("admin:index")),
        "admin list": (True, reverse("admin:editor_document_changelist")),
        "admin change": (True, reverse("admin:editor_document_change", args=[document.id])),
        "admin user": (True, reverse("admin:auth_user_change", args=[document.owner_id])),
        "admin who": (True, reverse("admin:editor_document_editing_now")),
        "api docs": (True, reverse("api-docs")),
    }


def directives(response) -> dict[str, list[str]]:
    policy = response.headers.get("Content-Security-Policy", "")
    parts = [part.split() for part in policy.split(";") if part.strip()]
    return {part[0]: part[1:] for part in parts}


def assert_strict(response, name: str) -> None:
    policy = directives(response)
    # The editor's page alone allows inline styles: CodeMirror writes a <style> element.
    styles = ["'self'", "'unsafe-inline'"] if name == "editor" else ["'self'"]
    assert policy.get("default-src") == ["'self'"], name
    assert policy.get("script-src") == ["'self'"], name
    assert policy.get("style-src") == styles, name
    assert policy.get("object-src") == ["'none'"], name
    assert policy.get("frame-ancestors") == ["'none'"], name
    assert inline_code(response.content.decode()) == [], name


def test_it_sends_a_strict_policy_and_nothing_inline_on_every_page(client, staff_owner, document):
    for name, (logged_in, url) in pages(document).items():
        if logged_in:
            client.force_login(staff_owner)
        else:
            client.logout()
        response = client.get(url)

        expected = {"not found": 404, "need access": 403}.get(name, 200)
        assert response.status_code == expected, name
        assert_strict(response, name)


def test_it_sends_the_policy_with_the_server_error_page(client, db, monkeypatch):
    from editor import views

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "render", broken)
    client.raise_request_exception = False
    response = client.get("/")

    assert response.status_code == 500
    assert_strict(response, "500")


def test_it_serves_swagger_uis_set_up_script_as_a_file(client, owner):
    client.force_login(owner)
    page = client.get(reverse("api-docs")).content.decode()
    script = client.get(reverse("api-docs") + "?script")

    assert 'src="/api/docs/?script"' in page or "?script" in page
    assert script.status_code == 200
    assert "SwaggerUIBundle" in script.content.decode()


DEEP = "[" * 100_000
NESTED = '{"title": ' + "[" * 40 + "]" * 40 + "}"


@pytest.fixture
def json_endpoints(document, owner):
    member = document.memberships.exclude(user=owner).first()
    doc = f"/api/documents/{document.id}"
    return [
        ("post", reverse("api-token")),
        ("post", "/api/documents/"),
        ("patch", f"{doc}/"),
        ("post", f"{doc}/members/"),
        ("patch", f"{doc}/members/{member.id}/"),
        ("put", f"{doc}/content/"),
        ("patch", f"{doc}/content/"),
        ("post", f"{doc}/versions/"),
    ]


@pytest.mark.parametrize("body", [DEEP, NESTED], ids=["100000 deep", "40 deep"])
def test_it_refuses_deep_json_with_400_everywhere(client, owner, json_endpoints, body):
    client.force_login(owner)
    for method, url in json_endpoints:
        if url == reverse("api-token"):
            client.logout()
        response = getattr(client, method)(url, body, content_type="application/json")
        client.force_login(owner)

        assert response.status_code == 400, (method, url, response.status_code)
        assert "nested deeper than" in response.json()["detail"], (method, url)
    assert not Version.objects.exists()


def test_it_still_reads_ordinary_json(client, owner, document):
    client.force_login(owner)
    response = client.put(
        reverse("api-content", args=[document.id]),
        {"text": "[[[[ not nesting, text ]]]]"},
        content_type="application/json",
    )

    assert response.status_code == 200


def run_check_deploy(tmp_path, **env):
    names = {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "SECURE_COOKIES", "SECURE_SSL_REDIRECT"}
    names |= {"SECURE_HSTS_SECONDS", "CSRF_TRUSTED_ORIGINS"}
    clean = {k: v for k, v in os.environ.items() if k not in names}
    clean.update(COLLAB_VAR_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="collab.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=clean,
        capture_output=True,
        text=True,
    )


PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": PRODUCTION_KEY,
    "ALLOWED_HOSTS": "docs.example.com",
    "SECURE_COOKIES": "true",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
}


def test_check_deploy_is_clean_under_production_settings(tmp_path):
    result = run_check_deploy(tmp_path, **PRODUCTION)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_check_deploy_names_what_is_missing_without_tls_settings(tmp_path):
    without_tls = {k: v for k, v in PRODUCTION.items() if not k.startswith("SECURE_")}
    result = run_check_deploy(tmp_path, **without_tls)

    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in result.stderr + result.stdout


def test_it_redirects_to_https_but_not_the_health_check(client, db, settings):
    settings.SECURE_SSL_REDIRECT = True

    assert client.get(reverse("login")).status_code == 301
    assert client.get("/healthz").status_code == 200
    assert client.get(reverse("login"), HTTP_X_FORWARDED_PROTO="https").status_code == 200
