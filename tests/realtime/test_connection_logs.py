"""Each socket's log lines carry the same fields in both formats (collab/logs.py): the text
format prints the message, LOG_FORMAT=json adds the ``extra`` fields, so every extra field must
be in the message as ``key=value`` too. Lines from a real session through the consumer."""

import logging
import re

import pytest
from django.contrib.auth.models import AnonymousUser

from editor.realtime import protocol

pytestmark = [pytest.mark.asyncio, pytest.mark.django_db(transaction=True)]

# The fields the connection lines are searched by; every line that has one says it in its text.
SHOWN = ("user", "document", "code", "reason", "duration", "bytes_in", "bytes_out", "client")
SHOWN += ("role", "via", "client_id")


def connection_lines(caplog) -> dict[str, list[logging.LogRecord]]:
    lines: dict[str, list[logging.LogRecord]] = {}
    for record in caplog.records:
        if record.name == "collab.ws":
            lines.setdefault(getattr(record, "event", "(none)"), []).append(record)
    return lines


def assert_text_says_the_fields(record: logging.LogRecord) -> None:
    message = record.getMessage()
    for key in SHOWN:
        if key not in record.__dict__:
            continue
        value = record.__dict__[key]
        if key == "duration":
            shown = re.search(r"\bduration=([\d.]+)s\b", message)
            assert shown and abs(float(shown[1]) - value) < 0.1, message
        else:
            assert f" {key}={value}" in message, f"{key}={value} not in {message!r}"


async def test_the_text_of_each_line_says_its_fields(peer_for, document, owner, caplog):
    caplog.set_level(logging.INFO, logger="collab.ws")
    peer = peer_for(owner, document.id)
    assert await peer.connect()
    await peer.handshake()
    await peer.send(protocol.sync_update(peer.type("abc")))
    await peer.settle()
    await peer.close()
    refused = peer_for(AnonymousUser(), document.id, query="ticket=forged", headers=())
    assert await refused.connect()
    assert await refused.expect_close() == 4401
    malformed = peer_for(owner, document.id)
    assert await malformed.connect()
    await malformed.handshake()
    await malformed.ws.send_input({"type": "websocket.receive", "text": "not y-websocket"})
    assert await malformed.expect_close() == 4400
    await malformed.close()  # the server's side ends (and logs its close) once the client's does

    lines = connection_lines(caplog)
    assert "(none)" not in lines, [r.getMessage() for r in lines["(none)"]]
    assert {"ws.open", "ws.close", "ws.refused", "ws.closing"} <= lines.keys()
    [clean, bad] = sorted(lines["ws.close"], key=lambda r: r.code)
    assert (clean.code, bad.code) == (1000, 4400)
    assert clean.user == "olive" and clean.document == str(document.id)
    assert clean.bytes_in > 0 and clean.bytes_out > 0 and clean.duration >= 0
    [refusal] = lines["ws.refused"]
    assert (refusal.code, refusal.document) == (4401, str(document.id))
    for records in lines.values():
        for record in records:
            assert_text_says_the_fields(record)
