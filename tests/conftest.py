"""Shared fixtures: one document and the four kinds of people who may knock on it."""

import asyncio
import collections
import contextlib
import fcntl
import os
import sys
import threading
import uuid

import pytest
import pytest_asyncio
from django.contrib.auth import get_user_model

from editor.models import Document, Membership, Role

PASSWORD = "correct horse battery staple"


def pytest_collection_modifyitems(items):
    """Gives each API operation's fuzz test (tests/api/test_fuzz.py) an id of its own. Under
    pytest 9 schemathesis's items all get their function's bare id (pytest builds it from the
    original name and the parametrization, and schemathesis passes neither the operation), and
    pytest-xdist, which hands tests to its workers by id, then runs one of them and drops the
    rest without a word."""
    for item in items:
        label = getattr(item, "operation_label", None)
        node_id = getattr(item, "_id", None)  # pytest 9's structured id; pytest 8 names it whole
        if label and node_id is not None and node_id.params is None:
            item._id = node_id.with_params(label)


def pytest_collection_finish(session):
    """Refuses to run two tests under one id (see above: a worker would run one of them).
    When the container tests are to run, their slowest set-up on a fresh machine (podman's
    packages, the debootstrap base) starts now, beside the tests before them."""
    ids = collections.Counter(item.nodeid for item in session.items)
    if twice := sorted(node_id for node_id, count in ids.items() if count > 1):
        raise pytest.UsageError(f"tests collected twice under one id: {', '.join(twice[:5])}")
    if session.config.option.collectonly:
        return
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return  # the first worker starts it; the steps take a lock, wherever the tests run
    if any(item.nodeid.startswith("tests/deploy/test_container.py") for item in session.items):
        from tests.deploy import podman

        podman.prepare_in_background()


