"""Redis: operating a namespace beyond reading and writing it. The group stream read
without a group, what its groups hold, the control channel, deleting a namespace (the methods of
:class:`~eventbus.transports.redis.RedisTransport` that do so call these)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Literal

import redis.asyncio as aioredis
from redis import exceptions as rexc

from .._exceptions import ConnectError
from . import check_name
from ._base import Entry, GroupInfo
from ._redis_group import _stream_list, _text

if TYPE_CHECKING:
    from .redis import RedisTransport

__all__ = ["delete_namespace", "groups", "requeue_dead_letters", "signal", "signals", "tap"]


async def tap(t: RedisTransport, start: Literal["first", "new"]) -> AsyncIterator[Entry]:
    """XREAD the group stream (every partition of it) from its first entries or its last
    ones: no group, no key is created (an absent stream is waited for). In a partitioned
    namespace a position is prefixed with its partition, as a group's are."""
    layout = await t._known_layout(record=False)
    what = "read the group stream"

    async def newest(key: str) -> str:
        async def attempt(client: aioredis.Redis) -> Any:
            return await client.xrevrange(key, "+", "-", count=1)

        rows = await t._retrying(attempt, what=what, error=ConnectError)
        return _text(rows[0][0]) if rows else "0-0"

    keys = [layout.events_key(p) for p in range(layout.partitions)]
    lasts = [await newest(key) if start == "new" else "0-0" for key in keys]
    if len(keys) == 1:
        async for entry in t._read(keys[0], lasts[0], what):
            yield entry
        return
    # one reader per partition (on a cluster they live on different nodes: no one XREAD
    # can name them all), merged through a small queue
    queue: asyncio.Queue[Entry | BaseException] = asyncio.Queue(maxsize=64)

    async def pump(p: int) -> None:
        try:
            async for entry in t._read(keys[p], lasts[p], what):
                await queue.put(Entry(layout.tag(p) + entry.position, entry.data))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # handed to the reader, not lost in a task
            await queue.put(exc)

    pumps = [asyncio.create_task(pump(p)) for p in range(len(keys))]
    try:
        while True:
            item = await queue.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def signal(t: RedisTransport, data: bytes) -> None:
    """PUBLISH on the namespace's control channel."""

    async def attempt(client: aioredis.Redis) -> None:
        await client.publish(t._control_channel, data)

    await t._retrying(attempt, what="send a control message", error=ConnectError)


async def groups(t: RedisTransport) -> list[GroupInfo]:
    """XINFO GROUPS of every group stream partition, and XLEN of each group's dead
    letters: per group, pending, lag and dead letters summed over the partitions,
    consumers the most any partition has (the same consumers read every partition)."""
    layout = await t._known_layout(record=False)

    async def attempt(client: aioredis.Redis) -> list[GroupInfo]:
        merged: dict[str, GroupInfo] = {}
        for p in range(layout.partitions):
            try:
                rows: Any = await client.xinfo_groups(layout.events_key(p))
            except rexc.ResponseError as exc:
                if "no such key" in str(exc).lower():
                    continue
                raise
            for row in rows:
                name = _text(row["name"])
                lag = row.get("lag")
                dead = int(await client.xlen(layout.dead_key(name, p)))
                info = GroupInfo(
                    name,
                    int(row["consumers"]),
                    int(row["pending"]),
                    None if lag is None else int(lag),
                    dead,
                )
                seen = merged.get(name)
                if seen is not None:
                    info = replace(
                        info,
                        consumers=max(seen.consumers, info.consumers),
                        pending=(seen.pending or 0) + (info.pending or 0),
                        lag=None if seen.lag is None or info.lag is None else seen.lag + info.lag,
                        dead_letters=seen.dead_letters + info.dead_letters,
                    )
                merged[name] = info
        return sorted(merged.values(), key=lambda g: g.name)

    return await t._retrying(attempt, what="list groups", error=ConnectError)


