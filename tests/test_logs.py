"""LOG_FORMAT: readable text by default, one JSON object a line with json (collab/logs.py).

The formatter on its own, then real `manage.py serve` processes (tests/live.py) in each format,
through the same session: a health check, a page that is not there, a socket that opens, types
and closes, one refused for a bad ticket, one closed for a text frame. Everything the process
writes, stdout and stderr (LiveServers keeps them in one file), is read back.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.handlers
import os
import queue
import re
import subprocess
import sys
import time
import uuid

import pytest
from django.conf import settings
from pycrdt import Doc, Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from collab import logs
from collab.logs import JSONFormatter
from editor.realtime import protocol
from tests import live

# -- the formatter -------------------------------------------------------------------------------


def record(message: str, *args: object, exc_info=None, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("collab.ws", logging.INFO, __file__, 1, message, args, exc_info)
    made.__dict__.update(extra)
    return made


def test_it_writes_one_json_object_with_the_extra_fields():
    line = JSONFormatter().format(
        record("ws open user=%s", "olive", event="ws.open", user="olive", code=1000)
    )

    entry = json.loads(line)
    assert "\n" not in line
    assert entry.pop("time").endswith("Z")
    assert entry == {
        "level": "INFO",
        "logger": "collab.ws",
        "message": "ws open user=olive",
        "event": "ws.open",
        "user": "olive",
        "code": 1000,
    }


def test_it_puts_a_traceback_in_one_field():
    try:
        raise ValueError("broken\nacross lines")
    except ValueError:
        line = JSONFormatter().format(record("it failed", exc_info=sys.exc_info()))

    assert len(line.splitlines()) == 1
    entry = json.loads(line)
    assert entry["message"] == "it failed"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].endswith("ValueError: broken\nacross lines")


def test_it_writes_what_json_cannot_hold_as_text():
    document = uuid.uuid4()
    entry = json.loads(JSONFormatter().format(record("x", document=document, request=object())))

    assert entry["document"] == str(document)
    assert entry["request"].startswith("<object object at ")


# -- the look-ups of every record -----------------------------------------------------------------


@pytest.fixture
def only_these_loggers(monkeypatch):
    """The process's loggers replaced by the test's own (pytest's capture handlers on the root
    would otherwise count), and logging's switches put back afterwards."""
    switches = {name: getattr(logging, name) for name in logs.LOOK_UPS}
    root = logging.getLogger()

    def install(*handlers: logging.Handler, filtered: bool = False) -> logging.Logger:
        logger = logging.Logger("collab.look_ups")
        logger.setLevel(logging.INFO)
        logger.parent = root  # its records go to the root's handlers, as every logger's do
        monkeypatch.setattr(logging.Logger.manager, "loggerDict", {logger.name: logger})
        monkeypatch.setattr(root, "handlers", list(handlers))
        monkeypatch.setattr(root, "filters", [])
        if filtered:
            logger.addFilter(lambda record: True)
        return logger

    yield install
    for name, value in switches.items():
        setattr(logging, name, value)


def writing_to(formatter: logging.Formatter | None) -> tuple[logging.Handler, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    return handler, stream


def collab_formatter(name: str) -> logging.Formatter:
    config = settings.LOGGING["formatters"][name]
    if "()" in config:
        return JSONFormatter()
    return logging.Formatter(config["format"])


def test_records_skip_the_look_ups_that_collabs_formats_do_not_show(only_these_loggers):
    text, text_out = writing_to(collab_formatter("text"))
    json_, json_out = writing_to(collab_formatter("json"))
    logger = only_these_loggers(text, json_)

    assert logs.lean_records() == list(logs.LOOK_UPS)
    made = []
    logger.addFilter(lambda record: made.append(record) or True)
    logger.info("ws open user=%s", "olive", extra={"event": "ws.open", "user": "olive"})

    # The caller's file and line, the thread and the process were not looked up...
    [record] = made
    assert (record.lineno, record.thread, record.process, record.processName) == (
        0,
        None,
        None,
        None,
    )
    # ...and the lines are what they were.
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO collab\.look_ups ws open user=olive\n",
        text_out.getvalue(),
    )
    entry = json.loads(json_out.getvalue())
    assert {k: v for k, v in entry.items() if k != "time"} == {
        "level": "INFO",
        "logger": "collab.look_ups",
        "message": "ws open user=olive",
        "event": "ws.open",
        "user": "olive",
    }