@pytest.fixture(autouse=True)
def _turns(request, tmp_path_factory):
    """Under pytest-xdist (``make test`` runs two workers), a test marked ``alone`` runs while no
    other worker runs one: every other test holds a shared lock on a file of this run's, an
    ``alone`` test holds it exclusively. Each first passes through a second lock, the
    turnstile, so that a waiting ``alone`` test is not starved by the other worker's next
    tests. For tests whose assertion is about how their own thread spent the machine's time
    (a stall's share of kernel time), which another worker's load would change."""
    worker = getattr(request.config, "workerinput", None)
    if worker is None:
        yield
        return
    # The run's temporary folder, above each worker's own (popen-gw0, ...): pytest keeps the
    # last few runs' and deletes older ones.
    run = tmp_path_factory.getbasetemp().parent
    alone = request.node.get_closest_marker("alone") is not None
    with (run / "turnstile.lock").open("a") as turnstile, (run / "tests.lock").open("a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if alone else fcntl.LOCK_SH)
        finally:
            if not alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            if alone:
                fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # PBKDF2 at full strength costs ~0.3 s a user on these machines; tests need no strength.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def no_automatic_versions(settings):
    # A version taken when a test's last socket leaves would be written while the test's tables
    # are emptied; tests of automatic versions turn them on (tests/test_autoversions.py).
    settings.COLLAB = {**settings.COLLAB, "AUTO_VERSION_QUIET": 0}


@pytest.fixture(autouse=True)
def private_presence_keys(settings):
    # Presence keys are global in Redis (one sorted set of deadlines); a prefix per test keeps
    # one test's leftovers out of another's sweep.
    settings.PRESENCE_PREFIX = f"collab-test:{uuid.uuid4().hex[:12]}:presence"


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's; and before the test database is dropped, gives back the connections
    threads still hold: the pool closes the connections it has, not those threads keep, and
    PostgreSQL will not drop a database a session is connected to ("is being accessed by other
    users"). They are asgiref's one thread for ``sync_to_async`` (what async tests call the ORM
    through) and the socket check threads, whose trips give their connections back after each
    one except under Channels' test communicators (they make
    ``channels.db.close_old_connections`` a no-op while an application runs,
    channels/testing/application.py)."""
    yield
    from asgiref.sync import SyncToAsync
    from django.db import connections

    from editor.realtime import auth

    with django_db_blocker.unblock():
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)
        # One call on each check thread: each waits at the barrier until all have started.
        threads = auth._checks._max_workers
        started = threading.Barrier(threads)

        def close_this_threads() -> None:
            started.wait(timeout=30)
            connections.close_all()

        for done in [auth._checks.submit(close_this_threads) for _ in range(threads)]:
            done.result(timeout=60)


@pytest.fixture(autouse=True)
def closed_loop_databases():
    """Closes the connections event loops opened for their socket checks (ticket and cookie
    sockets are checked on the loop, editor/realtime/auth.py), so none outlives its test:
    PostgreSQL will not drop the test database while a session is connected to it."""
    yield
    from editor.realtime import auth

    auth.close_loop_databases()


@pytest.fixture(autouse=True)
def settled_writes(request):
    """In async tests, waits for queued updates to be written before the database is emptied:
    an INSERT still running while pytest-django truncates the tables can deadlock PostgreSQL.
    (Only there: sync tests may run Playwright's event loop in this thread.)"""
    if request.node.get_closest_marker("asyncio"):
        request.getfixturevalue("_flush_writer_at_teardown")


@pytest_asyncio.fixture
async def _flush_writer_at_teardown():
    yield
    from editor.autoversions import get_autoversions
    from editor.realtime import store

    await store.get_writer().flush()
    await get_autoversions().drain()  # a last socket's leaving may be writing a version
    await _close_rooms_and_layer()
    _report_tasks_that_outlive_teardown()


def _report_tasks_that_outlive_teardown(after: float = 20) -> None:
    """If the loop's teardown (which cancels every task and waits for them) still runs after
    `after` seconds, prints the stack of each task it waits for, so a hang names its cause."""
    loop = asyncio.get_running_loop()

    def report() -> None:
        heading = f"--- tasks still pending {after:.0f} s into the loop's teardown ---"
        print("\n" + heading, file=sys.__stderr__)
        for task in asyncio.all_tasks(loop):
            task.print_stack(file=sys.__stderr__)

    loop.call_later(after, report)


async def _close_rooms_and_layer() -> None:
    """Closes this loop's rooms and its channel-layer connections while the loop still runs.
    Left to the loop's teardown, which cancels every task at once, a room's subscription
    could be unsubscribing through a Redis reader that was already cancelled, and the
    teardown waited for it for ever (a test hung at teardown, now and then)."""
    from channels.layers import get_channel_layer

    from editor.realtime.room import get_rooms

    rooms = get_rooms()
    for room in list(rooms._rooms.values()):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(room.close(), 5)
    for task in (rooms._catchup, rooms._sweeper, rooms._outage):
        if task is not None:
            task.cancel()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(get_channel_layer().flush(), 5)


@pytest.fixture
def start_servers(transactional_db, tmp_path):
    """start_servers(count, **env) -> LiveServers: real `manage.py serve` processes (tests/live.py)
    on the test database; all stopped (and their logs printed, which pytest shows for a failed
    test) at the end, before the test database is emptied."""
    from tests import live

    started: list[live.LiveServers] = []

    def start(count: int, **env: object) -> live.LiveServers:
        servers = live.LiveServers(count, tmp_path / f"servers-{len(started)}", **env)
        started.append(servers)
        return servers.start()

    yield start
    for servers in started:
        servers.stop()
        print(servers.log_tails(lines=80))


def make_user(username: str, **extra):
    return get_user_model().objects.create_user(username=username, password=PASSWORD, **extra)


@pytest.fixture
def owner(db):
    return make_user("olive")


@pytest.fixture
def editor_user(db):
    return make_user("eddie")


@pytest.fixture
def viewer(db):
    return make_user("vera")


@pytest.fixture
def stranger(db):
    return make_user("sam")


@pytest.fixture
def document(owner, editor_user, viewer):
    document = Document.objects.create_for(owner, "Meeting notes")
    Membership.objects.create(document=document, user=editor_user, role=Role.EDITOR)
    Membership.objects.create(document=document, user=viewer, role=Role.VIEWER)
    return document


@pytest.fixture
def people(owner, editor_user, viewer, stranger):
    """Maps a role name used in parametrised tests to the user who has it."""
    return {"owner": owner, "editor": editor_user, "viewer": viewer, "stranger": stranger}


@pytest.fixture
def login_as(client, people):
    """Logs the test client in as the person with the given role; "anonymous" logs nobody in."""

    def login(who: str):
        if who != "anonymous":
            client.force_login(people[who])
        return client

    return login


@pytest.fixture
def node():
    """Runs stock y-websocket clients in Node (tests/interop); installs them on first use."""
    from tests import live

    live.ensure_node_modules()
    clients = live.NodeClients()
    yield clients
    clients.close()


@pytest.fixture
def unchecked(monkeypatch):
    """collab/transport.py's tunings are checked afresh in this test, as in a new process; what
    it found (against libraries the test may have broken) is forgotten after it."""
    from collab import transport

    monkeypatch.setattr(transport, "_checked", {})
