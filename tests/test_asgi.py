"""collab/asgi.py as daphne loads it: in a fresh interpreter, since what it sets up is
process-wide (Twisted's write path, autobahn's protocol class, the garbage collector)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.test_serve import run_python

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import gc, json
import collab.asgi
from collab import transport
from daphne.ws_protocol import WebSocketProtocol
from collab import turns
print(json.dumps({
    "turn_budget": turns.budget(),
    "eager_writes": transport.installed(),
    "shared_options": getattr(WebSocketProtocol._connectionMade, "shares_options", False),
    "frozen": gc.get_freeze_count(),
    "thresholds": gc.get_threshold(),
}))
"""


def load_asgi(**env) -> dict:
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "collab.settings", **env}
    return json.loads(run_python(PROBE, environment).strip().splitlines()[-1])


def test_loading_the_application_tunes_the_server_by_default():
    loaded = load_asgi()

    assert loaded["eager_writes"] is True
    assert loaded["shared_options"] is True
    # Django's modules, models and URL conf are out of the collector's generations.
    assert loaded["frozen"] > 10_000
    # Fewer, larger young collections; every other one takes the middle generation too
    # (GC_THRESHOLDS).
    assert loaded["thresholds"] == [5_000, 0, 460]
    # A turn of the event loop calls ready sockets back for 10 ms at most (collab/turns.py).
    assert loaded["turn_budget"] == 0.01


def test_each_tuning_can_be_turned_off():
    loaded = load_asgi(
        WS_EAGER_WRITES="0",
        WS_SHARED_PROTOCOL_OPTIONS="0",
        GC_FREEZE="0",
        GC_THRESHOLDS="python",
        WS_TURN_BUDGET_MS="0",
    )

    assert loaded == {
        "turn_budget": None,
        "eager_writes": False,
        "shared_options": False,
        "frozen": 0,
        "thresholds": [700, 10, 10],
    }


def test_the_collectors_thresholds_can_be_set_and_nonsense_is_refused():
    assert load_asgi(GC_THRESHOLDS="5000, 15, 12")["thresholds"] == [5000, 15, 12]
    # 0 is a threshold for the older generations (collected with every other younger one)...
    assert load_asgi(GC_THRESHOLDS="20000,0,0")["thresholds"] == [20000, 0, 0]

    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "collab.settings"}
    for nonsense in ("20000,0", "0,10,10", "20000,-1,10", "many,10,10"):
        # ... but not for the young one, where it would turn the collector off.
        result = subprocess.run(
            [sys.executable, "-c", PROBE],
            cwd=ROOT,
            env={**environment, "GC_THRESHOLDS": nonsense},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode != 0, nonsense
        assert "GC_THRESHOLDS must be three integers like 20000,20,10" in result.stderr


def test_the_turn_budget_can_be_set_and_a_negative_one_is_refused():
    assert load_asgi(WS_TURN_BUDGET_MS="25")["turn_budget"] == 0.025
    result = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=ROOT,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "collab.settings", "WS_TURN_BUDGET_MS": "-5"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "WS_TURN_BUDGET_MS must be 0 (no cap) or more milliseconds, not -5" in result.stderr


# The process's first HTTP request, served by the application as daphne serves it: which of the
# URL conf's modules it had to load, and whether the URL conf was loaded before the freeze.
FIRST_REQUEST = """
import asyncio, gc, json, sys
import collab.asgi
from asgiref.testing import ApplicationCommunicator
url_conf = sys.modules.get("collab.urls")
frozen = url_conf is not None and not any(o is vars(url_conf) for o in gc.get_objects())
loaded = set(sys.modules)
async def first_request():
    scope = {
        "type": "http", "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": "/no-such-page/", "raw_path": b"/no-such-page/", "query_string": b"",
        "root_path": "", "headers": [(b"host", b"127.0.0.1")],
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 40000),
    }
    application = ApplicationCommunicator(collab.asgi.application, scope)
    await application.send_input({"type": "http.request", "body": b""})
    start = await application.receive_output(30)
    while (await application.receive_output(30)).get("more_body"):
        pass
    return start["status"]
status = asyncio.run(first_request())
print(json.dumps({
    "status": status,
    "frozen": frozen,
    "loaded_by_request": sorted(set(sys.modules) - loaded),
}))
"""


def test_the_first_request_finds_the_url_conf_loaded_and_frozen():
    """Django loads the URL conf on the first request that resolves a path, on the event loop
    under daphne: with the REST API, its schema and the admin behind it, a stall of 170-290 ms
    for every socket of the process (change 83). Loaded with the application instead, before
    the collector's freeze, it costs no request anything, and full collections skip it."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "collab.settings"}
    first = json.loads(run_python(FIRST_REQUEST, environment).strip().splitlines()[-1])

    assert first["status"] == 404
    url_conf_modules = ("collab.urls", "editor.", "rest_framework", "drf_spectacular")
    assert [m for m in first["loaded_by_request"] if m.startswith(url_conf_modules)] == []
    assert first["frozen"] is True


# What a connect burst leaves with the collector: 8,000 sockets, each keeping 70 small
# containers alive (about what a socket keeps, docs/BENCHMARKS.md change 45) and dropping 200.
# Every collection's size (objects examined) is counted, by generation.
BURST = """
import gc, json
import collab.asgi
examined = {0: [], 1: [], 2: []}
def count(phase, info):
    if phase == "start":
        generation = info["generation"]
        examined[generation].append(sum(len(gc.get_objects(g)) for g in range(generation + 1)))
gc.callbacks.append(count)
sockets = []
for _ in range(8000):
    sockets.append([[n] for n in range(70)])
    garbage = [[n] for n in range(200)]
gc.callbacks.remove(count)
print(json.dumps({str(g): sizes for g, sizes in examined.items()}))
"""


def test_a_connect_burst_is_collected_in_small_pieces():
    """The pause of a collection grows with the objects it examines (0.6-0.9 µs each on a busy
    VM: 200 ms for the middle generation's 330,000 after 5,000 connects, change 45). A burst
    of connects is examined two young collections' worth at most at a time, and runs no full
    collection (every object the process holds) of its own."""
    environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "collab.settings"}
    examined = json.loads(run_python(BURST, environment).strip().splitlines()[-1])

    young, middle, full = examined["0"], examined["1"], examined["2"]
    # 570,000 objects kept, 5,000 a collection, every other one of the middle generation.
    assert len(young) >= 50
    assert len(middle) >= 50
    # Two young collections' worth at most (the young generation and the survivors of the one
    # before it); 10,000,1,230 examined about 30,000 in one, 20,000,20,10 437,000.
    assert max(middle) < 15_000
    assert full == []
