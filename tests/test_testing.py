"""collab/testing.py, the test run's own plugin: what each pytest-xdist worker takes of Redis."""

import pytest
import redis

from collab.embedded import EmbeddedRedis
from collab.testing import _workers_own


@pytest.fixture(scope="module")
def server():
    """A Redis of this module's own: the workers' databases are emptied, and the suite's are in
    use by its workers."""
    with EmbeddedRedis() as url:
        yield url.rsplit("/", 1)[0]


def test_the_first_worker_keeps_the_database_it_was_given(server):
    assert _workers_own(f"{server}/3", "gw0") == f"{server}/3"


def test_a_later_worker_takes_the_database_that_many_after_emptied_and_no_other(server):
    with redis.Redis.from_url(f"{server}/3") as given, redis.Redis.from_url(f"{server}/5") as own:
        given.set("kept", "1")
        own.set("left-by-an-earlier-run", "1")

        assert _workers_own(f"{server}/3?socket_timeout=5", "gw2") == (
            f"{server}/5?socket_timeout=5"
        )
        assert own.dbsize() == 0
        assert given.get("kept") == b"1"


def test_every_shard_moves_and_no_database_named_means_database_0(server):
    first, second = f"{server}/1", server.replace("127.0.0.1", "localhost")
    assert _workers_own(f"{first}, {second}", "gw1") == f"{server}/2,{second}/1"


def test_a_database_named_in_the_query_is_refused(server):
    with pytest.raises(pytest.UsageError, match="name the database in the path"):
        _workers_own(f"{server}?db=3", "gw1")
