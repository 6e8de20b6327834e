"""Where a Redis namespace keeps its group streams: one, or ``partitions`` of them.

A namespace's group stream can be split into P partitions, each its own key (its own slot,
so a Redis Cluster spreads them over its shards). A run always lands in the same partition
(CRC32 of its id), so its frames keep their order; a group reads every partition. P is
recorded in the namespace's metadata hash the first time any client touches the namespace
(HSETNX: the first writer wins), and a client asking for another P is refused: frames of a
live run would move to another partition and could be consumed out of order.

P = 1 is the layout of eventbus before partitions (``eventbus:{<ns>}:events``); a namespace
that has that stream but no metadata yet is recorded as P = 1.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from .._exceptions import ConfigurationError

__all__ = ["Layout", "check_partitions", "recorded_partitions"]

MAX_PARTITIONS = 1024


@dataclass(frozen=True, slots=True)
class Layout:
    """The keys of one namespace with ``partitions`` group streams."""

    namespace: str
    partitions: int

    def events_key(self, partition: int) -> str:
        if self.partitions == 1:
            return f"eventbus:{{{self.namespace}}}:events"
        return f"eventbus:{{{self.namespace}:p{partition}}}:events"

    def dead_key(self, group: str, partition: int) -> str:
        # in its group stream's slot: a dead letter and its XACK go in one script
        if self.partitions == 1:
            return f"eventbus:{{{self.namespace}}}:dead:{group}"
        return f"eventbus:{{{self.namespace}:p{partition}}}:dead:{group}"

    def partition_of(self, run_id: str) -> int:
        if self.partitions == 1:
            return 0
        return zlib.crc32(run_id.encode()) % self.partitions

    def tag(self, partition: int) -> str:
        """The prefix of a group position in this partition (none when unpartitioned)."""
        return "" if self.partitions == 1 else f"{partition}:"

    @property
    def meta_key(self) -> str:
        return f"eventbus:{{{self.namespace}}}:meta"


def check_partitions(namespace: str, asked: int | None, recorded: int, safe_url: str) -> int:
    """The namespace's P, or a ConfigurationError when the caller asked for another one.

    Raises:
        ConfigurationError: ``asked`` is set and differs from the recorded P.
    """
    if asked is not None and asked != recorded:
        raise ConfigurationError(
            f"namespace {namespace!r} on Redis {safe_url} has {recorded} group stream "
            f"partition(s), not the {asked} asked for: the number of partitions of a live "
            f"namespace cannot change (runs in flight would be reordered). Use "
            f"partitions={recorded}, or a new namespace"
        )
    return recorded


async def recorded_partitions(
    client: aioredis.Redis, meta_key: str, legacy_key: str, partitions: int, record: bool = True
) -> int:
    """The namespace's P from its metadata, recorded first if it has none: 1 for a
    namespace from before partitions (it has ``legacy_key``), else ``partitions``.

    Plain commands, no script (scripting may be refused by a managed Redis's ACLs):
    HSETNX makes the first writer's P the one every client reads back.
    """
    reply: Any = await client.hget(meta_key, "partitions")
    if reply is None:
        legacy = bool(await client.exists(legacy_key))
        if not record:  # a read: what a writer would record, written by none
            return 1 if legacy else partitions
        await client.hsetnx(meta_key, "partitions", 1 if legacy else partitions)
        reply = await client.hget(meta_key, "partitions")
    return int(reply)
