"""The origin check of cookie sockets (editor/realtime/auth.py, ``origin_allowed``): the Origin
must be one of our own origins, scheme, host and port alike."""

import pytest

from editor.realtime import auth
from editor.realtime.auth import origin_allowed


def scope(origin=None, host="localhost:8000", **headers):
    pairs = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    if origin is not None:
        pairs.append((b"origin", origin.encode()))
    if host is not None:
        pairs.append((b"host", host.encode()))
    return {"type": "websocket", "headers": pairs}


@pytest.mark.parametrize(
    ("origin", "host"),
    [
        ("http://localhost:8000", "localhost:8000"),
        ("http://LOCALHOST:8000", "localhost:8000"),
        ("http://localhost", "localhost"),
        ("http://localhost:80", "localhost"),
        ("http://127.0.0.1:9000", "127.0.0.1:9000"),
        ("http://[::1]:8000", "[::1]:8000"),
    ],
)
def test_it_allows_the_pages_own_origin(origin, host):
    assert origin_allowed(scope(origin, host))


@pytest.mark.parametrize(
    ("origin", "why"),
    [
        ("http://localhost:9999", "another port on the same host: another application"),
        ("http://localhost", "the default port is not 8000"),
        ("https://localhost:8000", "another scheme"),
        ("http://127.0.0.1:8000", "another host name"),
        ("http://evil.example:8000", "a foreign host"),
        ("null", "a sandboxed or file: page"),
        ("http://localhost:8000/path", "not an origin"),
        ("http://user@localhost:8000", "not an origin"),
        ("ftp://localhost:8000", "not http(s)"),
        ("http://localhost:notaport", "malformed"),
        ("", "empty"),
    ],
)
def test_it_refuses_any_other_origin(origin, why):
    assert not origin_allowed(scope(origin, "localhost:8000")), why


def test_it_refuses_a_socket_without_origin():
    assert not origin_allowed(scope(None))


def test_it_refuses_when_the_host_is_not_one_we_serve(settings):
    # DNS rebinding: a foreign name pointed at our address makes Host and Origin agree.
    settings.ALLOWED_HOSTS = ["docs.example.com"]

    assert not origin_allowed(scope("http://rebound.example:8000", "rebound.example:8000"))
    assert origin_allowed(scope("http://docs.example.com:8000", "docs.example.com:8000"))


def test_it_refuses_when_there_is_no_host_header():
    assert not origin_allowed(scope("http://localhost:8000", host=None))


def test_it_takes_https_from_the_proxy_header_behind_nginx():
    behind_tls = scope("https://localhost", "localhost", x_forwarded_proto="https")
    plain_page_to_tls = scope("http://localhost", "localhost", x_forwarded_proto="https")
    tls_page_plain_proxy = scope("https://localhost", "localhost", x_forwarded_proto="http")

    assert origin_allowed(behind_tls)
    assert not origin_allowed(plain_page_to_tls)
    assert not origin_allowed(tls_page_plain_proxy)


def test_it_keeps_the_port_nginx_passes_on_in_the_host_header():
    # nginx's "proxy_set_header Host $http_host" (editor/deploy/): the port the browser used.
    assert origin_allowed(
        scope("http://localhost:8080", "localhost:8080", x_forwarded_for="1.2.3.4")
    )
    assert not origin_allowed(
        scope("http://localhost:8080", "localhost", x_forwarded_for="1.2.3.4")
    )


def test_it_allows_csrf_trusted_origins_exactly(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://docs.example.com", "http://localhost:3000"]

    assert origin_allowed(scope("https://docs.example.com", "internal:8000"))
    assert origin_allowed(scope("https://docs.example.com:443", "internal:8000"))
    assert origin_allowed(scope("http://localhost:3000", "internal:8000"))
    assert not origin_allowed(scope("http://docs.example.com", "internal:8000"))
    assert not origin_allowed(scope("https://docs.example.com:8443", "internal:8000"))
    assert not origin_allowed(scope("https://other.example.com", "internal:8000"))


def test_it_reads_wildcards_in_csrf_trusted_origins_as_django_does(settings):
    settings.CSRF_TRUSTED_ORIGINS = ["https://*.example.com"]

    assert origin_allowed(scope("https://docs.example.com", "internal:8000"))
    assert origin_allowed(scope("https://a.b.example.com", "internal:8000"))
    assert not origin_allowed(scope("https://example.com.evil.test", "internal:8000"))
    assert not origin_allowed(scope("https://notexample.com", "internal:8000"))
    assert not origin_allowed(scope("http://docs.example.com", "internal:8000"))


def test_a_changed_setting_is_read_afresh_after_an_answer(settings):
    # The answers are remembered for each site's few Origin and Host values (change 46):
    # the settings they came from are part of what they are remembered by.
    page = scope("https://docs.example.com", "internal:8000")
    settings.CSRF_TRUSTED_ORIGINS = ["https://docs.example.com"]
    assert origin_allowed(page)

    settings.CSRF_TRUSTED_ORIGINS = []
    assert not origin_allowed(page)

    own = scope("http://docs.example.com:8000", "docs.example.com:8000")
    settings.ALLOWED_HOSTS = ["docs.example.com"]
    assert origin_allowed(own)
    settings.ALLOWED_HOSTS = ["other.example.com"]
    assert not origin_allowed(own)

    settings.ALLOWED_HOSTS = ["localhost"]
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    behind_tls = scope("https://localhost", "localhost", x_forwarded_proto="https")
    assert origin_allowed(behind_tls)
    settings.SECURE_PROXY_SSL_HEADER = None
    assert not origin_allowed(behind_tls)


def test_made_up_origins_cannot_grow_what_is_remembered():
    for n in range(2_000):
        assert not origin_allowed(scope(f"http://made-up-{n}.example", "localhost:8000"))

    assert auth._origin_is_ours.cache_info().currsize <= 512
    assert origin_allowed(scope("http://localhost:8000", "localhost:8000"))
