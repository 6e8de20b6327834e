"""The Redis consumer group state machine: one ``consume`` iterator's reads, reclaims,
redeliveries, dead letters and settles (see :mod:`eventbus.transports.redis`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis import exceptions as rexc

from .._exceptions import ConnectError, TransportError
from . import check_name
from ._base import DeadLetter, GroupOptions
from ._kit import Retry, describe
from ._redis_retry import is_nogroup, reconnect_pause, reconnecting, retrying

if TYPE_CHECKING:
    from .redis import RedisTransport

log = logging.getLogger("eventbus.transports.redis")

_CONSUMER_GC_IDLE_MS = 3_600_000  # forget consumers idle (and holding nothing) for an hour


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


_Fields = dict[bytes, bytes]
_Entries = list[tuple[str, _Fields]]


def _entries(reply: Any) -> _Entries:
    """The entries of an XREAD/XREADGROUP reply (RESP2: ``[[stream, [(id, fields)]]]``)."""
    return [(_text(i), f or {}) for _stream, page in reply or () for i, f in page]


def _stream_list(rows: Any) -> _Entries:
    """The entries of an XRANGE/XAUTOCLAIM list (``[(id, fields)]``)."""
    return [(_text(i), f or {}) for i, f in rows or () if i is not None]


# Dead-letters entries and XACKs them (and acks others) in one atomic step. A script, not
# MULTI: the async cluster client of older redis-py (5.x, which pyproject allows) refuses
# MULTI; the keys (a group stream partition and its dead letters) share one slot, as a
# script's keys must on a cluster.
# KEYS: dead-letter stream, group stream. ARGV: group, dead_maxlen, the number of dead
# letters, then (id, data, reason, deliveries) per dead letter, then ids to ack only.
_BURY = """
local group, maxlen, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'data', ARGV[i + 1],
             'reason', ARGV[i + 2], 'deliveries', ARGV[i + 3], 'id', ARGV[i])
  redis.call('XACK', KEYS[2], group, ARGV[i])
  i = i + 4
end
while i <= #ARGV do
  redis.call('XACK', KEYS[2], group, ARGV[i])
  i = i + 1
