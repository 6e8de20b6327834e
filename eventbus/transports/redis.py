"""``redis://``, ``rediss://``, ``unix://``: the Redis Streams transport.

Key layout (``{...}`` are Redis Cluster hash tags, so that every key of one run shares a
slot, and a group stream shares one with its dead letters)::

    eventbus:{<ns>:<run_id>}:run      run stream: every frame of one run (XADD *, XREAD)
    eventbus:{<ns>}:events            group stream: fan-out frames of every run (XREADGROUP)
    eventbus:{<ns>}:dead:<group>      dead letters of one consumer group
    eventbus:{<ns>}:meta              the namespace's number of group stream partitions

With ``partitions`` = P > 1 the group stream is P streams ``eventbus:{<ns>:p<i>}:events``
(a run's frames all go to partition CRC32(run id) mod P), each with its dead letters
``eventbus:{<ns>:p<i>}:dead:<group>`` (see :mod:`._redis_layout`).

Every entry stores its frame in the field ``data``; a dead letter adds ``reason``,
``deliveries`` and ``id`` (the entry id in the group stream). Positions are stream ids.

Options (URL query string or keyword arguments of :func:`~eventbus.transports.open_transport`):
the fields of :class:`Options` (their table is in ``docs/redis.md``), plus redis-py's
connection options ``socket_connect_timeout``, ``socket_keepalive``,
``health_check_interval``, ``client_name``, ``max_connections``, ``db`` and the ``ssl_*``
options. Anything else is a :class:`~eventbus.ConfigurationError`.
See ``docs/redis.md`` for the retry policy and the consumer-group mechanics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry as RedisRetry
from redis.backoff import NoBackoff

from .._exceptions import (
    ConfigurationError,
    ConnectError,
    PublishError,
    TransportError,
)
from . import _redis_ops, check_name, redact_url
from ._base import DeadLetter, Entry, GroupInfo, GroupOptions, OutFrame
from ._kit import (
    check_consumer,
    ensure_open,
    parse_options,
)
from ._redis_cluster import ShortWaitError, is_cluster, make_cluster_client, publish_cluster
from ._redis_group import (
    _ConsumerLoop,
    _entries,
    _merged,
    _RedisDelivery,
    drive,
)
from ._redis_group import (
    dead_letters as read_dead_letters,
)
from ._redis_group import (
    delete_group as destroy_group,
)
from ._redis_layout import Layout, check_partitions, recorded_partitions
from ._redis_options import REDIS_OPTIONS, Options
from ._redis_retry import (
    classify,
    raise_unless_transient,
    reconnect_pause,
    reconnecting,
    retrying,
)

__all__ = ["RedisTransport"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
_MAX_SEQ = 2**64 - 1
# run ids land inside a hash tag: braces would move the tag, whitespace breaks tooling
_BAD_RUN_ID = re.compile(r"[{}\s\x00-\x1f\x7f]")

_FOLLOW_COUNT = 100  # entries per XREAD: bounds one reply (frames are up to a few MB)

# a peer that vanished without a FIN (cable, VM freeze) is noticed within ~25 s even
# while a connection only waits for a reply
_KEEPALIVE = {
    opt: value
    for opt, value in (
        (getattr(socket, "TCP_KEEPIDLE", None), 10),
        (getattr(socket, "TCP_KEEPINTVL", None), 5),
        (getattr(socket, "TCP_KEEPCNT", None), 3),
    )
    if opt is not None
}


def _pack(commands: list[tuple[bytes, ...]]) -> bytes:
    """Commands in RESP, as one buffer (what redis-py's pipeline sends, at less cost)."""
    out: list[bytes] = []
    for args in commands:
        out.append(b"*%d\r\n" % len(args))
        for arg in args:
            out += (b"$%d\r\n" % len(arg), arg, b"\r\n")
    return b"".join(out)


def _before(position: str) -> str:
    """The largest stream id smaller than ``position`` (XREAD is exclusive, follow is not)."""
    ms_text, seq_text = position.split("-")
    ms, seq = int(ms_text), int(seq_text)
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{_MAX_SEQ}"
    return "0-0"


class RedisTransport:
    """The Redis Streams transport (see the module docstring and ``docs/redis.md``).

    Raises:
        ConfigurationError: (at construction) a malformed URL or an unknown/bad option.
    """

    def __init__(self, url: str, namespace: str, **options: Any) -> None:
        self.namespace = check_name("namespace", namespace)
        self.safe_url = redact_url(url)
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise ConfigurationError(f"malformed Redis URL {self.safe_url!r}: {exc}") from None
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ConfigurationError(f"not a Redis URL: {self.safe_url!r}")
        # keyword arguments win over the query string (redis-py's from_url does the reverse)
        #: the parsed options (see :class:`Options`)
        self.options, self._redis_kwargs, passed = parse_options(
            Options, "redis", parts.query, options, self.safe_url, passthrough=REDIS_OPTIONS
        )
        cluster, asked = self.options.cluster, self.options.partitions
        # until the namespace's metadata is read (connect, or the first command)
        self._layout = Layout(namespace, asked or (8 if cluster else 1))
        self._layout_known = False
        self._client_url = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, urlencode(passed), parts.fragment)
        )
        try:
            # parse now so that a bad URL fails at open_transport, not at connect
            aioredis.connection.parse_url(self._client_url)
        except ValueError as exc:
            raise ConfigurationError(f"malformed Redis URL {self.safe_url!r}: {exc}") from None
        if self.options.cluster and (
            parts.scheme == "unix" or parts.path.strip("/") not in ("", "0")
        ):
            raise ConfigurationError(
                f"a Redis Cluster has database 0 only, over TCP: {self.safe_url!r}"
            )
        self._control_channel = f"eventbus:{{{namespace}}}:control"
        self._ttl_refreshed: dict[str, float] = {}  # run key -> when its abandon TTL was set
        self._client: aioredis.Redis | None = None  # made by connect(), or on first use
        # publish's own connection, of the client it was made from: its commands are
        # packed here, once per batch (a redis-py pipeline costs 4x the CPU per batch)
        self._pub_conn: AbstractConnection | None = None
        self._pub_client: aioredis.Redis | None = None
        self._closed = False
        #: the largest frame Redis takes (asked at connect; None before)
        self.max_message_bytes: int | None = None

    def __repr__(self) -> str:
        return f"RedisTransport({self.safe_url!r}, namespace={self.namespace!r})"

    # -- keys --------------------------------------------------------------------------

    def _run_key(self, run_id: str) -> str:
        if not isinstance(run_id, str) or not run_id or len(run_id) > 256:
            raise ConfigurationError(f"invalid run id {run_id!r}")
        if _BAD_RUN_ID.search(run_id):
            raise ConfigurationError(f"invalid run id {run_id!r}: no braces, spaces or controls")
        return f"eventbus:{{{self.namespace}:{run_id}}}:run"

    # partition 0's group stream and dead letters (the whole of them unpartitioned)
    @property
    def _events_key(self) -> str:
        return self._layout.events_key(0)

    def _dead_key(self, group: str) -> str:
        return self._layout.dead_key(group, 0)

    # -- lifecycle ---------------------------------------------------------------------

    def _make_client(self) -> aioredis.Redis:
        kwargs: dict[str, Any] = {
            "socket_connect_timeout": 5.0,
            # explicitly None: redis-py 8 defaults to 5 s (see REDIS_OPTIONS for why not)
            "socket_timeout": None,
            "socket_keepalive": True,
            "socket_keepalive_options": _KEEPALIVE,
            "health_check_interval": 15,
            **self._redis_kwargs,
        }
        try:
            if self.options.cluster:
                # redis-py's cluster retries (topology refresh on MOVED, a failed node)
                # stay; ours (_retrying, reconnecting) go round them
                return make_cluster_client(self._client_url, protocol=2, **kwargs)
            return aioredis.Redis.from_url(
                self._client_url,
                # RESP2 pins the reply shapes parsed here, and its AUTH <password> is
                # refused by a server without a password, instead of being accepted
                # silently as HELLO 3 AUTH default <anything> is: a wrong URL fails early.
                protocol=2,
                # the retry policy is ours (bounded, logged); redis-py's would hide outages
                retry=RedisRetry(NoBackoff(), 0),
                **kwargs,
            )
        except (TypeError, ValueError, rexc.RedisClusterException) as exc:
            raise ConfigurationError(f"bad Redis option for {self.safe_url!r}: {exc}") from None

    async def connect(self, *, declare: bool = True) -> None:
        """Connect and PING once (``declare`` changes nothing: Redis keys appear with
        their first write).

        Raises:
            AuthenticationError: the credentials were refused.
            ConnectError: Redis is unreachable.
            ConfigurationError: the server refused the URL's database, or an option.
            TransportError: any other refusal.
        """
        self._closed = False
        client = self._live_client()
        try:
            async with asyncio.timeout(self.options.publish_timeout):
                await client.ping()
        except Exception as exc:
            self._client = None
            await client.aclose()
            kind = classify(exc)
            if kind == "auth":
                raise_unless_transient(exc, "connect", self.safe_url, TransportError)
            if kind == "transient":
                raise ConnectError(f"cannot reach Redis at {self.safe_url}: {exc}") from exc
            if "DB index" in str(exc):
                raise ConfigurationError(f"bad database in {self.safe_url!r}: {exc}") from exc
            raise TransportError(f"Redis at {self.safe_url} refused to serve: {exc}") from exc
        self.max_message_bytes = await self._message_limit(client)
        if declare:  # a reader's connect writes nothing (the layout is read on first use)
            await self._known_layout()

    async def _known_layout(self, record: bool = True) -> Layout:
        """The namespace's layout: its recorded partitions (recorded now if it has none,
        unless ``record`` is false: a read).

        Raises:
            ConfigurationError: ``partitions`` differs from the namespace's.
            ConnectError: Redis stayed unreachable for ``publish_timeout``.
        """
        if self._layout_known:
            return self._layout
        layout = self._layout
        keys = (layout.meta_key, Layout(self.namespace, 1).events_key(0))

        async def attempt(client: aioredis.Redis) -> int:
            return await recorded_partitions(client, *keys, layout.partitions, record)

        recorded = await self._retrying(attempt, what="read the namespace", error=ConnectError)
        check_partitions(self.namespace, self.options.partitions, recorded, self.safe_url)
        self._layout = Layout(self.namespace, recorded)
        self._layout_known = record
        return self._layout

    async def _message_limit(self, client: aioredis.Redis) -> int:
        """The largest frame Redis takes: one XADD argument is at most
        ``proto-max-bulk-len``, and a batch's XADDs (a frame goes to two streams) must fit
        the ``client-query-buffer-limit``. CONFIG may be refused (ACLs, managed Redis):
        then the defaults of Redis 7 are assumed."""
        limits = {"proto-max-bulk-len": 512 * 1024 * 1024, "client-query-buffer-limit": 1 << 30}
        for name in limits:
            try:
                async with asyncio.timeout(self.options.command_timeout):
                    reply = await client.config_get(name)
                limits[name] = int(str(reply[name]))
            except Exception as exc:  # refused, renamed, unparsable: keep the default
                log.debug("Redis at %s: CONFIG GET %s failed: %s", self.safe_url, name, exc)
        return min(limits["proto-max-bulk-len"], limits["client-query-buffer-limit"] // 2)

    async def aclose(self) -> None:
        """Close every connection; iterators still running raise TransportError."""
        self._closed = True
        client, self._client = self._client, None
        await self._drop_publish_connection()
        if client is not None:
            await client.aclose()

    def is_closed(self) -> bool:
        """True after :meth:`aclose` (until the next :meth:`connect`)."""
        return self._closed

    def _live_client(self) -> aioredis.Redis:
        ensure_open(self._closed, "Redis")
        if self._client is None:
            self._client = self._make_client()
        return self._client

    # -- retries -----------------------------------------------------------------------

    async def _retrying(
        self,
        op: Callable[[aioredis.Redis], Awaitable[_T]],
        *,
        what: str,
        error: type[TransportError],
    ) -> _T:
        """Run ``op`` until it succeeds, retrying passing trouble until ``publish_timeout``
        (see :func:`retrying`).

        Raises:
            AuthenticationError: credentials refused (never retried).
            TransportClosedError: the transport is closed.
            error: retries exhausted, or a final refusal.
        """
        return await retrying(
            op,
            client=self._live_client,
            timeout=self.options.publish_timeout,
            safe_url=self.safe_url,
            what=what,
            error=error,
        )

    # -- publishing --------------------------------------------------------------------

    async def publish(self, frames: Sequence[OutFrame]) -> None:
        """Append the frames in one pipelined round trip (see ``Transport.publish``).

        A dropped connection is retried with backoff until ``publish_timeout``; a retry
        may append again frames the failed attempt had already appended.

        Raises:
            PublishError: a final refusal, or Redis kept failing for ``publish_timeout``.
            TransportClosedError: the transport is closed.
            AuthenticationError: the credentials were refused.
            ConfigurationError: a run id that cannot be a key.
        """
        ensure_open(self._closed, "Redis")
        if not frames:
            return
        commands: list[tuple[str, OutFrame]] = [(self._run_key(f.run_id), f) for f in frames]
        layout = self._layout if self._layout_known else await self._known_layout()
        # the abandon TTL is refreshed a few times per abandon_after, not on every batch
        # (a PEXPIRE per batch is a third of the commands of a one-run publisher)
        now = time.monotonic()
        refresh_after = self.options.abandon_after / 8
        refreshed = self._ttl_refreshed
        ttls: dict[str, int] = {}
        for key, frame in commands:
            if frame.final:
                ttls[key] = math.ceil(self.options.retention * 1000)
            elif key not in ttls and now - refreshed.get(key, -math.inf) >= refresh_after:
                ttls[key] = math.ceil(self.options.abandon_after * 1000)
        finals = {key for key, frame in commands if frame.final}
        events_keys = [layout.events_key(i).encode() for i in range(layout.partitions)]
        maxlen = b"%d" % self.options.maxlen
        packed: list[tuple[bytes, ...]] = []
        for key, frame in commands:
            packed.append((b"XADD", key.encode(), b"*", b"data", frame.data))
            if frame.fanout:
                events_key = events_keys[layout.partition_of(frame.run_id)]
                packed.append(
                    (b"XADD", events_key, b"MAXLEN", b"~", maxlen, b"*", b"data", frame.data)
                )
        # TTLs after the XADDs: PEXPIRE on a key that does not exist yet is a no-op
        packed += [(b"PEXPIRE", key.encode(), b"%d" % ttl_ms) for key, ttl_ms in ttls.items()]
        wait = None
        if self.options.wait_replicas:
            wait = (self.options.wait_replicas, max(1, math.ceil(self.options.wait_timeout * 1000)))
        if is_cluster(self._live_client()):
            written = list({args[1]: None for args in packed})

            async def on_cluster(client: aioredis.Redis) -> None:
                await publish_cluster(client, packed, written, wait)

            what = f"publish {len(frames)} frame(s)"
            await self._retrying(on_cluster, what=what, error=PublishError)
            self._refreshed_ttls(ttls, finals, now)
            return
        if wait is not None:
            packed.append((b"WAIT", b"%d" % wait[0], b"%d" % wait[1]))
        payload, count = _pack(packed), len(packed)

        async def attempt(client: aioredis.Redis) -> None:
            conn = self._pub_conn
            if conn is None or self._pub_client is not client:
                await self._drop_publish_connection()
                made = client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
                conn = cast(AbstractConnection, made)
                self._pub_conn, self._pub_client = conn, client
            try:
                if not conn.is_connected:
                    # the handshake: AUTH, SELECT, CLIENT SETNAME
                    await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_packed_command(payload, check_health=False)
                for _ in range(count):
                    reply = await conn.read_response()  # an error reply raises ResponseError
                if wait is not None and int(cast(int, reply)) < wait[0]:
                    raise ShortWaitError(
                        f"WAIT: {reply} of wait_replicas={wait[0]} replicas acknowledged "
                        f"within {wait[1]} ms"
                    )
            except BaseException:
                # replies of this batch may be unread: the connection is out of step
                await self._drop_publish_connection()
                raise

        await self._retrying(attempt, what=f"publish {len(frames)} frame(s)", error=PublishError)
        self._refreshed_ttls(ttls, finals, now)

    def _refreshed_ttls(self, ttls: dict[str, int], finals: set[str], now: float) -> None:
        refreshed = self._ttl_refreshed
        if len(refreshed) > 10_000:  # runs that never ended: forget them, at worst an extra PEXPIRE
            refreshed.clear()
        for key in ttls:
            if key in finals:
                refreshed.pop(key, None)
            else:
                refreshed[key] = now

    async def _drop_publish_connection(self) -> None:
        conn, self._pub_conn, self._pub_client = self._pub_conn, None, None
        if conn is not None:
            import anyio  # (not at import time: `eventbus tail` starts without it)

            with anyio.CancelScope(shield=True):
                await conn.disconnect(nowait=True)

    # -- following a run ---------------------------------------------------------------

    async def follow(self, run_id: str, *, start: str | None = None) -> AsyncIterator[Entry]:
        """Yield the run's entries from the first (or ``start``, inclusive); never ends.

        Reconnects with backoff and resumes after the last yielded entry.

        Raises:
            ConfigurationError: ``start`` is not a stream id, or a bad run id.
            AuthenticationError: the credentials were refused on reconnect.
            ConnectError: Redis stayed unreachable for ``reconnect_timeout``.
            TransportError: the transport was closed, or Redis refused the read.
        """
        key = self._run_key(run_id)
        last = "0-0"
        if start is not None:
            if not isinstance(start, str) or not _STREAM_ID.match(start):
                raise ConfigurationError(f"not a Redis stream position: {start!r}")
            last = _before(start)
        async for entry in self._read(key, last, f"follow run {run_id}"):
            yield entry

    async def _read(self, key: str, last: str, what: str) -> AsyncIterator[Entry]:
        """XREAD ``key`` after ``last``, reconnecting, for ever (reads create nothing)."""
        block_ms = max(1, int(self.options.block * 1000))
        reconnect = reconnecting(self, what)
        while True:
            client = self._live_client()
            try:
                async with asyncio.timeout(self.options.block + self.options.command_timeout):
                    reply: Any = await client.xread(
                        {key: last}, count=_FOLLOW_COUNT, block=block_ms
                    )
            except Exception as exc:
                await reconnect_pause(self, reconnect, exc)
                continue
            reconnect.ok()
            for entry_id, fields in _entries(reply):
                last = entry_id
                yield Entry(entry_id, fields.get(b"data", b""))

    # -- consumer groups ---------------------------------------------------------------

    async def consume(
        self, group: str, consumer: str, options: GroupOptions
    ) -> AsyncIterator[_RedisDelivery]:
        """Yield the group's frames for this consumer, at-least-once, until cancelled.

        One loop per group stream partition does everything: XREADGROUP (own pending
        entries first, then new ones), and every ``visibility_timeout / 4`` (0.05-5 s)
        XAUTOCLAIM of entries idle longer than ``visibility_timeout``; an entry that would
        be delivered more than ``max_deliveries`` times is dead-lettered instead. A vanished
        group (NOGROUP, after FLUSHDB or a restart without persistence) is recreated. With
        P partitions, each loop holds at most ``ceil(prefetch / P)`` unsettled deliveries.

        Raises:
            ConfigurationError: a bad group or consumer name, or bad options.
            AuthenticationError: the credentials were refused on reconnect.
            ConnectError: Redis stayed unreachable for ``reconnect_timeout``.
            TransportError: the transport was closed, or Redis refused a command.
        """
        check_consumer(group, consumer, options)
        layout = await self._known_layout()
        if layout.partitions == 1:
            async for batch in drive(self, _ConsumerLoop(self, group, consumer, options)):
                for delivery in batch:
                    yield delivery
            return
        # one loop per partition, each with its share of the prefetch
        share = replace(options, prefetch=-(-options.prefetch // layout.partitions))
        loops = [_ConsumerLoop(self, group, consumer, share, i) for i in range(layout.partitions)]
        async for delivery in _merged([drive(self, loop) for loop in loops]):
            yield delivery

    async def delete_group(self, group: str) -> None:
        """XGROUP DESTROY on the group stream, and DEL of the group's dead letters.

        Raises:
            ConfigurationError: a bad group name.
            AuthenticationError: the credentials were refused.
            ConnectError: Redis stayed unreachable for ``publish_timeout``.
        """
        await destroy_group(self, group)

    async def dead_letters(self, group: str, *, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters of the group (XRANGE; they stay).

        Raises:
            ConfigurationError: a bad group name.
            AuthenticationError: the credentials were refused.
            ConnectError: Redis stayed unreachable for ``publish_timeout``.
        """
        return await read_dead_letters(self, group, count)

    async def requeue_dead_letters(self, group: str, positions: Sequence[str] | None = None) -> int:
        """Put dead letters (``positions``; None: all) back into the group (XCLAIM FORCE
        with no delivery counted, then XDEL of the letter, atomically); return how many.

        Raises:
            ConfigurationError: a bad group name.
            AuthenticationError: the credentials were refused.
            ConnectError: Redis stayed unreachable for ``publish_timeout``.
        """
        return await _redis_ops.requeue_dead_letters(self, group, positions)

    # -- operating (eventbus.transports._redis_ops) ------------------------------------

    def tap(self, start: Literal["first", "new"] = "new") -> AsyncIterator[Entry]:
        """XREAD the group stream from its first or its last entry (no group, no key
        is created). Raises what :meth:`follow` raises."""
        return _redis_ops.tap(self, start)

    async def groups(self) -> list[GroupInfo]:
        """XINFO GROUPS, and XLEN of each group's dead letters. Raises ConnectError."""
        return await _redis_ops.groups(self)

    async def signal(self, data: bytes) -> None:
        """PUBLISH on the namespace's control channel. Raises ConnectError."""
        await _redis_ops.signal(self, data)

    def signals(self) -> AsyncIterator[bytes]:
        """SUBSCRIBE to the control channel. Raises what :meth:`follow` raises."""
        return _redis_ops.signals(self)

    async def delete_namespace(self) -> None:
        """Delete every key of this namespace (an operator's clean-up, not part of the
        transport protocol): consumers and followers see their streams vanish. Raises
        ConnectError, AuthenticationError."""
        await _redis_ops.delete_namespace(self)
