"""Automatic versions (editor/autoversions.py): when they are taken, what they hold, and how
they are thinned out over time (with made-up timestamps)."""

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone
from pycrdt import Doc, Text

from editor import autoversions, content
from editor.autoversions import to_thin
from editor.models import Version
from editor.realtime.room import Rooms

NOW = datetime(2026, 3, 10, 15, 30, tzinfo=UTC)


def ago(**delta: float) -> datetime:
    return NOW - timedelta(**delta)


# -- thinning, pure ----------------------------------------------------------------------------


def test_it_keeps_every_version_of_the_last_hour():
    versions = [(i, ago(minutes=i)) for i in range(60)]

    assert to_thin(versions, NOW) == []


def test_it_keeps_the_newest_of_each_hour_for_a_day():
    # 15:30 now. 13:59 and 13:05 share the 13:00 hour; 12:10 is alone in its hour.
    versions = [
        (1, datetime(2026, 3, 10, 13, 5, tzinfo=UTC)),
        (2, datetime(2026, 3, 10, 13, 59, tzinfo=UTC)),
        (3, datetime(2026, 3, 10, 12, 10, tzinfo=UTC)),
        (4, datetime(2026, 3, 10, 12, 0, tzinfo=UTC)),
        (5, datetime(2026, 3, 9, 16, 0, tzinfo=UTC)),  # 23.5 hours old: still hourly
        (6, datetime(2026, 3, 9, 16, 20, tzinfo=UTC)),
    ]

    assert to_thin(versions, NOW) == [1, 4, 5]


def test_it_keeps_the_newest_of_each_day_after_a_day():
    versions = [
        (1, datetime(2026, 3, 8, 9, 0, tzinfo=UTC)),
        (2, datetime(2026, 3, 8, 23, 0, tzinfo=UTC)),
        (3, datetime(2026, 3, 8, 14, 0, tzinfo=UTC)),
        (4, datetime(2026, 3, 7, 1, 0, tzinfo=UTC)),
        (5, datetime(2025, 12, 25, 8, 0, tzinfo=UTC)),
        (6, datetime(2025, 12, 25, 8, 0, tzinfo=UTC)),  # same moment: the higher id is newer
    ]

    assert to_thin(versions, NOW) == [1, 3, 5]


def test_what_it_keeps_stays_kept_as_time_goes_on():
    # One version every 10 minutes for three days, thinned every 10 minutes as they come.
    start = NOW - timedelta(days=3)
    kept: list[tuple[int, datetime]] = []
    for step in range(3 * 24 * 6):
        now = start + timedelta(minutes=10 * step)
        kept.append((step, now))
        doomed = set(to_thin(kept, now))
        kept = [v for v in kept if v[0] not in doomed]

    ages = sorted(NOW - timedelta(minutes=10) - created for _, created in kept)
    within_hour = [a for a in ages if a < timedelta(hours=1)]
    within_day = [a for a in ages if timedelta(hours=1) <= a < timedelta(days=1)]
    assert len(within_hour) == 6
    assert 22 <= len(within_day) <= 24  # one per clock hour
    assert 2 <= len(ages) - len(within_hour) - len(within_day) <= 3  # one per day
    assert to_thin(kept, NOW - timedelta(minutes=10)) == []


# -- taking and thinning, with the database ----------------------------------------------------


@pytest.mark.django_db
def test_it_takes_a_version_when_the_text_changed(document, owner):
    content.replace(document, "# Notes\n\nfirst", owner)

    version = autoversions.take(document.pk)

    assert version is not None
    assert (version.name, version.automatic, version.author) == ("Automatic version", True, None)
    assert content.version_text(version) == "# Notes\n\nfirst"
    assert version.text == "# Notes\n\nfirst"


@pytest.mark.django_db
def test_it_takes_none_while_the_text_is_what_the_newest_version_holds(document, owner):
    assert autoversions.take(document.pk) is None  # empty, and no version yet
    content.replace(document, "named", owner)
    content.create_version(document, "Draft", owner)

    assert autoversions.take(document.pk) is None
    content.replace(document, "named, then changed", owner)
    assert autoversions.take(document.pk) is not None
    assert autoversions.take(document.pk) is None

    assert [v.name for v in Version.objects.all()] == ["Automatic version", "Draft"]


@pytest.mark.django_db
def test_it_thins_automatic_versions_only(document, owner):
    content.replace(document, "text", owner)
    named = content.create_version(document, "Named, three days ago", owner)
    old = [content.create_version(document, "Automatic version", None, True) for _ in range(3)]
    Version.objects.filter(pk=named.pk).update(created_at=ago(days=3))
    for version, when in zip(old, (ago(days=3), ago(days=3, hours=1), ago(hours=5)), strict=True):
        Version.objects.filter(pk=version.pk).update(created_at=when)

    assert autoversions.thin(document, NOW) == 1

    assert set(Version.objects.values_list("pk", flat=True)) == {named.pk, old[0].pk, old[2].pk}


@pytest.mark.django_db
def test_taking_a_version_thins_the_older_ones(document, owner):
    content.replace(document, "one", owner)
    first, second = (
        content.create_version(document, "Automatic version", None, True) for _ in "12"
    )
    # Half past the clock hour of three hours ago: both versions fall in one hour's bucket
    # whatever minute the test runs at (a minute before "three hours ago" crosses into the
    # hour before when the test runs in an hour's first minute).
    within_one_hour = (timezone.now() - timedelta(hours=3)).replace(minute=30, second=0)
    Version.objects.filter(pk=first.pk).update(created_at=within_one_hour - timedelta(minutes=1))
    Version.objects.filter(pk=second.pk).update(created_at=within_one_hour)
    content.replace(document, "two", owner)

    taken = autoversions.take(document.pk)

    assert taken is not None
    assert not Version.objects.filter(pk=first.pk).exists()
    assert Version.objects.filter(pk__in=[second.pk, taken.pk]).count() == 2


