"""Each serving process's census in Redis (editor/realtime/census.py), on the session's Redis.

Keys are under the test's own PRESENCE_PREFIX (tests/conftest.py), so other tests' processes
never show up here. The admin page that shows them is tested in tests/test_admin.py, and a real
daphne process's own census in tests/realtime/test_live_metrics.py.
"""

import asyncio
import time
from types import SimpleNamespace

import pytest
import pytest_asyncio
from asgiref.sync import sync_to_async

from editor import metrics
from editor.realtime import census
from editor.realtime.census import ProcessCensus
from editor.realtime.connection import sockets
from editor.realtime.presence import async_client, redis_hosts
from tests.test_healthz import closed_port

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]


@pytest_asyncio.fixture
async def redis_client():
    client = async_client(redis_hosts()[0])
    yield client
    await client.aclose()


async def test_it_reads_back_every_process_by_name(redis_client):
    b = ProcessCensus(name="host-b:8002", pid=22, sockets=5, rooms=1, at=time.time())
    a = ProcessCensus(name="host-a:8001", pid=11, sockets=3, rooms=2, at=time.time())
    await census.write(redis_client, b)
    await census.write(redis_client, a)

    assert await sync_to_async(census.read_all)() == [a, b]


async def test_it_keeps_only_the_latest_figures_of_a_process(redis_client):
    await census.write(redis_client, ProcessCensus("host-a:8001", 11, 3, 2, time.time()))
    latest = ProcessCensus("host-a:8001", 11, 4, 1, time.time())
    await census.write(redis_client, latest)

    assert await sync_to_async(census.read_all)() == [latest]


async def test_it_forgets_a_process_that_stopped_writing(redis_client):
    await census.write(redis_client, ProcessCensus("gone:8003", 33, 7, 1, time.time()), ttl=1)
    live = ProcessCensus("here:8004", 44, 1, 1, time.time())
    await census.write(redis_client, live)

    await asyncio.sleep(2.1)

    assert await sync_to_async(census.read_all)() == [live]


async def test_it_reports_this_processs_sockets_and_rooms(peer_for, document, owner):
    peer = peer_for(owner, document.pk, query="")
    assert await peer.connect()
    await peer.handshake()
    task = asyncio.ensure_future(census.report_forever(interval=0.05))
    try:
        for _ in range(100):
            found = await sync_to_async(census.read_all)()
            if found:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
    (mine,) = found
    assert mine.name == census.process_name()
    assert mine.sockets == sockets.total >= 1
    assert mine.rooms >= 1  # this loop's rooms: the document's is loaded
    await peer.close()


async def test_it_counts_a_census_that_redis_refused(monkeypatch):
    unreachable = async_client(f"redis://127.0.0.1:{closed_port()}/0")
    monkeypatch.setattr(census, "get_presence", lambda: SimpleNamespace(redis=unreachable))
    before = metrics.REDIS["census"]._value.get()

    task = asyncio.ensure_future(census.report_forever(interval=0.05))
    await asyncio.sleep(0.5)
    task.cancel()
    await unreachable.aclose()

    assert metrics.REDIS["census"]._value.get() > before
