"""A live fuzz: thousands of random and mutated frames against a real daphne process
(tests/live.py), while another client types.

One editor socket sends bursts of frames: valid ones, mutations of valid ones
(test_protocol_fuzz.py's), random bytes, text frames and frames over the size limit. After
each burst it either asks for the server's state (the socket must still be open and answer) or,
when the burst held a frame the server must refuse, it reads the close: 4400 or 4413 as
docs/protocol.md says, never 1011; then it reconnects. Meanwhile a writer types valid edits and
an observer watches. At the end the server is alive, the writer and the observer were never
closed and saw every edit, and a fresh client syncs exactly the writer's text.

Frames are drawn from a seeded ``random.Random``, and the fuzz updates are written to a root of
their own ("fuzz"): a mutated update that applies is an edit, and it must not touch the text
the writer's edits produced. Each update frame is first tried on a local pycrdt doc that took
what the server took (the oracle): it tells whether the server must refuse it. Updates that
meet a known pycrdt defect there (a panic, seconds of work) are not sent: they have tests of
their own, below and in test_room_fuzz.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from dataclasses import dataclass, field

import pytest
from pycrdt import Doc, Text
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from editor.realtime import protocol
from editor.realtime.protocol import ProtocolError
from tests import live
from tests.realtime.test_protocol_fuzz import mutate_many, random_mutations

pytestmark = pytest.mark.django_db(transaction=True)

SEED = 20261202
FRAMES = 3000  # frames the server reads, at least
MAX_FRAME = 16 * 1024  # WS_MAX_INCOMING_FRAME of the server under test: 4413 is reachable
MALFORMED, TOO_LARGE = 4400, 4413
# The fuzz is about malformed input, not about limits: rate and awareness limits are set out of
# reach (their own tests cover them), so every close here is for the frame itself.
SERVER_ENV = {
    "WS_MAX_INCOMING_FRAME": MAX_FRAME,
    "WS_RATE_MESSAGES": 1_000_000,
    "WS_RATE_MESSAGE_BURST": 1_000_000,
    "WS_RATE_BYTES": 1 << 30,
    "WS_RATE_BYTE_BURST": 1 << 30,
    "WS_MAX_AWARENESS_CLIENTS": 1_000_000,
    "WS_MAX_AWARENESS_BYTES": MAX_FRAME,
}
SLOW = 0.05  # seconds; an update pycrdt takes longer over is a known defect, not sent


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    with live.LiveServers(1, tmp_path_factory.mktemp("fuzz-servers"), **SERVER_ENV) as servers:
        yield servers


@pytest.fixture(autouse=True)
def around_each_test(transactional_db, server):
    start = server.logs[0].stat().st_size
    yield
    live.wait_quiet_database()
    print(f"--- server log during this test ---\n{log_since(server, start)[-20000:]}")


def log_since(server, start: int) -> str:
    with open(server.logs[0], errors="replace") as log:
        log.seek(start)
        return log.read()


def url(server, document, user) -> str:
    return f"{server.ws()}/{document.pk}?ticket={live.ticket_for(user, document)}"


# -- the frames ----------------------------------------------------------------------------------


def fuzz_sources(rng: random.Random) -> list[bytes]:
    """Valid frames to send as they are and to mutate: the fuzz writer's updates (root "fuzz"),
    sync step 1 and 2, awareness, query awareness, and auth messages a client has no business
    sending."""
    doc = Doc(client_id=rng.randrange(1 << 20, 1 << 31))
    text = doc.get("fuzz", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for piece in ("héllo ", "wörld", "😀", "x" * 30, "abc", "\u2028\u2029", "end"):
        text.insert(len(str(text).encode()) if rng.random() < 0.5 else 0, piece)
    frames = [protocol.sync_update(update) for update in updates]
    frames += [protocol.sync_step1(doc), protocol.sync_step1(Doc())]
    frames.append(protocol.sync_step2(doc, Doc().get_state()))
    for client_id in (rng.randrange(1 << 30), rng.randrange(1 << 30)):
        entry = protocol.AwarenessEntry(
            client_id,
            rng.randrange(100),
            {"cursor": {"anchor": {"type": None}, "head": None}, "name": "ü", "n": [1, 2.5]},
        )
        frames.append(protocol.awareness(protocol.encode_awareness([entry])))
    frames += [protocol.query_awareness(), protocol.permission_denied("nope")]
    frames.append(protocol.authenticated(protocol.SCOPE_READ_WRITE))
    return frames


@dataclass
class Oracle:
    """What the server must do with each frame, from a local doc that took the same update
    frames in the same order (a refused update can change a doc too: test_room_fuzz.py)."""

    doc: Doc = field(default_factory=Doc)
    history: list[bytes] = field(default_factory=list)  # every update the server reads
    taken: int = 0
    skipped: int = 0
    _tried: bytes | None = None  # the last update tried on ``doc`` and refused there

    def verdict(self, frame: bytes | str) -> int | None | str:
        """The close code the frame must get; None when it is taken; "skip" when it would
        meet a known pycrdt defect (then it is not sent)."""
        if isinstance(frame, str):
            return MALFORMED
        if len(frame) > MAX_FRAME:
            return TOO_LARGE
        try:
            message = protocol.parse_message(frame)
        except ProtocolError:
            return MALFORMED
        if isinstance(message, protocol.SyncStep1):
            try:
                protocol.sync_step2(self.doc, message.state_vector)
            except ProtocolError:
                return MALFORMED
            return None
        if isinstance(message, protocol.Awareness):
            states = [{**(e.state or {}), "user": {"id": 1}} for e in message.entries]
            try:
                json.dumps(states, allow_nan=False)
            except (ValueError, RecursionError):
                return "skip"  # refused as malformed (test_protocol_fuzz.py): not planned here
            return None
        if isinstance(message, protocol.SyncStep2 | protocol.SyncUpdate):
            return self._update(message.update)
        return None

    def _update(self, update: bytes) -> int | None | str:
        if update == b"\x00\x00":
            return None
        if not protocol.plausible_update(update):
            return "skip"  # yrs takes seconds to refuse these (test_room_fuzz.py)
        try:
            Doc().apply_update(update)
        except ValueError:
            return MALFORMED  # refused whatever the document: this doc is left alone
        except BaseException:
            return "skip"
        started = time.monotonic()
        try:
            self.doc.apply_update(update)
            str(self.doc.get("fuzz", type=Text))
        except ValueError:
            outcome: int | None | str = MALFORMED
        except BaseException:  # pyo3's PanicException: a known defect (test_room_fuzz.py)
            outcome = "skip"
        else:
            outcome = None
        if outcome == "skip" or time.monotonic() - started > SLOW:
            self._replay()  # as if it had never been tried
            return "skip"
        self.history.append(update)
        self.taken += outcome is None
        self._tried = update if outcome is not None else None
        return outcome

    def forget(self, frame: bytes | str) -> None:
        """The frame just judged refused is not sent after all."""
        if self._tried is not None and isinstance(frame, bytes) and frame.endswith(self._tried):
            self.history.pop()
            self._replay()
        self._tried = None

    def _replay(self) -> None:
        self.doc = Doc()
        for update in self.history:
            with contextlib.suppress(ValueError):
                self.doc.apply_update(update)


def draw_frame(rng: random.Random, sources: list[bytes]) -> bytes | str:
    roll = rng.random()
    if roll < 0.30:
        return rng.choice(sources)
    if roll < 0.80:
        return mutate_many(rng.choice(sources), random_mutations(rng))
    if roll < 0.92:
        return rng.randbytes(rng.randint(1, 40))
    if roll < 0.96:
        return rng.choice(("", "hello", "\x00\x00"))  # text frames
    return rng.randbytes(MAX_FRAME + rng.randint(1, 2048))


def draw_burst(rng: random.Random, sources: list[bytes], oracle: Oracle) -> Burst:
    """Frames to send in a row: frames the server takes, then a last one that may be refused,
    and when it is, a few more that the server must not read. (Refused frames drawn earlier in
    a burst are put aside, so a socket lives for several frames.)"""
    burst = Burst()
    size = rng.randint(1, 20)
    while len(burst.frames) < size:
        frame = draw_frame(rng, sources)
        verdict = oracle.verdict(frame)
        if verdict == "skip":
            oracle.skipped += 1
            oracle.forget(frame)
            continue
        last = len(burst.frames) == size - 1
        if verdict is not None and not last:
            oracle.forget(frame)
            continue
        burst.frames.append(frame)
        if verdict is not None:
            burst.expected, burst.refused_at = int(verdict), len(burst.frames) - 1
            burst.frames += [draw_frame(rng, sources) for _ in range(rng.randint(0, 3))]
            break
    return burst


@dataclass
class Burst:
    frames: list[bytes | str] = field(default_factory=list)
    expected: int | None = None  # the close code the first refused frame must get
    refused_at: int | None = None

    @property
    def read(self) -> int:
        """Frames the server reads: up to the refused one, or all."""
        return len(self.frames) if self.refused_at is None else self.refused_at + 1

    def describe(self) -> str:
        shown = [f[:40] if isinstance(f, str) else f[:40].hex() for f in self.frames[: self.read]]
        return f"refused at {self.refused_at}: {shown}"


# -- the clients ---------------------------------------------------------------------------------


async def synced(ws, doc: Doc | None = None, timeout: float = 20) -> None:
    """Asks for the server's state and waits for the answer (sync step 2); the server handles a
    socket's messages in order, so everything sent before has been handled."""
    doc = doc or Doc()
    await ws.send(protocol.sync_step1(doc))
    while True:
        message = protocol.parse_message(await asyncio.wait_for(ws.recv(), timeout))
        if isinstance(message, protocol.SyncStep2):
            doc.apply_update(message.update)
            return


