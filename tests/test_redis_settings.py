"""REDIS_URL lists shards; REDIS_SENTINELS / REDIS_SENTINEL_MASTER configure Sentinel; nonsense
stops the process (collab/settings.py, collab/env.py)."""

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from collab.env import env_addresses, env_redis_urls

ROOT = Path(__file__).resolve().parent.parent
PROBE = (
    "import json, django; from django.conf import settings; django.setup();"
    "from editor.realtime.presence import redis_hosts;"
    "print(json.dumps(redis_hosts(), default=repr))"
)
VARIABLES = ["REDIS_URL", "REDIS_SENTINELS", "REDIS_SENTINEL_MASTER", "REDIS_SENTINEL_PASSWORD"]


def load_hosts(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    clean.update(DJANGO_SETTINGS_MODULE="collab.settings", COLLAB_VAR_DIR=str(tmp_path), **env)
    return subprocess.run(
        [sys.executable, "-c", PROBE], cwd=ROOT, env=clean, capture_output=True, text=True
    )


def test_it_keeps_one_url_and_the_default_as_they_were(tmp_path):
    one = load_hosts(tmp_path, REDIS_URL="redis://cache.internal:6379/1")
    unset = load_hosts(tmp_path)

    assert json.loads(one.stdout) == ["redis://cache.internal:6379/1"]
    assert json.loads(unset.stdout) == ["redis://127.0.0.1:6379/0"]


def test_it_makes_a_shard_of_each_url_in_order(tmp_path):
    result = load_hosts(tmp_path, REDIS_URL="redis://a:6379/0, redis://b:6380/0")

    assert json.loads(result.stdout) == ["redis://a:6379/0", "redis://b:6380/0"]


def test_it_configures_sentinel_as_channels_redis_documents(tmp_path):
    result = load_hosts(
        tmp_path,
        REDIS_SENTINELS="s1:26379,[::1]:26380,s3",
        REDIS_SENTINEL_MASTER="collab-a,collab-b",
        REDIS_SENTINEL_PASSWORD="hunter2",
    )

    hosts = json.loads(result.stdout)
    assert [host["master_name"] for host in hosts] == ["collab-a", "collab-b"]
    assert hosts[0]["sentinels"] == [["s1", 26379], ["::1", 26380], ["s3", 26379]]
    assert hosts[0]["password"] == "hunter2"
    assert hosts[0]["db"] == 0
    assert "name='redis-py'" in hosts[0]["driver_info"]  # read once, for every connection


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REDIS_URL": "localhost:6379"}, "is not a Redis URL"),
        ({"REDIS_URL": "redis://a/0,redis://a/0"}, "the same server twice"),
        ({"REDIS_SENTINELS": "s1:26379"}, "go together"),
        ({"REDIS_SENTINEL_MASTER": "collab"}, "go together"),
        (
            {"REDIS_URL": "redis://a/0", "REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "m"},
            "not both",
        ),
        ({"REDIS_SENTINELS": "s1:port", "REDIS_SENTINEL_MASTER": "m"}, "host:port"),
    ],
)
def test_it_refuses_what_it_cannot_read(tmp_path, env, message):
    result = load_hosts(tmp_path, **env)

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert message in result.stderr


def test_it_reads_addresses(monkeypatch):
    monkeypatch.setenv("X", " a:1 , [fe80::1]:2,b ")
    assert env_addresses("X", default_port=26379) == [("a", 1), ("fe80::1", 2), ("b", 26379)]
    for bad in ("a:0", "a:99999", "::1", "[::1]x", ":5"):
        monkeypatch.setenv("X", bad)
        with pytest.raises(ImproperlyConfigured):
            env_addresses("X", default_port=26379)


def test_it_accepts_every_url_redis_py_reads(monkeypatch):
    urls = "redis://a:6379/0,rediss://user:pw@b:6380/2,unix:///run/redis.sock?db=1"
    monkeypatch.setenv("X", urls)
    assert env_redis_urls("X") == urls.split(",")


def test_the_layers_pub_sub_never_builds_redis_pys_push_debug_string(settings, monkeypatch):
    """redis-py 8's RESP3 reader turns every pub/sub message into a debug string, logged or
    not (``str()`` of a 16 MB update held the event loop for about 100 ms): the layer's
    connections speak RESP2, where pub/sub messages are plain replies."""
    import asyncio

    from channels_redis.pubsub import RedisPubSubChannelLayer
    from redis._parsers import resp3

    seen = []

    async def record(self, response):
        seen.append(response)
        return response

    monkeypatch.setattr(resp3._AsyncRESP3Parser, "handle_pubsub_push_response", record)

    async def round_trip() -> dict:
        layer = RedisPubSubChannelLayer(**settings.CHANNEL_LAYERS["default"]["CONFIG"])
        try:
            channel = await layer.new_channel("room.")
            await layer.group_add("resp2-probe", channel)
            await layer.group_send("resp2-probe", {"type": "doc.update", "update": b"x" * 1000})
            return await asyncio.wait_for(layer.receive(channel), 5)
        finally:
            await layer.flush()

    received = asyncio.run(round_trip())

    assert received["update"] == b"x" * 1000
    assert seen == []


@pytest.mark.asyncio
async def test_new_redis_connections_name_redis_py_without_reading_its_metadata(
    monkeypatch,
):
    """A reconnect storm opens a pool connection per concurrent presence read: each one read
    redis-py's package metadata again (about 1 ms of the event loop); the server still learns
    the library's name and version."""
    import importlib.metadata

    import redis as redis_py

    from editor.realtime.presence import async_client, redis_hosts

    reads = []
    version = importlib.metadata.version

    def counted(name):
        reads.append(name)
        return version(name)

    monkeypatch.setattr(importlib.metadata, "version", counted)
    client = async_client(redis_hosts()[0])
    try:
        await asyncio.gather(*(client.ping() for _ in range(5)))  # five connections
        # What each sends the server in CLIENT SETINFO (Redis 7.2+ and Valkey list it).
        told = [c.driver_info for c in client.connection_pool._available_connections]
    finally:
        await client.aclose()
    assert reads == []
    assert len(told) == 5
    assert {(info.formatted_name, info.lib_version) for info in told} == {
        ("redis-py", redis_py.__version__)
    }