@pytest.mark.parametrize(
    ("formatter", "kept"),
    [
        (logging.Formatter("%(asctime)s %(filename)s:%(lineno)d %(message)s"), ["_srcfile"]),
        (logging.Formatter("{threadName} {message}", style="{"), ["logThreads"]),
        (
            logging.Formatter("$process $processName $message", style="$"),
            ["logProcesses", "logMultiprocessing"],
        ),
    ],
)
def test_a_look_up_that_a_format_shows_stays(only_these_loggers, formatter, kept):
    handler, out = writing_to(formatter)
    logger = only_these_loggers(handler)

    assert logs.lean_records() == [switch for switch in logs.LOOK_UPS if switch not in kept]
    logger.info("hello")
    line = out.getvalue()
    if "_srcfile" in kept:
        assert re.search(r" test_logs\.py:\d+ hello$", line) and ":0 " not in line
    if "logThreads" in kept:
        assert line == "MainThread hello\n"
    if "logProcesses" in kept:
        assert line == f"{os.getpid()} MainProcess hello\n"


def test_handlers_it_cannot_read_keep_every_look_up(only_these_loggers):
    class OwnFormatter(logging.Formatter):
        pass

    for handlers, filtered in [
        ([logging.handlers.QueueHandler(queue.SimpleQueue())], False),
        ([writing_to(OwnFormatter("%(message)s"))[0]], False),
        ([writing_to(None)[0]], True),  # a filter may read any field
    ]:
        only_these_loggers(*handlers, filtered=filtered)
        assert logs.lean_records() == []
        assert logging._srcfile is not None and logging.logThreads and logging.logProcesses


# -- a real process in each format --------------------------------------------------------------

live_db = pytest.mark.django_db(transaction=True)
TEXT_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+ ")


def updates_of(text: str) -> bytes:
    doc = Doc()
    doc.get("codemirror", type=Text).insert(0, text)
    return doc.get_update()


async def close_code(socket) -> int:
    """Reads until the server closes the socket; its close code."""
    try:
        while True:
            await asyncio.wait_for(socket.recv(), 10)
    except ConnectionClosed:
        return socket.close_code


async def socket_session(servers: live.LiveServers, document, owner) -> None:
    base = f"{servers.ws()}/{document.pk}"
    async with connect(f"{base}?ticket={live.ticket_for(owner, document)}") as socket:
        await asyncio.wait_for(socket.recv(), 10)  # the server's sync step 1
        await socket.send(protocol.sync_update(updates_of("hello")))
        await socket.send(protocol.sync_step1(Doc()))
        while not isinstance(
            protocol.parse_message(await asyncio.wait_for(socket.recv(), 10)), protocol.SyncStep2
        ):
            pass
    async with connect(f"{base}?ticket=forged") as socket:
        assert await close_code(socket) == 4401
    async with connect(f"{base}?ticket={live.ticket_for(owner, document)}") as socket:
        await asyncio.wait_for(socket.recv(), 10)
        await socket.send("text frames are not y-websocket")
        assert await close_code(socket) == 4400


def run_session(servers: live.LiveServers, document, owner) -> None:
    status, _ = live._get(servers.http() + "/healthz")
    assert status == 200
    status, _ = live._get(servers.http() + "/no-such-page")
    assert status == 404
    asyncio.run(socket_session(servers, document, owner))


def wait_for_lines(servers: live.LiveServers, *needles: str, timeout: float = 15) -> str:
    """The server's output once every needle is in it (a close is logged after the client has
    seen it)."""
    deadline = time.monotonic() + timeout
    while True:
        output = servers.log()
        if all(needle in output for needle in needles) or time.monotonic() > deadline:
            return output
        time.sleep(0.1)


def entries_of(output: str) -> list[dict]:
    entries = []
    for number, line in enumerate(output.splitlines(), 1):
        try:
            entry = json.loads(line)
        except ValueError:
            pytest.fail(f"line {number} is not JSON: {line!r}")
        assert isinstance(entry, dict), line
        assert {"time", "level", "logger", "message"} <= entry.keys(), line
        entries.append(entry)
    return entries


def only(entries: list[dict], **match: object) -> dict:
    [found] = [e for e in entries if all(e.get(k) == v for k, v in match.items())]
    return found