async def close_code(ws) -> int | None:
    """Reads until the server closes the socket; its close code."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), 20)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None


@dataclass
class Tally:
    read: int = 0  # frames the server read (up to and with each burst's refused one)
    sent: int = 0
    closes: dict[int | None, int] = field(default_factory=dict)
    wrong: list[str] = field(default_factory=list)


def plan(oracle: Oracle) -> list[Burst]:
    """Every burst the fuzzer sends, decided before anything is sent (the oracle's work stays
    out of the clients' event loop): enough for the server to read FRAMES frames."""
    rng = random.Random(SEED)
    sources = fuzz_sources(rng)
    bursts: list[Burst] = []
    while sum(burst.read for burst in bursts) < FRAMES:
        bursts.append(draw_burst(rng, sources, oracle))
    return bursts


async def fuzz(server, document, user, bursts: list[Burst], tally: Tally) -> None:
    """Sends the bursts, checks how each ends, and reconnects after each close."""
    ws = None
    for burst in bursts:
        if ws is None:
            ws = await connect(url(server, document, user), max_size=None)
        for frame in burst.frames:
            await ws.send(frame)
        tally.sent += len(burst.frames)
        tally.read += burst.read
        if burst.expected is None:
            try:
                await synced(ws)  # still open, and it answers
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                tally.closes[code] = tally.closes.get(code, 0) + 1
                tally.wrong.append(f"closed with {code}, expected open: {burst.describe()}")
                ws = None
            continue
        code = await close_code(ws)
        tally.closes[code] = tally.closes.get(code, 0) + 1
        if code != burst.expected:
            tally.wrong.append(f"closed with {code}, not {burst.expected}: {burst.describe()}")
        ws = None
    if ws is not None:
        await ws.close()


def edits(count: int) -> tuple[list[bytes], str]:
    """The writer's updates (a marker typed at alternating ends) and the text they make."""
    doc = Doc(client_id=42)
    text = doc.get("codemirror", type=Text)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    for n in range(count):
        text.insert(0 if n % 2 else len(str(text)), f"[w:{n}]")
    return updates, str(text)


class Observer:
    """A socket that reads all the time and applies every update it is sent (a client that
    stops reading is closed by the server, and misses its keepalive pongs)."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.doc = Doc()
        self.text = self.doc.get("codemirror", type=Text)
        self.failures: list[str] = []
        self.answers = 0  # sync step 2 messages received

    async def ask(self, timeout: float = 20) -> None:
        """Sends a sync step 1 and waits for the answer: the socket is open and everything it
        sent before has been handled."""
        answers = self.answers
        await self.ws.send(protocol.sync_step1(self.doc))
        deadline = time.monotonic() + timeout
        while self.answers == answers and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert self.answers > answers, "no answer to a sync step 1"

    async def watch(self) -> None:
        try:
            async for frame in self.ws:
                message = protocol.parse_message(frame)
                self.answers += isinstance(message, protocol.SyncStep2)
                if isinstance(message, protocol.SyncStep2 | protocol.SyncUpdate):
                    try:
                        self.doc.apply_update(message.update)
                    except BaseException as exc:
                        self.failures.append(f"{type(exc).__name__}: {exc}")
        except ConnectionClosed:
            pass

    async def wait_for(self, text: str, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while str(self.text) != text and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return str(self.text)


# -- the test ------------------------------------------------------------------------------------


def test_thousands_of_bad_frames_leave_the_server_and_the_document_unharmed(
    server, document, owner, editor_user, viewer
):
    start = server.logs[0].stat().st_size
    updates, expected_text = edits(400)
    oracle = Oracle()
    planning = time.monotonic()
    bursts = plan(oracle)
    planning = time.monotonic() - planning
    tally = Tally()

    async def scenario():
        writer = Observer(await connect(url(server, document, owner), max_size=None))
        observer = Observer(await connect(url(server, document, viewer), max_size=None))
        watching = [asyncio.ensure_future(client.watch()) for client in (writer, observer)]
        await writer.ask()
        # The observer is in the room before the first edit: a socket joins its room after its
        # 101 (the check comes first), and the observer asks for nothing itself, so an edit
        # broadcast before it joined would never reach it, nor would any later one apply.
        await observer.ask()
        fuzzing = asyncio.ensure_future(fuzz(server, document, editor_user, bursts, tally))
        for update in updates:  # interleaved with the fuzz, a few milliseconds apart
            await writer.ws.send(protocol.sync_update(update))
            await asyncio.sleep(0.02 if not fuzzing.done() else 0)
        await fuzzing
        await writer.ask()  # every edit handled, and the writer's socket still answers
        seen = await observer.wait_for(expected_text)
        still_open = (writer.ws.close_code, observer.ws.close_code)

        fresh = Doc()
        async with connect(url(server, document, editor_user), max_size=None) as ws:
            await synced(ws, fresh)
        for client in (writer, observer):
            await client.ws.close()
        await asyncio.gather(*watching)
        failures = writer.failures + observer.failures
        return seen, still_open, failures, str(fresh.get("codemirror", type=Text))

    started = time.monotonic()
    seen, still_open, failures, synced_text = asyncio.run(scenario())
    took = time.monotonic() - started
    log = log_since(server, start)
    print(
        f"fuzz: {tally.read} frames read of {tally.sent} sent in {len(bursts)} bursts, "
        f"{took:.1f} s (planned in {planning:.1f} s); closes {tally.closes}; "
        f"{oracle.taken} fuzz updates taken, {oracle.skipped} skipped (known pycrdt defects)"
    )

    assert tally.read >= FRAMES
    assert tally.wrong == []
    assert set(tally.closes) <= {MALFORMED, TOO_LARGE}
    assert tally.closes.get(MALFORMED) and tally.closes.get(TOO_LARGE)  # both paths were taken
    assert server.alive(0)
    assert still_open == (None, None)  # the writer and the observer were never closed
    assert failures == []
    assert seen == expected_text  # the observer got every edit as it happened
    assert synced_text == expected_text
    assert live.wait_stored(document.pk, [f"[w:{n}]" for n in range(len(updates))]) == seen
    for sign in ("code=1011", "Traceback", "exception was never retrieved"):
        assert sign not in log, log[-5000:]


# -- defects the fuzz found, as a client meets them -----------------------------------------------


def out_of_range_awareness() -> bytes:
    state = b'{"cursor":null,"x":1e400}'
    payload = b"\x01" + b"\x07\x01" + bytes([len(state)]) + state
    return protocol.awareness(payload)


async def outcome(ws, timeout: float = 5) -> int | str | None:
    """How a socket answers a sync step 1: None (it does), its close code, or "silence"."""
    try:
        await synced(ws, timeout=timeout)
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd else None
    except TimeoutError:
        return "silence"
    return None


def test_an_awareness_number_out_of_range_is_refused_or_relayed_not_an_internal_error(
    server, document, owner, editor_user
):
    async def scenario():
        async with connect(url(server, document, editor_user), max_size=None) as ws:
            await synced(ws)
            await ws.send(out_of_range_awareness())
            sender = await outcome(ws)
        async with connect(url(server, document, owner), max_size=None) as ws:
            later = await outcome(ws)  # the next client still gets in
        return sender, later

    assert asyncio.run(scenario()) in ((None, None), (MALFORMED, None))


def test_an_update_that_makes_yrs_panic_closes_the_socket_with_4400(server, document, editor_user):
    from tests.realtime.test_room_fuzz import PANIC, PANIC_BEFORE

    async def scenario():
        async with connect(url(server, document, editor_user), max_size=None) as ws:
            await synced(ws)
            # One at a time (sent together they are merged into one update, which applies).
            for update in PANIC_BEFORE:
                await ws.send(protocol.sync_update(bytes.fromhex(update)))
                await synced(ws)
            await ws.send(protocol.sync_update(bytes.fromhex(PANIC)))
            return await outcome(ws)

    assert asyncio.run(scenario()) == MALFORMED


def test_a_small_garbage_update_does_not_stall_other_documents(
    server, document, owner, editor_user
):
    from editor.models import Document
    from tests.realtime.test_room_fuzz import SLOW as SLOW_UPDATE

    other = Document.objects.create_for(owner, "Elsewhere")

    async def scenario():
        async with connect(url(server, other, owner), max_size=None) as bystander:
            await synced(bystander)
            # Three sockets, one such update each: about 3 s of a stalled loop here.
            sockets = [await connect(url(server, document, editor_user)) for _ in range(3)]
            for ws in sockets:
                await synced(ws)
            for ws in sockets:
                await ws.send(protocol.sync_update(bytes.fromhex(SLOW_UPDATE)))
            await asyncio.sleep(0.05)  # the server has started on them
            started = time.monotonic()
            await synced(bystander)
            waited = time.monotonic() - started
            for ws in sockets:
                await ws.close()
            return waited

    assert asyncio.run(scenario()) < 0.5
