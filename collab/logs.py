"""How log lines are written: readable text (the default) or one JSON object a line
(``LOG_FORMAT=json``), for every logger of the process: collab's, Django's and daphne's, its
access log included (collab/transport.py, ``log_access``). docs/OPERATIONS.md shows both.

Lines worth searching by field (each socket's open and close, refusals, limit closes) pass
their fields as ``extra={...}`` with stable keys, and say the same fields in their text as
``key=value``; the JSON object carries every such extra as a field of its own. The keys in use:

    event     what happened, dotted: ws.open, ws.close, ws.refused, ws.closing, http.request...
    user      the username;  document  the document's id;  client  the peer's address:port
    code      a WebSocket close code (docs/protocol.md);  reason  the reason given with it
    duration  seconds (a socket's life, a request's handling)
    bytes_in, bytes_out   bytes received from and sent to the client
    role, via   a socket's role and how it authenticated (session or ticket)
"""

from __future__ import annotations

import datetime
import json
import logging
import re
from typing import Any

# What every LogRecord has; anything else on a record came from ``extra`` and is a field.
_RECORD_ATTRIBUTES = frozenset(
    logging.LogRecord("", logging.INFO, "", 0, "", (), None).__dict__
) | {"message", "asctime", "taskName"}


class JSONFormatter(logging.Formatter):
    """One JSON object per record, on one line: ``time`` (UTC, ISO 8601), ``level``,
    ``logger``, ``message``, then the record's extra fields, then ``exc`` (a traceback, as one
    string) when there is one. A value JSON cannot hold is written as its ``str()``."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.datetime.fromtimestamp(record.created, tz=datetime.UTC)
        entry: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            # Cached on the record, as logging.Formatter does, for any other handler.
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


# daphne's access log, when LOG_FORMAT=json (in text, daphne writes its own to stdout).
access_logger = logging.getLogger("daphne.access")


def log_access(protocol: str, action: str, details: dict[str, Any]) -> None:
    """Logs one entry of daphne's access log (what daphne hands its ``action_logger``): an
    HTTP response sent, or a WebSocket's handshake, acceptance, rejection or end. The message
    says what daphne's own access log says."""
    client = details.get("client")
    path = details.get("path")
    if protocol == "http" and action == "complete":
        method, status, size = details.get("method"), details.get("status"), details.get("size")
        access_logger.info(
            '"%s %s" %s %s client=%s',
            method,
            path,
            status,
            size,
            client,
            extra={
                "event": "http.request",
                "method": method,
                "path": path,
                "status": status,
                "bytes_out": size,
                "duration": details.get("time_taken"),
                "client": client,
            },
        )
    elif protocol == "websocket":
        access_logger.info(
            '"WS%s %s" client=%s',
            action.upper(),
            path,
            client,
            extra={"event": f"ws.{action}", "path": path, "client": client},
        )


# -- the look-ups of every record ----------------------------------------------------------------

# What ``logging.LogRecord`` looks up for every record whatever the handlers show, by the
# logging module's switch that stops it (the logging HOWTO, "Optimization"), with the record
# fields each look-up fills: the caller's file, line and function (a walk up the stack with a
# path comparison per frame), the thread, the process id (a system call), the process's name.
LOOK_UPS = {
    "_srcfile": frozenset({"pathname", "filename", "module", "lineno", "funcName"}),
    "logThreads": frozenset({"thread", "threadName"}),
    "logProcesses": frozenset({"process"}),
    "logMultiprocessing": frozenset({"processName"}),
}
_FIELDS = frozenset().union(*LOOK_UPS.values())

# Handlers that write what their formatter makes and read no record field themselves.
_PLAIN_HANDLERS = (
    logging.StreamHandler,  # FileHandler and the rotating handlers are StreamHandlers
    logging.NullHandler,
)
# The fields a format string names, by its style (``logging.Formatter(style=...)``).
_FIELD_NAMES = (
    (logging.StrFormatStyle, re.compile(r"\{(\w+)")),
    (logging.StringTemplateStyle, re.compile(r"\$\{?(\w+)")),
    (logging.PercentStyle, re.compile(r"%\((\w+)\)")),
)


def lean_records() -> list[str]:
    """Stops the look-ups of ``LOOK_UPS`` that no handler of the process shows, and returns
    the switches it turned off: collab's own formats (text and JSON) show none of those fields,
    and a record cost 11.3 µs with them against 9.4 µs without (docs/BENCHMARKS.md, change 65),
    two records a socket (its ``ws open`` and ``ws close`` lines). Each handler reachable from a
    logger is read: a format string's fields count as shown; any handler or formatter whose
    reading is unknown (another class, a filter that may read any field) counts as showing
    everything, and then nothing is turned off. Called once logging is configured
    (collab/asgi.py, under daphne; ``LOG_LEAN_RECORDS``); a handler added later that shows one
    of these fields would get a placeholder (``(unknown file)``, 0, None), and a call with
    ``stack_info=True`` (nothing in collab makes one) no stack."""
    shown: set[str] = set()
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.Logger.manager.loggerDict.values()
        if isinstance(logger, logging.Logger)
    ]
    for logger in loggers:
        if logger.filters:
            shown |= _FIELDS
        for handler in logger.handlers:
            shown |= _fields_shown(handler)
    turned_off = [switch for switch, fields in LOOK_UPS.items() if not fields & shown]
    for switch in turned_off:
        setattr(logging, switch, None if switch == "_srcfile" else False)
    return turned_off


def _fields_shown(handler: logging.Handler) -> set[str]:
    """The record fields this handler may write (all of ``_FIELDS`` when it cannot be told)."""
    if handler.filters or not isinstance(handler, _PLAIN_HANDLERS):
        return set(_FIELDS)
    formatter = handler.formatter
    if formatter is None or type(formatter) is JSONFormatter:
        return set()  # logging's default shows the message; the JSON object, extras only
    if type(formatter) is not logging.Formatter:
        return set(_FIELDS)
    style = formatter._style  # the format string, as the formatter itself reads it
    for kind, names in _FIELD_NAMES:
        if type(style) is kind:
            return set(names.findall(style._fmt))
    return set(_FIELDS)
