"""nginx (`manage.py nginx_conf`'s configuration) in front of three `manage.py serve` processes.

Document affinity, round-robin HTTP, live REST writes across processes, the headers the
processes trust, the request-body limit, static files and /metrics, all through a real nginx
(tests/deploy/cluster.py). The processes and nginx run once for the module; each test makes its
own documents.
"""

import asyncio
import collections
import gzip
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from asgiref.sync import async_to_sync
from rest_framework.authtoken.models import Token

from editor.models import Document, Membership, Role
from tests import live
from tests.deploy.cluster import UNVERIFIED, Backends, Nginx, Peer, until

pytestmark = pytest.mark.django_db(transaction=True)

# Small, so that a body at the API's own bound is quick to send (nginx's limit follows it).
MAX_CONTENT_BYTES = 64 * 1024


@pytest.fixture(scope="module")
def cluster(django_db_setup, tmp_path_factory):
    backends = Backends(
        3, tmp_path_factory.mktemp("deploy-routing"), MAX_CONTENT_BYTES=MAX_CONTENT_BYTES
    )
    with backends, Nginx(backends, static=True) as nginx:
        yield backends, nginx


@pytest.fixture(autouse=True)
def around_each_test(transactional_db, cluster):
    backends, nginx = cluster
    yield
    live.wait_quiet_database()
    print(backends.log_tails(lines=30))
    print(nginx.logs())


