"""Redis Cluster for the Redis transport: the client, publishing split by node, and
``WAIT`` for replicas (see ``docs/redis.md``, "Redis Cluster").

A batch's commands go through redis-py's cluster pipeline: grouped by the node that owns
each key's slot, sent to the nodes in parallel, one connection per node, in order within a
node, so a run's frames (one slot) keep their order. Commands answered ``MOVED``/``ASK``
(resharding, failover) are sent again one by one, in order, by redis-py.
"""

from __future__ import annotations

from typing import Any, cast

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import ClusterNode, RedisCluster

__all__ = ["ShortWaitError", "is_cluster", "make_cluster_client", "publish_cluster"]


class ShortWaitError(rexc.ConnectionError):
    """Fewer replicas than ``wait_replicas`` acknowledged a batch within ``wait_timeout``.

    A ConnectionError for the retry policy: the batch is published again (a new
    connection, whose ``WAIT`` covers the new copy), until ``publish_timeout``.
    """


def make_cluster_client(url: str, **kwargs: Any) -> aioredis.Redis:
    """A cluster client seeded by ``url``'s node. It serves the command API of
    ``aioredis.Redis`` that the transport uses, so it is typed as one."""
    kwargs.pop("max_connections", None)  # per node in the cluster client: keep its default
    client = RedisCluster.from_url(url, **kwargs)
    return cast(aioredis.Redis, client)


def is_cluster(client: aioredis.Redis) -> bool:
    return isinstance(client, RedisCluster)


async def publish_cluster(
    client: aioredis.Redis,
    commands: list[tuple[bytes, ...]],
    keys: list[bytes],
    wait: tuple[int, int] | None,
) -> None:
    """Send ``commands`` (the first argument of each: its command name) through a cluster
    pipeline; with ``wait`` = (replicas, timeout ms), end each node's part with ``WAIT``.

    Raises:
        ShortWaitError: a node's ``WAIT`` counted fewer replicas.
        redis.exceptions.RedisError: a command failed after redis-py's own retries.
    """
    cluster = cast(RedisCluster, client)
    if cluster._initialize:  # the slot map is needed below, before the pipeline would load it
        await cluster.initialize()
    pipe = cluster.pipeline(transaction=False)
    for args in commands:
        pipe.execute_command(args[0].decode(), *args[1:])
    nodes: dict[str, ClusterNode] = {}
    if wait is not None:
        for key in keys:
            node = cluster.get_node_from_key(key.decode())
            if node is not None:  # None: a slot without a node, the pipeline will say so
                nodes[node.name] = node
        for node in nodes.values():
            pipe.execute_command("WAIT", wait[0], wait[1], target_nodes=node)
    replies = await pipe.execute()
    if wait is not None:
        acked = replies[len(commands) :]
        short = [(n, int(a)) for n, a in zip(nodes, acked, strict=True) if int(a) < wait[0]]
        if short:
            raise ShortWaitError(
                "WAIT: fewer replicas than wait_replicas="
                f"{wait[0]} acknowledged within {wait[1]} ms: "
                + ", ".join(f"{name}: {count}" for name, count in short)
            )