end
return n
"""


async def _bury(
    client: aioredis.Redis,
    dead_key: str,
    key: str,
    group: str,
    dead_maxlen: int,
    dead: list[tuple[str, bytes, str, int]],
    ack_only: list[str],
) -> None:
    """Move ``dead`` (id, data, reason, deliveries) to the dead letters and XACK them and
    ``ack_only``, atomically."""
    args: list[str | bytes | int] = [group, dead_maxlen, len(dead)]
    for entry_id, data, reason, deliveries in dead:
        args += [entry_id, data, reason, deliveries]
    args += ack_only
    await client.eval(_BURY, 2, dead_key, key, *args)


@dataclass
class _ConsumerState:
    """What one ``consume`` iterator holds: yielded, not yet settled deliveries."""

    outstanding: dict[str, float] = field(default_factory=dict)  # entry id -> delivered at
    waiter: asyncio.Future[None] | None = None  # resolved by the next ack or reject

    def wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


@dataclass
class _RedisDelivery:
    """One frame of the group stream handed to one consumer (see ``Delivery``)."""

    data: bytes
    entry_id: str  # in its partition's group stream
    deliveries: int
    _loop: _ConsumerLoop = field(repr=False)
    _settled: bool = field(default=False, repr=False)

    @property
    def position(self) -> str:
        """The entry id, prefixed with ``<partition>:`` in a partitioned namespace."""
        return self._loop.tag + self.entry_id

    async def ack(self) -> None:
        """XACK it (once; a later ack or reject is a no-op).

        Raises:
            ConnectError: Redis stayed unreachable for ``publish_timeout``.
        """
        if not self._settled:
            await self._loop.settle(self, None)
            self._settled = True

    async def reject(self, reason: str) -> None:
        """Dead-letter it and XACK it, atomically (once, like :meth:`ack`).

        Raises:
            ConnectError: Redis stayed unreachable for ``publish_timeout``.
        """
        if not self._settled:
            await self._loop.settle(self, reason)
            self._settled = True


class _ConsumerLoop:
    """The state machine of one ``consume`` iterator; ``step`` does one round trip or two."""

    def __init__(
        self,
        transport: RedisTransport,
        group: str,
        consumer: str,
        options: GroupOptions,
        partition: int = 0,
    ) -> None:
        self.t = transport
        self.group = group
        self.consumer = consumer
        self.options = options
        layout = transport._layout
        self.key = layout.events_key(partition)
        self.dead_key = layout.dead_key(group, partition)
        self.tag = layout.tag(partition)
        self.state = _ConsumerState()
        self.vt_ms = max(1, int(options.visibility_timeout * 1000))
        # often enough that an expired entry waits at most a quarter of its timeout more
        self.reclaim_every = min(5.0, max(0.05, options.visibility_timeout / 4))
        self.block = transport.options.block
        self.need_group = True
        self.history: str | None = "0"  # next id of our own pending entries to read again
        self.cursor = "0-0"  # XAUTOCLAIM scan position
        self.next_reclaim = 0.0
        self.recreating = False  # True once the group was created (or found) by this loop
        # the loop settles its deliveries itself (the kit's retry policy, bounded by
        # publish_timeout), on the transport's connection
        self.client = transport._live_client

    def lost_group(self) -> None:
        self.need_group = True
        self.history = "0"
        self.cursor = "0-0"

    def reconnected(self) -> None:
        # a reply lost with the connection may have delivered entries to us: read them again
        self.history = "0"

    async def settle(self, delivery: _RedisDelivery, reason: str | None) -> None:
        """Ack (``reason`` None) or dead-letter and ack a delivery of this loop.

        Raises:
            ConnectError: Redis stayed unreachable for ``publish_timeout``.
        """
        t = self.t
        if t.is_closed():
            # nobody can settle it any more: it stays pending and is claimed again
            log.debug("settle of %s dropped: the transport is closed", delivery.position)
            return
        key, group, entry_id = self.key, self.group, delivery.entry_id
        dead_key, dead_maxlen = self.dead_key, t.options.dead_maxlen

        async def attempt(client: aioredis.Redis) -> None:
            if reason is None:
                await client.xack(key, group, entry_id)
                return
            dead = [(entry_id, delivery.data, reason, delivery.deliveries)]
            await _bury(client, dead_key, key, group, dead_maxlen, dead, [])

        what = "ack" if reason is None else "reject"
        try:
            await retrying(
                attempt,
                client=self.client,
                timeout=t.options.publish_timeout,
                safe_url=t.safe_url,
                what=f"{what} {delivery.position}",
                error=ConnectError,
            )
        except TransportError:
            if t.is_closed():  # closed while retrying: dropped, as above
                return
            raise
        self.state.outstanding.pop(entry_id, None)
        self.state.wake()

    async def step(self, client: aioredis.Redis) -> list[_RedisDelivery]:
        if self.need_group:
            await self._ensure_group(client)
            self.need_group = False
        if self.history is not None:
            return await self._read_history(client)
        now = time.monotonic()
        if now >= self.next_reclaim:
            self.next_reclaim = now + self.reclaim_every
            batch = await self._reclaim(client)
            if batch:
                return batch
        room = self.options.prefetch - len(self.state.outstanding)
        wait = max(0.001, min(self.block, self.next_reclaim - time.monotonic()))
        if room <= 0:
            # full: wait for an ack or the next reclaim round, whichever comes first
            # asyncio.wait, not wait_for: before 3.12 wait_for can swallow a cancellation
            waiter = self.state.waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait({waiter}, timeout=wait)
            finally:
                self.state.waiter = None
            return []
        reply: Any = await client.xreadgroup(
            self.group,
            self.consumer,
            {self.key: ">"},
            count=room,
            block=max(1, int(wait * 1000)),
        )
        return [self._delivery(entry_id, fields, 1) for entry_id, fields in _entries(reply)]

    def _delivery(self, position: str, fields: dict[bytes, bytes], n: int) -> _RedisDelivery:
        return _RedisDelivery(fields.get(b"data", b""), position, n, self)

    async def _ensure_group(self, client: aioredis.Redis) -> None:
        # A group that vanished under us (FLUSHDB, restart without persistence) is
        # recreated at 0, not at options.start: whatever the stream holds now was
        # published after the loss, and at-least-once prefers a duplicate to a loss.
        start = "0" if self.recreating or self.options.start == "first" else "$"
        try:
            await client.xgroup_create(self.key, self.group, id=start, mkstream=True)
        except rexc.ResponseError as exc:
            if not str(exc).startswith("BUSYGROUP"):
                raise
        if not self.recreating:
            await self._forget_idle_consumers(client)
        self.recreating = True

    async def _forget_idle_consumers(self, client: aioredis.Redis) -> None:
        """Delete consumers that hold nothing and were idle for an hour.

        Consumer names pile up in a group otherwise (every restarted worker with a fresh
        name leaves one). Deleting one that is in fact alive is harmless: XREADGROUP
        recreates it, and only consumers without pending entries are deleted.
        """
        try:
            consumers: Any = await client.xinfo_consumers(self.key, self.group)
            for info in consumers:
                name = _text(info.get("name", b""))
                if (
                    name != self.consumer
                    and int(info.get("pending", 1)) == 0
                    and int(info.get("idle", 0)) > _CONSUMER_GC_IDLE_MS
                ):
                    await client.xgroup_delconsumer(self.key, self.group, name)
        except rexc.RedisError as exc:
            log.debug("Redis %s: consumer clean-up skipped: %s", self.t.safe_url, describe(exc))

    async def _counts(self, client: aioredis.Redis, ids: list[str]) -> dict[str, int]:
        """Delivery counts (XPENDING) of those of ``ids`` this consumer holds."""
        async with client.pipeline(transaction=False) as pipe:
            for entry_id in ids:
                pipe.xpending_range(self.key, self.group, entry_id, entry_id, 1, self.consumer)
            replies: Any = await pipe.execute()
        counts: dict[str, int] = {}
        for rows in replies:
            for row in rows:
                counts[_text(row["message_id"])] = int(row["times_delivered"])
        return counts

    async def _redeliver(self, client: aioredis.Redis, live: _Entries) -> list[_RedisDelivery]:
        """Turn entries delivered again into deliveries, dead-lettering those past the limit."""
        counts = await self._counts(client, [i for i, _ in live])
        out: list[_RedisDelivery] = []
        gone: list[str] = []
        dead: list[tuple[str, dict[bytes, bytes], int]] = []
        for entry_id, fields in live:
            n = counts.get(entry_id)
            if n is None:  # acked or claimed by someone else meanwhile
                continue
            if b"data" not in fields:  # trimmed by MAXLEN: nothing left to deliver
                gone.append(entry_id)
            elif n > self.options.max_deliveries:
                dead.append((entry_id, fields, n - 1))
            else:
                out.append(self._delivery(entry_id, fields, n))
        if gone or dead:
            letters = [
                (entry_id, fields[b"data"], f"not acked after {n} deliveries", n)
                for entry_id, fields, n in dead
            ]
            await _bury(
                client,
                self.dead_key,
                self.key,
                self.group,
                self.t.options.dead_maxlen,
                letters,
                gone,
            )
            for entry_id in gone:
                self.state.outstanding.pop(entry_id, None)
            for entry_id, _f, _n in dead:
                self.state.outstanding.pop(entry_id, None)
                log.warning(
                    "Redis %s: group %s dead-lettered %s after %d deliveries",
                    self.t.safe_url,
                    self.group,
                    entry_id,
                    _n,
                )
        return out

    async def _read_history(self, client: aioredis.Redis) -> list[_RedisDelivery]:
        """One page of our own pending entries (XREADGROUP id > history), skipping held ones."""
        assert self.history is not None
        reply: Any = await client.xreadgroup(
            self.group, self.consumer, {self.key: self.history}, count=self.options.prefetch
        )
        entries = _entries(reply)
        if not entries:
            self.history = None
            return []
        self.history = entries[-1][0]
        fresh = [e for e in entries if e[0] not in self.state.outstanding]
        return await self._redeliver(client, fresh) if fresh else []

    async def _reclaim(self, client: aioredis.Redis) -> list[_RedisDelivery]:
        """XAUTOCLAIM entries idle past the visibility timeout (ours included)."""
        state, options = self.state, self.options
        if state.outstanding:
            # forget deliveries others reclaimed or acked: they no longer count against us
            pel: Any = await client.xpending_range(
                self.key,
                self.group,
                "-",
                "+",
                len(state.outstanding) + options.prefetch,
                self.consumer,
            )
            held = {_text(row["message_id"]) for row in pel}
            for entry_id in list(state.outstanding):
                if entry_id not in held:
                    del state.outstanding[entry_id]
        overdue_at = time.monotonic() - options.visibility_timeout
        overdue = sum(1 for at in state.outstanding.values() if at <= overdue_at)
        # reclaiming our own overdue deliveries does not add to what we hold
        count = min(options.prefetch, options.prefetch - len(state.outstanding) + overdue)
        if count <= 0:
            return []
        reply: Any = await client.xautoclaim(
            self.key, self.group, self.consumer, self.vt_ms, start_id=self.cursor, count=count
        )
        self.cursor = _text(reply[0])
        claimed = _stream_list(reply[1])
        if not claimed:
            return []
        if len(claimed) == count and self.cursor != "0-0":
            self.next_reclaim = 0.0  # more may be waiting: come back at once
        return await self._redeliver(client, claimed)


async def drive(t: RedisTransport, loop: _ConsumerLoop) -> AsyncIterator[list[_RedisDelivery]]:
    """Run one consumer loop: its batches, reconnecting and recreating its group."""
    group = loop.group
    reconnect = reconnecting(t, f"consume group {group} as {loop.consumer}")
    nogroup_backoff = Retry(first=0.01, cap=1.0)
    nogroup_at = 0.0
    while True:
        client = t._live_client()
        try:
            async with asyncio.timeout(t.options.block + t.options.command_timeout):
                batch = await loop.step(client)
        except Exception as exc:
            if is_nogroup(exc):
                # recreated at once; backoff only if it keeps vanishing (no hot loop)
                now = time.monotonic()
                if now - nogroup_at < 1.0:
                    await asyncio.sleep(nogroup_backoff.next_delay() or 0.0)
                else:
                    nogroup_backoff.ok()
                    log.warning(
                        "Redis %s: consumer group %s vanished (%s); recreating it",
                        t.safe_url,
                        group,
                        exc,
                    )
                nogroup_at = now
                loop.lost_group()
                continue
            await reconnect_pause(t, reconnect, exc)
            loop.reconnected()
            continue
        reconnect.ok()
        if batch:
            now = time.monotonic()
            for delivery in batch:
                loop.state.outstanding[delivery.entry_id] = now
            yield batch


async def _merged(
    sources: list[AsyncIterator[list[_RedisDelivery]]],
) -> AsyncIterator[_RedisDelivery]:
    """The deliveries of several consumer loops (one per partition) as one iterator.

    Each loop keeps its own order (a run lives in one partition); a loop's failure ends
    the whole iterator with that error, and ending it stops every loop.
    """
    queue: asyncio.Queue[list[_RedisDelivery] | Exception] = asyncio.Queue()

    async def pump(source: AsyncIterator[list[_RedisDelivery]]) -> None:
        async with contextlib.aclosing(source):  # type: ignore[type-var]
            try:
                async for batch in source:
                    queue.put_nowait(batch)  # bounded by the loop's prefetch share
            except Exception as exc:
                queue.put_nowait(exc)

    tasks = [asyncio.create_task(pump(source)) for source in sources]
    try:
        while True:
            item = await queue.get()
            if isinstance(item, Exception):
                raise item
            for delivery in item:
                yield delivery
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def delete_group(t: RedisTransport, group: str) -> None:
    """XGROUP DESTROY and DEL of the dead letters, in every partition (see the method)."""
    check_name("group", group)
    layout = await t._known_layout()

    async def attempt(client: aioredis.Redis) -> None:
        for i in range(layout.partitions):
            try:
                await client.xgroup_destroy(layout.events_key(i), group)
            except rexc.ResponseError as exc:
                if "no such key" not in str(exc).lower():  # nothing published yet: no group
                    raise
            await client.delete(layout.dead_key(group, i))

    await t._retrying(attempt, what="delete a group", error=ConnectError)


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def dead_letters(t: RedisTransport, group: str, count: int) -> list[DeadLetter]:
    """The oldest ``count`` dead letters over every partition (see the method)."""
    check_name("group", group)
    layout = await t._known_layout(record=False)

    async def attempt(client: aioredis.Redis) -> list[tuple[int, str, _Fields]]:
        rows: list[tuple[int, str, _Fields]] = []
        for i in range(layout.partitions):
            reply: Any = await client.xrange(layout.dead_key(group, i), "-", "+", count=count)
            rows += [(i, entry_id, fields) for entry_id, fields in _stream_list(reply)]
        return rows

    rows = await t._retrying(attempt, what="read dead letters", error=ConnectError)
    rows.sort(key=lambda row: _id_order(row[1]))  # in the order they died, over partitions
    out = []
    for partition, entry_id, fields in rows[:count]:
        try:
            deliveries = int(fields.get(b"deliveries", b"0"))
        except ValueError:
            deliveries = 0
        out.append(
            DeadLetter(
                layout.tag(partition) + _text(fields.get(b"id", entry_id)),
                fields.get(b"data", b""),
                _text(fields.get(b"reason", b"")),
                deliveries,
            )
        )
    return out
