"""The cluster options of the Redis transport: ``cluster``, ``partitions``,
``wait_replicas``/``wait_timeout`` (see docs/redis.md, "Redis Cluster")."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis
from conftest import broker_url
from redis.asyncio.cluster import RedisCluster

from eventbus import ConfigurationError, PublishError
from eventbus.transports import OutFrame, open_transport

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:7100/3?cluster=1",  # a cluster has database 0 only
        "unix:///tmp/redis.sock?cluster=1",
        "redis://127.0.0.1:7100/0?cluster=1&partitions=0",
        "redis://127.0.0.1:7100/0?cluster=1&partitions=5000",
        "redis://127.0.0.1:6379/0?wait_replicas=-1",
        "redis://127.0.0.1:6379/0?wait_timeout=0",
        "redis://127.0.0.1:6379/0?cluster=maybe",
    ],
)
def test_bad_cluster_options_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        open_transport(url, "ns")


@pytest.mark.redis
async def test_wait_without_enough_replicas_fails_the_publish(namespace: str) -> None:
    url = broker_url("redis")
    probe = aioredis.Redis.from_url(url)
    try:
        replicas = int((await probe.info("replication"))["connected_slaves"])
    finally:
        await probe.aclose()
    query = f"wait_replicas={replicas + 1}&wait_timeout=0.05&publish_timeout=0.5"
    t = open_transport(f"{url}?{query}", namespace)
    await t.connect()
    try:
        with pytest.raises(PublishError, match="WAIT"):
            await t.publish([OutFrame(str(uuid.uuid4()), b"x")])
    finally:
        await t.aclose()


@pytest.mark.redis
@pytest.mark.redis_cluster
async def test_an_acknowledged_publish_with_wait_is_on_the_replica(namespace: str) -> None:
    url = broker_url("redis_cluster") + "&wait_replicas=1&wait_timeout=5"
    t = open_transport(url, namespace)
    await t.connect()
    run = str(uuid.uuid4())
    try:
        await t.publish([OutFrame(run, b"%d" % i) for i in range(20)])
        client = t._live_client()  # type: ignore[attr-defined]
        assert isinstance(client, RedisCluster)
        key = f"eventbus:{{{namespace}:{run}}}:run"
        primary = client.get_node_from_key(key)
        assert primary is not None
        replicas = [n for n in client.get_replicas() if n.host and n.port]
        # the replica of the key's primary: it answers READONLY reads of the key's slot
        lengths = []
        for node in replicas:
            direct = aioredis.Redis(host=node.host, port=node.port)
            try:
                info = await direct.info("replication")
                if (info.get("master_port"), info.get("master_host")) != (
                    primary.port,
                    primary.host,
                ):
                    continue
                await direct.execute_command("READONLY")
                lengths.append(await direct.xlen(key))
            finally:
                await direct.aclose()
        assert lengths == [20]
    finally:
        await t.aclose()