def request(url: str, method: str = "GET", body: bytes | None = None, headers=None):
    """(status, headers, body) of one request, errors included."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20, context=UNVERIFIED) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read()


def upstreams(nginx: Nginx, path: str, at_least: int = 1, status: int | None = None) -> list[str]:
    """The backend of each logged request for ``path`` ("-" when nginx answered itself), of
    those answered with ``status`` when given.

    nginx logs a request just after answering it: waits (briefly) for ``at_least`` lines. Its
    workers write their own lines, so two requests on two connections may be logged in either
    order."""
    deadline = time.monotonic() + 5
    while True:
        found = [
            re.search(r"upstream=(\S+)", line).group(1)
            for line in nginx.access_log()
            if (f" {path} " in line or f" {path}?" in line)
            and (status is None or f'" {status} ' in line)
        ]
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def test_it_sends_every_socket_of_a_document_to_one_backend_and_spreads_documents(
    cluster, owner, editor_user
):
    backends, nginx = cluster
    documents = [Document.objects.create_for(owner, f"doc {n}") for n in range(30)]
    for document in documents:
        Membership.objects.create(document=document, user=editor_user, role=Role.EDITOR)

    async def open_all():
        peers = []
        for document in documents:
            # Different tickets (users), with and without a trailing slash: one key.
            for user, slash in ((owner, ""), (editor_user, "/")):
                ticket = live.ticket_for(user, document)
                peer = Peer(
                    user.username, lambda d=document, t=ticket, s=slash: nginx.ws(d.pk, t, s)
                )
                peer.start()
                peers.append(peer)
        await until(lambda: all(p.synced.is_set() for p in peers), 30, "all sockets synced")
        for peer in peers:
            await peer.stop()

    async_to_sync(open_all)()

    homes = collections.Counter()
    for document in documents:
        opened = backends.opened(document.pk)
        assert sorted(opened) == [0, 0, 2], f"document {document.pk}: sockets per backend {opened}"
        homes[opened.index(2)] += 1
    assert set(homes) == {0, 1, 2}, f"documents per backend: {dict(homes)}"


def test_it_spreads_http_requests_round_robin(cluster):
    backends, nginx = cluster
    for _ in range(6):
        status, _, _ = request(nginx.http() + "/healthz")
        assert status == 200
    used = collections.Counter(upstreams(nginx, "/healthz", 6)[-6:])
    assert set(used) == {backends.address(i) for i in range(3)}, dict(used)


def test_a_rest_put_through_nginx_reaches_a_socket_on_another_backend(cluster, owner):
    backends, nginx = cluster
    document = Document.objects.create_for(owner, "Minutes")
    token = Token.objects.create(user=owner).key
    path = f"/api/documents/{document.pk}/content/"

    async def scenario():
        peer = Peer("reader", lambda: nginx.ws(document.pk, live.ticket_for(owner, document)))
        peer.start()
        await until(peer.synced.is_set, 15, "reader synced")
        home = backends.address(backends.opened(document.pk).index(1))
        # Round-robin: within a few PUTs one is served by a process the socket is not on.
        for attempt in range(9):
            text = f"# Minutes\n\nwritten over REST, attempt {attempt}\n"
            status, _, body = await asyncio.to_thread(
                request,
                nginx.http() + path,
                "PUT",
                json.dumps({"text": text}).encode(),
                {"Authorization": f"Token {token}", "Content-Type": "application/json"},
            )
            assert status == 200, body
            await until(lambda t=text: str(peer) == t, 10, f"PUT {attempt} reached the socket")
            served_by = (await asyncio.to_thread(upstreams, nginx, path, attempt + 1))[-1]
            if served_by != home:
                break
        else:
            raise AssertionError(f"every PUT was served by {home}, the socket's own backend")
        await peer.stop()
        return home, served_by

    home, served_by = async_to_sync(scenario)()
    assert home != served_by


def test_the_processes_see_the_client_and_scheme_nginx_saw_not_what_the_client_claims(
    cluster, owner
):
    backends, nginx = cluster
    for n in range(21):  # one more than a page, so the answer carries an absolute next link
        Document.objects.create_for(owner, f"doc {n}")
    token = Token.objects.create(user=owner).key
    spoofed = {"X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}

    status, _, body = request(
        nginx.http() + "/api/documents/", headers={"Authorization": f"Token {token}", **spoofed}
    )
    assert status == 200, body
    # Host with its port ($http_host) and nginx's own scheme reached Django.
    assert json.loads(body)["next"] == f"{nginx.http()}/api/documents/?page=2"

    # Directly (no nginx), the same headers are trusted: that is why nginx must overwrite them.
    direct = backends.http(0)
    status, _, body = request(
        direct + "/api/documents/", headers={"Authorization": f"Token {token}", **spoofed}
    )
    assert json.loads(body)["next"].startswith("https://")

    document = Document.objects.first()

    async def open_socket():
        async with live_socket(nginx.ws(document.pk, live.ticket_for(owner, document)), spoofed):
            pass

    async_to_sync(open_socket)()
    line = next(
        line
        for index in range(backends.count)
        for line in backends.log(index).splitlines()
        if f"ws open user=olive document={document.pk}" in line
    )
    # daphne took the address from X-Forwarded-For (port 0): nginx's peer, not 203.0.113.9.
    assert line.endswith("client=127.0.0.1:0"), line


class live_socket:
    def __init__(self, url: str, headers: dict) -> None:
        self.url, self.headers = url, headers

    async def __aenter__(self):
        import websockets

        self.ws = await websockets.connect(self.url, additional_headers=self.headers)
        await asyncio.wait_for(self.ws.recv(), 10)  # sync step 1: the socket is open
        return self.ws

    async def __aexit__(self, *exc):
        await self.ws.close()


def test_it_admits_a_body_at_the_apis_bound_and_refuses_a_larger_one_itself(cluster, owner):
    backends, nginx = cluster
    document = Document.objects.create_for(owner, "Big")
    token = Token.objects.create(user=owner).key
    url = nginx.http() + f"/api/documents/{document.pk}/content/"
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    # The worst case of JSON escaping: every byte of the largest text becomes six.
    text = "\x01" * MAX_CONTENT_BYTES
    body = json.dumps({"text": text}).encode()
    bound = 6 * MAX_CONTENT_BYTES + 1024
    assert 6 * MAX_CONTENT_BYTES < len(body) <= bound

    status, _, answer = request(url, "PUT", body, headers)
    assert status == 200, answer[:300]
    assert json.loads(answer)["text"] == text

    status, response_headers, answer = request(url, "PUT", b" " * (bound + 1), headers)
    assert status == 413
    assert response_headers["Server"] == "nginx", "refused by the backend, not by nginx"
    assert upstreams(nginx, f"/api/documents/{document.pk}/content/", status=413) == ["-"]


def test_it_serves_collected_static_files_itself_compressed(cluster):
    backends, nginx = cluster
    status, headers, body = request(
        nginx.http() + "/static/editor/editor.js", headers={"Accept-Encoding": "gzip"}
    )
    assert status == 200
    assert headers["Content-Type"] == "application/javascript"
    assert headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(body) == (live.ROOT / "static/editor/editor.js").read_bytes()
    assert upstreams(nginx, "/static/editor/editor.js")[-1] == "-"  # no backend involved


def test_it_compresses_api_answers(cluster, owner):
    backends, nginx = cluster
    for n in range(10):
        Document.objects.create_for(owner, f"a document with a fairly long title, number {n}")
    token = Token.objects.create(user=owner).key
    status, headers, body = request(
        nginx.http() + "/api/documents/",
        headers={"Authorization": f"Token {token}", "Accept-Encoding": "gzip"},
    )
    assert status == 200
    assert headers["Content-Encoding"] == "gzip"
    assert len(json.loads(gzip.decompress(body))["results"]) == 10


def test_metrics_are_not_reachable_through_nginx(cluster):
    backends, nginx = cluster
    status, _, _ = request(nginx.http() + "/metrics")
    assert status == 403
    assert upstreams(nginx, "/metrics")[-1] == "-"


def test_nginx_keeps_its_files_under_its_prefix(cluster):
    backends, nginx = cluster
    for name in ("nginx.pid", "access.log", "client_body_temp", "proxy_temp"):
        assert (nginx.prefix / name).exists(), name
    assert (nginx.prefix / "nginx.pid").read_text().strip() == str(nginx.process.pid)


def test_the_images_health_check_passes_on_a_live_process_and_fails_otherwise(cluster):
    backends, nginx = cluster

    def healthcheck(url: str) -> int:
        env = {**os.environ, "COLLAB_HEALTHCHECK_URL": url}
        script = live.ROOT / "docker" / "healthcheck.py"
        return subprocess.run([sys.executable, script], env=env, timeout=30).returncode

    assert healthcheck(backends.http(1) + "/healthz") == 0
    assert healthcheck(nginx.http() + "/metrics") == 1  # an error status
    assert healthcheck(f"http://127.0.0.1:{live.free_port()}/healthz") == 1  # nobody there


def test_with_tls_the_processes_see_https_and_sockets_work(cluster, owner):
    backends, _ = cluster
    for n in range(21):
        Document.objects.create_for(owner, f"doc {n}")
    token = Token.objects.create(user=owner).key
    document = Document.objects.first()

    with Nginx(backends, tls=True) as nginx:
        status, _, body = request(
            nginx.http() + "/api/documents/", headers={"Authorization": f"Token {token}"}
        )
        assert status == 200, body
        assert json.loads(body)["next"] == f"{nginx.http()}/api/documents/?page=2"
        assert nginx.http().startswith("https://")

        async def sync_over_wss():
            import websockets

            url = nginx.ws(document.pk, live.ticket_for(owner, document))
            async with websockets.connect(url, ssl=UNVERIFIED) as ws:
                first = await asyncio.wait_for(ws.recv(), 10)
                assert first[:2] == b"\x00\x00"  # the server's sync step 1

        async_to_sync(sync_over_wss)()