@live_db
def test_every_line_of_a_json_process_is_one_json_object(start_servers, document, owner):
    servers = start_servers(1, LOG_FORMAT="json")
    run_session(servers, document, owner)
    servers.stop()  # its last lines too
    entries = entries_of(servers.log())

    client = re.compile(r"^127\.0\.0\.1:\d+$")
    doc = str(document.pk)
    opened = [e for e in entries if e.get("event") == "ws.open"]
    assert len(opened) == 2
    assert {e["user"] for e in opened} == {"olive"}
    assert {e["document"] for e in opened} == {doc}
    assert {(e["role"], e["via"]) for e in opened} == {("owner", "ticket")}
    assert all(client.match(e["client"]) for e in opened)

    closes = [e for e in entries if e.get("event") == "ws.close"]
    assert sorted(e["code"] for e in closes) == [1000, 4400]
    clean = only(closes, code=1000)
    assert clean["user"] == "olive" and clean["document"] == doc
    assert clean["bytes_in"] > 0 and clean["bytes_out"] > 0
    assert isinstance(clean["duration"], float) and clean["duration"] >= 0
    assert clean["client"] == opened[0]["client"]

    refused = only(entries, event="ws.refused")
    assert refused["level"] == "WARNING"
    assert (refused["code"], refused["document"]) == (4401, doc)
    assert refused["reason"] and client.match(refused["client"])
    closing = only(entries, event="ws.closing")
    assert (closing["code"], closing["user"], closing["document"]) == (4400, "olive", doc)
    assert "text frames" in closing["reason"]

    # Django's lines, daphne's, its access log and the command's own, all as JSON.
    not_found = only(entries, logger="django.request")
    assert not_found["message"] == "Not Found: /no-such-page"
    assert not_found["status_code"] == 404
    health = [e for e in entries if e.get("event") == "http.request" and e["path"] == "/healthz"][
        -1
    ]
    assert (health["logger"], health["method"], health["status"]) == ("daphne.access", "GET", 200)
    assert health["bytes_out"] > 0 and client.match(health["client"])
    assert [e["path"] for e in entries if e.get("event") == "ws.connected"] == [
        f"/ws/documents/{doc}"
    ] * 3
    assert any(e["logger"] == "daphne.server" and "Listening" in e["message"] for e in entries)
    started = only(entries, logger="collab.serve", level="INFO")
    assert started["message"] == f"collab is starting on {servers.http()}/"


@live_db
def test_text_stays_the_default(start_servers, document, owner):
    servers = start_servers(1)
    run_session(servers, document, owner)
    output = wait_for_lines(servers, "code=4400 bytes_in=")
    lines = output.splitlines()

    assert not [line for line in lines if line.startswith("{")]
    assert f"collab is starting on {servers.http()}/" in lines
    # daphne's own access log, NCSA-style on stdout.
    assert any(re.search(r'\] "GET /healthz" 200 \d+$', line) for line in lines)
    # Django's lines once each (its own handler printed them a second time, bare, in DEBUG).
    [not_found] = [line for line in lines if "Not Found: /no-such-page" in line]
    assert re.search(r"WARNING django\.request Not Found: /no-such-page$", not_found)

    doc = document.pk
    [opened, _] = [line for line in lines if " ws open " in line]
    assert TEXT_LINE.match(opened)
    assert re.search(
        rf"INFO collab\.ws ws open user=olive document={doc} role=owner via=ticket"
        r" client=127\.0\.0\.1:\d+$",
        opened,
    )
    closes = [line for line in lines if " ws close " in line]
    assert any(
        re.search(
            rf"ws close user=olive document={doc} duration=[\d.]+s code=1000 bytes_in=[1-9]\d*"
            r" bytes_out=[1-9]\d* client=127\.0\.0\.1:\d+$",
            line,
        )
        for line in closes
    )
    assert any(
        re.search(
            rf"WARNING collab\.ws ws refused document={doc} code=4401 reason=.+ client=", line
        )
        for line in lines
    )
    assert any(
        re.search(rf"ws closing user=olive document={doc} code=4400 reason=.+ client=", line)
        for line in lines
    )


def test_an_unknown_log_format_stops_the_process():
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=live.ROOT,
        env={**os.environ, "LOG_FORMAT": "xml"},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "LOG_FORMAT must be one of text/json, not 'xml'" in result.stderr