@pytest.mark.django_db
def test_a_document_deleted_meanwhile_is_no_error(document, owner):
    document_id = document.pk
    document.delete()

    assert autoversions.take(document_id) is None


# -- when: driven by a room ----------------------------------------------------------------------


class Sink:
    user_id = 0

    async def send_frame(self, frame: bytes) -> None:
        pass

    async def recheck_access(self) -> None:
        pass

    async def sessions_ended(self, ended, kept, renamed) -> None:
        pass


class Typist:
    """A client typing into a room: each keystroke a Yjs update applied as a socket's."""

    def __init__(self, room, author_id: int, connection: Sink) -> None:
        self.room = room
        self.author_id = author_id
        self.connection = connection
        self.doc = Doc()
        self.doc.apply_update(room.doc.get_update())
        self.text = self.doc.get("codemirror", type=Text)

    async def type(self, words: str) -> None:
        before = self.doc.get_state()
        self.text += words
        await self.room.apply_client_updates(
            [self.doc.get_update(before)], self.connection, self.author_id
        )


@pytest.fixture
def timings(settings):
    def set_timings(quiet: float, every: float = 0, grace: float = 0.3) -> None:
        settings.COLLAB = {
            **settings.COLLAB,
            "AUTO_VERSION_QUIET": quiet,
            "AUTO_VERSION_EVERY": every,
            "ROOM_GRACE": grace,
        }

    return set_timings


async def versions(document) -> list[tuple[str, bool]]:
    def read() -> list[tuple[str, bool]]:
        return [(content.version_text(v), v.automatic) for v in document.versions.all()]

    return await database_sync_to_async(read)()


async def wait_versions(document, count: int, timeout: float = 10) -> list[tuple[str, bool]]:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(found := await versions(document)) < count:
        assert asyncio.get_running_loop().time() < deadline, f"versions: {found}"
        await asyncio.sleep(0.05)
    return found


async def join(document, owner) -> tuple[Rooms, Typist]:
    rooms = Rooms()
    sink = Sink()
    room = await rooms.join(document.id, sink)
    return rooms, Typist(room, owner.pk, sink)


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_takes_a_version_after_a_quiet_period(document, owner, timings):
    timings(quiet=1.5)
    rooms, typist = await join(document, owner)

    for word in ("Quiet ", "period ", "test"):
        await typist.type(word)
        await asyncio.sleep(0.1)  # well within the quiet period: no version yet
    assert await versions(document) == []

    assert await wait_versions(document, 1) == [("Quiet period test", True)]
    await asyncio.sleep(1)  # and no second one while nothing changes
    assert len(await versions(document)) == 1
    assert autoversions.get_autoversions().pending == 0
    await typist.room.close()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_takes_versions_every_so_often_while_typing_goes_on(document, owner, timings):
    timings(quiet=5, every=0.6)
    rooms, typist = await join(document, owner)

    loop = asyncio.get_running_loop()
    started = loop.time()
    while loop.time() - started < 1.6:  # never quiet for 5 s
        await typist.type("x")
        await asyncio.sleep(0.1)

    found = await wait_versions(document, 2)
    assert all(automatic for _, automatic in found)
    assert all(text and set(text) == {"x"} for text, _ in found)
    await typist.room.close()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_it_takes_a_version_when_the_last_connection_leaves(document, owner, timings):
    timings(quiet=60)
    rooms, typist = await join(document, owner)
    other = Sink()
    await rooms.join(document.id, other)
    await typist.type("Written, then left")

    rooms.leave(typist.room, other)
    await asyncio.sleep(0.3)
    assert await versions(document) == []  # someone is still here
    rooms.leave(typist.room, typist.connection)

    assert await wait_versions(document, 1) == [("Written, then left", True)]
    await typist.room.close()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_client_that_drops_and_comes_back_at_once_takes_no_version(
    document, owner, timings
):
    """A lone client whose connection drops and reconnects (a flaky network, or a flooder
    closed for its rate) is no reason to version the document each time: the room's grace."""
    timings(quiet=60, grace=1.0)
    rooms, typist = await join(document, owner)
    await typist.type("Typed before a reconnect")

    for _ in range(3):
        rooms.leave(typist.room, typist.connection)
        await asyncio.sleep(0.2)
        await rooms.join(document.id, typist.connection)
    await asyncio.sleep(1.2)  # past the grace of the first leave
    assert await versions(document) == []
    assert autoversions.get_autoversions().pending == 1

    rooms.leave(typist.room, typist.connection)  # and now for good
    await asyncio.sleep(0.5)
    assert await versions(document) == []  # within the grace
    assert await wait_versions(document, 1) == [("Typed before a reconnect", True)]
    await typist.room.close()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_leaving_without_a_change_takes_no_version(document, owner, timings):
    timings(quiet=0.3)
    rooms, typist = await join(document, owner)

    rooms.leave(typist.room, typist.connection)
    await asyncio.sleep(0.8)

    assert await versions(document) == []
    await typist.room.close()


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
async def test_a_quiet_period_of_zero_turns_them_off(document, owner, timings):
    timings(quiet=0)
    rooms, typist = await join(document, owner)
    await typist.type("never versioned")

    rooms.leave(typist.room, typist.connection)
    await asyncio.sleep(0.5)

    assert await versions(document) == []
    await typist.room.close()
