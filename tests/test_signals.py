"""editor/signals.py's sending of one announcement to each of a user's documents."""

import uuid

import pytest

from editor import signals

pytestmark = pytest.mark.asyncio


class Publish:
    """Stands in for a room's publish function: records each document, fails on some."""

    def __init__(self, failing: set[uuid.UUID] = frozenset()) -> None:
        self.failing = failing
        self.asked: list[tuple[uuid.UUID, tuple]] = []

    async def __call__(self, document_id: uuid.UUID, *args) -> bool:
        self.asked.append((document_id, args))
        return document_id not in self.failing


async def test_it_tells_each_document_once_with_the_same_words():
    documents = [uuid.uuid4() for _ in range(2 * signals.AT_ONCE + 5)]
    publish = Publish()

    assert await signals.to_each(publish, documents, 7, "key") == len(documents)

    assert sorted(d for d, _ in publish.asked) == sorted(documents)
    assert {args for _, args in publish.asked} == {(7, "key")}


async def test_it_stops_after_the_batch_in_which_one_could_not_be_told():
    documents = [uuid.uuid4() for _ in range(3 * signals.AT_ONCE)]
    publish = Publish(failing={documents[5]})

    assert await signals.to_each(publish, documents, 7) == signals.AT_ONCE - 1

    assert len(publish.asked) == signals.AT_ONCE  # Redis out of reach: not 3 batches of waits