async def signals(t: RedisTransport) -> AsyncIterator[bytes]:
    """SUBSCRIBE to the namespace's control channel, on a connection of its own; ``b""``
    once subscribed (again after each reconnect)."""
    from ._redis_retry import reconnect_pause as _reconnect_pause
    from ._redis_retry import reconnecting as _reconnecting

    reconnect = _reconnecting(t, "listen on the control channel")
    block, timeout = t.options.block, t.options.command_timeout
    while True:
        pubsub = t._live_client().pubsub()
        try:
            async with asyncio.timeout(timeout):
                await pubsub.subscribe(t._control_channel)
            reconnect.ok()
            yield b""  # listening
            while True:
                async with asyncio.timeout(block + timeout):
                    message = await pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=block
                    )
                if message is not None and message.get("type") == "message":
                    yield bytes(message["data"])
        except Exception as exc:
            await _reconnect_pause(t, reconnect, exc)
        finally:
            import anyio  # (not at import time: `eventbus tail` starts without it)

            with anyio.CancelScope(shield=True):
                await pubsub.aclose()  # type: ignore[no-untyped-call]


async def delete_namespace(t: RedisTransport) -> None:
    """SCAN the namespace's keys, UNLINK them in batches."""
    # every key of a namespace starts so: eventbus:{<ns>}:... and eventbus:{<ns>:<run>}:run
    # (a namespace holds no glob characters: check_name)
    pattern = "eventbus:{" + t.namespace + "[}:]*"

    async def attempt(client: aioredis.Redis) -> None:
        batch: list[Any] = []
        async for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                await client.unlink(*batch)
                batch.clear()
        if batch:
            await client.unlink(*batch)

    await t._retrying(attempt, what="delete the namespace", error=ConnectError)


# Puts dead letters back into their group: per (dead-letter id, group stream id) pair,
# XCLAIM FORCE makes the frame pending again in the group, with no delivery counted and
# idle for years, so the next reclaim round of any consumer takes it (as delivery 1); only
# then is the dead letter deleted. One script: atomic, so a crash leaves each letter dead
# or requeued, never lost. A frame the group stream no longer holds (trimmed by maxlen)
# cannot be claimed: its dead letter stays and is not counted. The keys share one slot.
# KEYS: dead-letter stream, group stream. ARGV: group, consumer, idle ms, then the pairs.
_REQUEUE = """
local group, consumer, idle, n = ARGV[1], ARGV[2], ARGV[3], 0
for i = 4, #ARGV, 2 do
  local claimed = redis.call('XCLAIM', KEYS[2], group, consumer, 0, ARGV[i + 1],
                             'IDLE', idle, 'RETRYCOUNT', 0, 'FORCE', 'JUSTID')
  if #claimed > 0 then
    redis.call('XDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""
_REQUEUE_IDLE_MS = 10 * 365 * 86_400_000  # past any visibility timeout (and < now)
_REQUEUE_HOLDER = "eventbus-requeue"  # when the group has no consumer to hand it to
_PAGE = 1000


async def requeue_dead_letters(
    t: RedisTransport, group: str, positions: Sequence[str] | None
) -> int:
    """See :meth:`RedisTransport.requeue_dead_letters`."""
    check_name("group", group)
    layout = await t._known_layout(record=False)
    wanted: dict[int, set[str]] | None = None
    if positions is not None:
        wanted = {}
        for position in positions:
            partition, entry_id = 0, position
            if layout.partitions > 1:
                head, _, entry_id = position.partition(":")
                if not head.isdigit() or int(head) >= layout.partitions:
                    continue  # not a position of this namespace: unknown
                partition = int(head)
            wanted.setdefault(partition, set()).add(entry_id)
    done = 0

    async def attempt(client: aioredis.Redis) -> None:
        nonlocal done
        for p in range(layout.partitions):
            if wanted is not None and not wanted.get(p):
                continue
            dead_key, key = layout.dead_key(group, p), layout.events_key(p)
            pairs: list[str] = []
            start = "-"
            for _ in itertools.count():  # a page at a time, to the end of the stream
                rows = _stream_list(await client.xrange(dead_key, start, "+", count=_PAGE))
                for dead_id, fields in rows:
                    entry_id = _text(fields.get(b"id", b""))
                    if entry_id and (wanted is None or entry_id in wanted[p]):
                        pairs += [dead_id, entry_id]
                if len(rows) < _PAGE:
                    break
                start = "(" + rows[-1][0]
            if not pairs:
                continue
            consumers: Any = await client.xinfo_consumers(key, group)
            holder = _text(consumers[0]["name"]) if consumers else _REQUEUE_HOLDER
            args: list[str | int] = [group, holder, _REQUEUE_IDLE_MS, *pairs]
            done += int(await client.eval(_REQUEUE, 2, dead_key, key, *args))
            if wanted is not None:
                wanted[p].clear()  # (a retry after a lost reply must not count them twice)

    await t._retrying(attempt, what="requeue dead letters", error=ConnectError)
    return done
