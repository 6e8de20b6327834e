"""The RabbitMQ link: names, the one connection with its reconnects, and the namespace
topology (its options: :mod:`._rabbit_options`). What the publisher, followers, group
consumers and the registry of :mod:`eventbus.transports.rabbitmq` all stand on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq.exceptions as amqp_errors
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from .._exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    TransportError,
)
from . import check_name, redact_url
from ._kit import Retry, ensure_open, parse_options
from ._rabbit_cluster import (
    dead_letter_arguments,
    quorum_arguments,
    split_nodes,
    stream_arguments,
)
from ._rabbit_options import PASSTHROUGH, Options

log = logging.getLogger("eventbus.transports.rabbitmq")

T = TypeVar("T")

H_RUN = "x-eb-run"
H_FINAL = "x-eb-final"
H_MARKER = "x-eb-marker"
H_REASON = "x-eb-reason"
H_DELIVERIES = "x-eb-deliveries"
H_POSITION = "x-eb-position"
H_EVENT = "x-eb-event"
H_AT = "x-eb-at"

_SAFE_RUN = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


class StreamStarting(Exception):
    """A stream that exists but does not run yet refused a consumer.

    RabbitMQ (seen on 3.10) answers a declare of a stream that another client is creating
    at that moment before the stream runs; a consumer attached in that gap is refused with
    PRECONDITION_FAILED "... does not have a replica on the local node" (or the broker
    closes the connection with INTERNAL_ERROR, an ordinary connection loss). A new channel
    a moment later succeeds.
    """


class Lost(Exception):
    """The channel a consumer or follower read from went away."""


class ConnectionGone(amqp_errors.AMQPConnectionError):
    """The connection died under us (aiormq refuses new channels with a RuntimeError)."""


# Errors that a new connection (or channel) may cure.
RETRYABLE: tuple[type[BaseException], ...] = (
    StreamStarting,
    amqp_errors.AMQPConnectionError,
    amqp_errors.ChannelInvalidStateError,
    amqp_errors.ChannelNotFoundEntity,
    amqp_errors.DeliveryError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


def closed_here(exc: BaseException) -> bool:
    """Whether ``exc`` reports a channel closed on this side (by another task sharing it,
    or after a failure of its own), not refused by the broker: the operation is retried
    on a new channel."""
    return (
        isinstance(exc, amqp_errors.ChannelClosed)
        and not isinstance(exc, amqp_errors.ChannelNotFoundEntity)
        and (not exc.args or exc.args[0] is None)
    )


RESUMABLE: tuple[type[BaseException], ...] = (*RETRYABLE, Lost)

LOST = object()  # what a watched inbox receives when its channel or consumer goes away


def run_key(run_id: str) -> str:
    """A routing-key word and queue-name suffix for a run id.

    Topic routing keys split on dots and give ``*``/``#`` a meaning, so ids outside a safe
    alphabet are hashed. The hash starts with ``:``, which no safe id contains (so the two
    cannot collide) and which queue names accept (pamqp allows ``[A-Za-z0-9_.:-]``).
    """
    if _SAFE_RUN.match(run_id):
        return run_id
    return ":" + hashlib.sha256(run_id.encode()).hexdigest()[:40]


def int_header(headers: dict[str, Any], name: str, default: int = 0) -> int:
    value = headers.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def str_header(headers: dict[str, Any], name: str, default: str = "") -> str:
    value = headers.get(name, default)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


# the channel number each connection gave last (see _channel_number)
_last_number: weakref.WeakKeyDictionary[AbstractConnection, int] = weakref.WeakKeyDictionary()


def _channel_number(conn: AbstractConnection) -> int | None:
    """The next free channel number after the one ``conn`` gave last, wrapping at the
    broker's ``channel_max``; None leaves the choice to aiormq.

    aiormq gives the lowest free number, and frees a number when the broker's
    ``Channel.Close`` arrives, before its ``Close-Ok`` is written: a channel opened in
    between (a follower's next probe after a 404) reuses the number, and the broker closes
    the whole connection ("CHANNEL_ERROR - second 'channel.open' seen") or the Close-Ok
    lands on the new channel, which then reports itself closed. Numbers given in turn are
    not reused until ``channel_max`` channels later."""
    underlay = getattr(getattr(conn, "transport", None), "connection", None)
    channels = getattr(underlay, "channels", None)
    tune = getattr(underlay, "connection_tune", None)
    if channels is None or tune is None:
        return None
    limit = min(int(tune.channel_max or 65535), 65535)
    number = _last_number.get(conn, 0)
    for _ in range(limit):
        number = number % limit + 1
        if number not in channels:
            _last_number[conn] = number
            return number
    return None  # every number in use: aiormq says so


def copy_message(message: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
    """A persistent copy of ``message`` with ``headers``, to publish again (a group seeded
    from the namespace log, a dead letter requeued)."""
    return aio_pika.Message(
        message.body,
        headers=headers,
        message_id=message.message_id,
        content_type=message.content_type,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )


async def open_channel(conn: AbstractConnection, *, confirms: bool) -> AbstractChannel:
    """A new channel; raises a retryable connection error if the connection is dead."""
    try:
        channel: AbstractChannel = await conn.channel(
            _channel_number(conn), publisher_confirms=confirms
        )
    except RuntimeError as exc:  # "<Connection ...> closed": aio-pika has not noticed yet
        raise ConnectionGone(str(exc)) from exc
    return channel


async def consume_stream(
    queue: AbstractQueue, callback: Callable[[AbstractIncomingMessage], Any], offset: str | int
) -> None:
    """Attach a consumer to a stream queue from ``offset``.

    Raises:
        StreamStarting: the stream does not run yet (retryable, on a new channel).
    """
    try:
        await queue.consume(callback, no_ack=False, arguments={"x-stream-offset": offset})
    except amqp_errors.ChannelPreconditionFailed as exc:
        if "replica" not in str(exc):
            raise
        raise StreamStarting(str(exc)) from exc


async def watch_channel(channel: AbstractChannel, inbox: asyncio.Queue[Any]) -> None:
    """Put :data:`LOST` in ``inbox`` when the channel closes or the broker cancels the
    consumer (a quorum leader move, a deleted queue): aio-pika reports neither to a
    consumer that only waits for messages."""

    def lost(*_: Any) -> None:
        inbox.put_nowait(LOST)

    channel.close_callbacks.add(lost)
    underlay = await channel.get_underlay_channel()
    underlay.on_consumer_cancel_callbacks.add(lost)


async def pause(retry: Retry, exc: BaseException, what: str) -> bool:
    """Sleep before the next attempt after ``exc``; whether it lost the connection (the
    next attempt must replace it: pass it as ``stale`` to :meth:`Link.connection`).

    Raises:
        ConnectError: ``retry`` gave up.
    """
    delay = retry.next_delay(exc)
    if delay is None:
        raise ConnectError(f"{what}: RabbitMQ kept failing: {exc!r}") from exc
    await asyncio.sleep(delay)
    return isinstance(exc, amqp_errors.AMQPConnectionError)


class Link:
    """One namespace's connection to RabbitMQ: options, names, reconnects, topology.

    Raises:
        ConfigurationError: (at construction) a malformed URL or an unknown/bad option.
    """

    def __init__(self, url: str, namespace: str, options: dict[str, Any]) -> None:
        self.namespace = check_name("namespace", namespace)
        self.safe_url = redact_url(url)
        try:
            nodes, self.safe_url = split_nodes(url)  # a cluster's URL lists several
            url, self._node = nodes[0], 0
            parts = urlsplit(url)
            _ = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"malformed AMQP URL {self.safe_url!r}") from exc
        if parts.scheme.lower() not in ("amqp", "amqps") or not parts.hostname:
            raise ConfigurationError(f"not an amqp:// or amqps:// URL: {self.safe_url!r}")
        self.options, passed_kw, passed = parse_options(
            Options, "amqp", parts.query, options, self.safe_url, passthrough=PASSTHROUGH
        )
        passed += [
            (name, str(value).lower() if isinstance(value, bool) else str(value))
            for name, value in passed_kw.items()
        ]
        self._urls = [
            urlunsplit((p.scheme, p.netloc, p.path, urlencode(passed), p.fragment))
            for p in map(urlsplit, nodes)
        ]

        prefix = f"eventbus.{namespace}"
        self.exchange_name = prefix
        self.log_queue = f"{prefix}.log"
        self.registry_queue = f"{prefix}.registry"
        self._run_prefix = f"{prefix}.run."
        self._group_prefix = f"{prefix}.group."

        self.conn: AbstractConnection | None = None
        self._conn_lock = asyncio.Lock()
        self._pub: tuple[AbstractChannel, AbstractExchange] | None = None  # confirm channel
        self._pub_lock = asyncio.Lock()
        self._topology_ready = False
        self.runs_declared: set[str] = set()  # run streams known to exist on this connection
        self.closed = False
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- names -------------------------------------------------------------------------

    def run_queue(self, run_id: str) -> str:
        return self._run_prefix + run_key(run_id)

    def group_queue(self, group: str) -> str:
        return self._group_prefix + group

    def dead_letter_queue(self, group: str) -> str:
        return self._group_prefix + group + ".dead"

    def lock_queue(self, group: str) -> str:
        return self._group_prefix + group + ".lock"

    def _stream_arguments(self, **arguments: Any) -> dict[str, Any]:
        return stream_arguments(self.options.stream_replicas, **arguments)

    def group_arguments(self) -> dict[str, Any]:
        return quorum_arguments(self.options.quorum_replicas)

    def dead_letter_arguments(self) -> dict[str, Any]:
        return dead_letter_arguments(self.options.quorum_replicas, len(self._urls) > 1)

    def _log_arguments(self) -> dict[str, Any]:
        return self._stream_arguments(
            **{
                "x-max-age": f"{max(1, round(self.options.retention))}s",
                "x-stream-max-segment-size-bytes": self.options.segment_bytes,
            }
        )

    def _registry_arguments(self) -> dict[str, Any]:
        age = self.options.max_run_age + self.options.retention
        return self._stream_arguments(
            **{
                "x-max-age": f"{max(1, round(age))}s",
                "x-stream-max-segment-size-bytes": 1024 * 1024,
            }
        )

    # -- connection --------------------------------------------------------------------

    def check_open(self) -> None:
        ensure_open(self.closed, "RabbitMQ")

    async def close(self) -> None:
        self.closed = True
        conn, self.conn, self._pub = self.conn, None, None
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    async def _connect_once(self) -> AbstractConnection:
        """A connection to the node that served last, or to the next ones in turn.

        Raises:
            ConnectError: no node answered (the last node's failure).
        """
        for attempt in range(len(self._urls)):
            node = (self._node + attempt) % len(self._urls)
            try:
                conn = await self._connect_node(self._urls[node])
            except ConnectError:
                if attempt == len(self._urls) - 1:
                    raise
                continue
            self._node = node
            return conn
        raise AssertionError("unreachable")  # the loop returns or raises

    async def _connect_node(self, url: str) -> AbstractConnection:
        try:
            # named, so that an operator (and the tests) can tell whose connection it is
            return await aio_pika.connect(
                url, client_properties={"connection_name": f"eventbus {self.namespace}"}
            )
        except amqp_errors.ProbableAuthenticationError as exc:
            raise AuthenticationError(
                f"RabbitMQ at {self.safe_url!r} refused the credentials"
            ) from exc
        except amqp_errors.AuthenticationError as exc:
            raise AuthenticationError(
                f"RabbitMQ at {self.safe_url!r} refused the authentication: {exc}"
            ) from exc
        except (amqp_errors.ConnectionNotAllowed, amqp_errors.ProtocolSyntaxError) as exc:
            # A Connection.Close instead of OpenOk: the vhost does not exist or the user
            # may not use it (aiormq reports that as an unexpected frame).
            raise AuthenticationError(
                f"RabbitMQ at {self.safe_url!r} refused the virtual host "
                f"(does it exist, and may the user access it?)"
            ) from exc
        except (TimeoutError, amqp_errors.AMQPConnectionError, OSError) as exc:
            raise ConnectError(f"cannot reach RabbitMQ at {self.safe_url!r}: {exc!r}") from exc
        except ValueError as exc:
            raise ConfigurationError(f"bad AMQP URL {self.safe_url!r}: {exc}") from exc

    async def connection(
        self, deadline: float | None, stale: AbstractConnection | None = None
    ) -> AbstractConnection:
        """The live connection, reconnecting with backoff until ``deadline`` (monotonic).

        ``deadline=None`` makes one attempt. ``stale``: a connection the caller saw fail,
        replaced even if it does not know yet that it is closed.

        Raises:
            AuthenticationError: at once, never retried.
            ConnectError: no connection before ``deadline``.
            TransportClosedError: the transport is closed.
        """
        retry = Retry(deadline=deadline if deadline is not None else time.monotonic())
        async with self._conn_lock:
            while True:
                self.check_open()
                conn = self.conn
                if conn is not None and conn is stale:
                    self.conn = self._pub = None
                    self.discard(conn)
                    conn = None
                if conn is not None and not conn.is_closed:
                    return conn
                self._pub = None
                try:
                    conn = await self._connect_once()
                except ConnectError:
                    delay = retry.next_delay()
                    if delay is None:
                        raise
                    log.info("RabbitMQ at %s unreachable; retrying in %.2fs", self.safe_url, delay)
                    await asyncio.sleep(delay)
                    continue
                if self.closed:
                    self.discard(conn)
                    self.check_open()
                self.conn = conn
                self.runs_declared.clear()
                self._topology_ready = False
                return conn

    def discard(self, conn: AbstractConnection) -> None:
        if not conn.is_closed:
            self.spawn(asyncio.wait_for(conn.close(), 10))

    def spawn(self, coro: Awaitable[Any]) -> None:
        """Run cleanup in the background: a cancelled caller must not leave it half done."""

        async def quiet() -> None:
            with contextlib.suppress(Exception):
                await coro

        task = asyncio.get_running_loop().create_task(quiet())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close_channel(self, channel: AbstractChannel | None) -> None:
        if channel is not None and not channel.is_closed:
            self.spawn(asyncio.wait_for(channel.close(), 10))

    async def retrying(
        self,
        what: str,
        op: Callable[[AbstractConnection], Awaitable[T]],
        deadline: float,
    ) -> T:
        """Run ``op`` on a live connection, reconnecting and retrying until ``deadline``.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        retry = Retry(deadline=deadline)
        stale: AbstractConnection | None = None
        while True:
            conn = await self.connection(deadline, stale)
            try:
                return await op(conn)
            except amqp_errors.ChannelAccessRefused as exc:
                raise AuthenticationError(f"{what}: RabbitMQ refused access: {exc}") from exc
            except RETRYABLE as exc:
                log.info("%s failed (%r); retrying", what, exc)
                stale = conn if await pause(retry, exc, what) else None
            except amqp_errors.AMQPChannelError as exc:
                raise TransportError(f"{what}: RabbitMQ refused: {exc}") from exc

    # -- topology ----------------------------------------------------------------------

    async def ensure_topology(self, conn: AbstractConnection) -> None:
        if self._topology_ready:
            return
        channel = await open_channel(conn, confirms=False)
        try:
            exchange = await channel.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            log_q = await self.declare_stream(channel, self.log_queue, self._log_arguments())
            await log_q.bind(exchange, "f.#")
            await self.declare_stream(channel, self.registry_queue, self._registry_arguments())
        finally:
            self.close_channel(channel)
        self._topology_ready = True

    def forget_topology(self) -> None:
        """The namespace was deleted: declare everything again before the next use."""
        self._topology_ready = False
        self.runs_declared.clear()
        self._pub = None

    async def declare_stream(
        self, channel: AbstractChannel, name: str, arguments: dict[str, Any]
    ) -> AbstractQueue:
        try:
            return await channel.declare_queue(name, durable=True, arguments=arguments)
        except amqp_errors.ChannelPreconditionFailed:
            # Declared earlier with other limits (another process, other options): the
            # existing queue wins; the failed declare closed the channel, so reopen one.
            log.warning("%s exists with other arguments; using it as it is", name)
            await channel.reopen()
            return await channel.declare_queue(name, passive=True)

    async def declare_run(self, channel: AbstractChannel, run_id: str) -> AbstractQueue:
        """Declare the run's stream and its binding (a publisher's, for a new run)."""
        arguments = self._stream_arguments(
            **{"x-stream-max-segment-size-bytes": self.options.segment_bytes}
        )
        queue = await self.declare_stream(channel, self.run_queue(run_id), arguments)
        # one binding for both kinds of frames of the run: f.<r> and h.<r>
        await queue.bind(self.exchange_name, f"*.{run_key(run_id)}")
        return queue

    async def publisher(self, conn: AbstractConnection) -> tuple[AbstractChannel, AbstractExchange]:
        """The confirm channel (and the namespace exchange on it) of this connection."""
        async with self._pub_lock:
            pub = self._pub
            if pub is not None and not pub[0].is_closed and self.conn is conn:
                return pub
            await self.ensure_topology(conn)
            channel = await open_channel(conn, confirms=True)
            exchange = await channel.get_exchange(self.exchange_name, ensure=False)
            self._pub = (channel, exchange)
            return channel, exchange

    def drop_publisher(self, channel: AbstractChannel) -> None:
        """Close the confirm channel ``channel`` and forget it, unless it was replaced."""
        if self._pub is not None and self._pub[0] is channel:
            self._pub = None
        self.close_channel(channel)

    async def read_until_marker(
        self,
        conn: AbstractConnection,
        stream: str,
        offset: str | int,
        on_message: Callable[[AbstractIncomingMessage], Awaitable[None]] | None = None,
    ) -> list[AbstractIncomingMessage]:
        """Read a stream from ``offset`` up to its current end.

        Streams report no length over AMQP 0.9.1, so a marker is appended first and the
        read stops at it. Other markers are skipped. Messages go to ``on_message`` if given,
        else they are returned.
        """
        timeout = self.options.publish_timeout
        token = uuid.uuid4().hex
        pub, _ = await self.publisher(conn)
        await pub.default_exchange.publish(
            aio_pika.Message(b"", headers={H_MARKER: token}),
            stream,
            mandatory=False,
            timeout=timeout,
        )
        out: list[AbstractIncomingMessage] = []
        channel = await open_channel(conn, confirms=False)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        try:
            await channel.set_qos(prefetch_count=1000)
            await watch_channel(channel, inbox)
            queue = await channel.get_queue(stream, ensure=False)
            await consume_stream(queue, inbox.put, offset)
            while True:
                item = await asyncio.wait_for(inbox.get(), timeout)
                if item is LOST:
                    raise Lost(stream)
                message: AbstractIncomingMessage = item
                await message.ack()
                headers = message.headers or {}
                if H_MARKER in headers:
                    if str_header(headers, H_MARKER) == token:
                        return out
                    continue
                if on_message is not None:
                    await on_message(message)
                else:
                    out.append(message)
        finally:
            self.close_channel(channel)
