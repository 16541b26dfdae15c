"""One object per event loop (editor/realtime/loops.py): rooms, the writer and presence use it."""

import asyncio
import gc
import weakref

import pytest

from editor.realtime import presence, room, store
from editor.realtime.loops import per_event_loop


def counting_getter():
    made = []

    @per_event_loop
    def get() -> object:
        """The thing of this loop."""
        made.append(object())
        return made[-1]

    return get, made


def test_it_makes_one_object_per_loop_on_first_use():
    get, made = counting_getter()

    async def twice():
        return get(), get()

    first, again = asyncio.run(twice())
    other, _ = asyncio.run(twice())

    assert first is again
    assert other is not first
    assert made == [first, other]
    assert get.__doc__ == "The thing of this loop."


def test_it_keeps_objects_of_concurrent_loops_apart():
    get, _ = counting_getter()
    loop_a, loop_b = asyncio.new_event_loop(), asyncio.new_event_loop()

    async def one():
        return get()

    try:
        a = loop_a.run_until_complete(one())
        b = loop_b.run_until_complete(one())
        assert a is not b
        assert loop_a.run_until_complete(one()) is a
    finally:
        loop_a.close()
        loop_b.close()


def test_it_lets_an_object_go_with_its_loop():
    class Thing:
        pass

    get = per_event_loop(Thing)

    async def one():
        return get()

    loop = asyncio.new_event_loop()
    thing = loop.run_until_complete(one())
    loop.close()
    gone = weakref.ref(thing)
    del loop, thing
    gc.collect()

    assert gone() is None


def test_it_refuses_to_be_called_outside_a_loop():
    get, made = counting_getter()

    with pytest.raises(RuntimeError):
        get()
    assert made == []


@pytest.mark.parametrize(
    "getter, kind",
    [
        (room.get_rooms, room.Rooms),
        (store.get_writer, store.UpdateWriter),
        (presence.get_presence, presence.Presence),
    ],
)
def test_rooms_writer_and_presence_are_one_per_loop(getter, kind):
    async def twice():
        return getter(), getter()

    first, again = asyncio.run(twice())
    other, _ = asyncio.run(twice())

    assert isinstance(first, kind)
    assert first is again
    assert other is not first
