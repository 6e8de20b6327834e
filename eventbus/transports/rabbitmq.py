"""``amqp://`` and ``amqps://``: RabbitMQ (3.9+, stream queues) through aio-pika.

URL: ``amqp://user:password@host:port/vhost?option=value&...``. Options come from the query
string or from keyword arguments (keyword arguments win):

=====================  ==========  ==========================================================
option                 default     meaning
=====================  ==========  ==========================================================
``publish_timeout``    30          seconds ``publish()`` keeps retrying before ``PublishError``
``persistent``         true        delivery mode 2 (written to disk) for published frames
``retention``          3600        seconds a finished run stays readable; also the age limit
                                   of the namespace log that seeds new ``start="first"`` groups
``max_run_age``        86400       seconds after which an unfinished run's stream is deleted
``sweep_interval``     300         seconds between two clean-ups of expired run streams
``reconnect_timeout``  120         seconds ``follow``/``consume`` try to reconnect before
                                   ``ConnectError``
``follow_prefetch``    1000        stream credit of a follower (frames in flight)
``segment_bytes``      8388608     stream segment size (retention deletes whole segments)
=====================  ==========  ==========================================================

aio-pika's own query options (``heartbeat``, ``timeout``, ``name``, ``auth``, ``cafile``,
``capath``, ``cadata``, ``keyfile``, ``certfile``, ``no_verify_ssl``) are passed through.
Anything else raises :class:`~eventbus.ConfigurationError`.

Topology of namespace ``ns`` (see ``docs/rabbitmq.md`` for the why):

* exchange ``eventbus.ns`` (topic, durable). A frame of run ``r`` is published once, with
  routing key ``f.<r>`` (fan-out frame) or ``h.<r>`` (heartbeat / non-fan-out frame);
* one stream queue per run, ``eventbus.ns.run.<r>``, bound with ``f.<r>`` and ``h.<r>``:
  what ``follow`` reads, from any offset (positions are stream offsets);
* the namespace log ``eventbus.ns.log``, a stream bound with ``f.#`` and trimmed by
  ``retention``: what seeds a new ``start="first"`` group;
* the run registry ``eventbus.ns.registry``, a stream of run start/end records that
  drives the deletion of expired run streams (stream queues cannot expire on their own);
* per group ``g``: a quorum queue ``eventbus.ns.group.g`` bound with ``f.#``, its dead
  letters in the classic queue ``eventbus.ns.group.g.dead``, and the transient exclusive
  queue ``eventbus.ns.group.g.lock`` while the group is being created.

Beyond the transport protocol: :meth:`RabbitMQTransport.sweep` (delete expired run streams;
publishers run it every ``sweep_interval``) and :meth:`RabbitMQTransport.delete_namespace`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

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
    PublishError,
    TransportError,
)
from . import check_name, redact_url
from ._base import DeadLetter, Entry, GroupOptions, OutFrame

__all__ = ["RabbitMQTransport"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# query options aio-pika/aiormq read from the URL themselves
_PASSTHROUGH = frozenset(
    {
        "heartbeat",
        "timeout",
        "name",
        "auth",
        "cafile",
        "capath",
        "cadata",
        "keyfile",
        "certfile",
        "no_verify_ssl",
    }
)

_H_RUN = "x-eb-run"
_H_FINAL = "x-eb-final"
_H_MARKER = "x-eb-marker"
_H_REASON = "x-eb-reason"
_H_DELIVERIES = "x-eb-deliveries"
_H_POSITION = "x-eb-position"
_H_EVENT = "x-eb-event"
_H_AT = "x-eb-at"
_DECLARE_CHANNELS = 16  # channels declaring the new runs of one batch at once

_SAFE_RUN = re.compile(r"^[A-Za-z0-9_\-]{1,128}$")


class _StreamStarting(Exception):
    """A stream that exists but does not run yet refused a consumer.

    RabbitMQ (seen on 3.10) answers a declare of a stream that another client is creating
    at that moment before the stream runs; a consumer attached in that gap is refused with
    PRECONDITION_FAILED "... does not have a replica on the local node" (or the broker
    closes the connection with INTERNAL_ERROR, an ordinary connection loss). A new channel
    a moment later succeeds.
    """


# Errors that a new connection (or channel) may cure.
_RETRYABLE: tuple[type[BaseException], ...] = (
    _StreamStarting,
    amqp_errors.AMQPConnectionError,
    amqp_errors.ChannelInvalidStateError,
    amqp_errors.ChannelNotFoundEntity,
    amqp_errors.DeliveryError,
    ConnectionError,
    OSError,
    asyncio.TimeoutError,
)


class _ConnectionGone(amqp_errors.AMQPConnectionError):
    """The connection died under us (aiormq refuses new channels with a RuntimeError)."""


async def _open_channel(conn: AbstractConnection, *, confirms: bool) -> AbstractChannel:
    """A new channel; raises a retryable connection error if the connection is dead."""
    try:
        channel: AbstractChannel = await conn.channel(publisher_confirms=confirms)
    except RuntimeError as exc:  # "<Connection ...> closed": aio-pika has not noticed yet
        raise _ConnectionGone(str(exc)) from exc
    return channel


async def _consume_stream(
    queue: AbstractQueue, callback: Callable[[AbstractIncomingMessage], Any], offset: str | int
) -> None:
    """Attach a consumer to a stream queue from ``offset``.

    Raises:
        _StreamStarting: the stream does not run yet (retryable, on a new channel).
    """
    try:
        await queue.consume(callback, no_ack=False, arguments={"x-stream-offset": offset})
    except amqp_errors.ChannelPreconditionFailed as exc:
        if "replica" not in str(exc):
            raise
        raise _StreamStarting(str(exc)) from exc


class _Lost(Exception):
    """The channel a consumer or follower read from went away."""


_RESUMABLE: tuple[type[BaseException], ...] = (*_RETRYABLE, _Lost)
# a consumer also outlives a dead letter it could not store: the frame comes back
_RESUMABLE_GROUP: tuple[type[BaseException], ...] = (*_RESUMABLE, PublishError)


_LOST = object()


def _run_key(run_id: str) -> str:
    """A routing-key word and queue-name suffix for a run id.

    Topic routing keys split on dots and give ``*``/``#`` a meaning, so ids outside a safe
    alphabet are hashed. The hash starts with ``:``, which no safe id contains (so the two
    cannot collide) and which queue names accept (pamqp allows ``[A-Za-z0-9_.:-]``).
    """
    if _SAFE_RUN.match(run_id):
        return run_id
    return ":" + hashlib.sha256(run_id.encode()).hexdigest()[:40]


def _tag(consumer: str) -> str:
    return f"{consumer}.{uuid.uuid4().hex[:12]}"


def _parse_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _int_header(headers: dict[str, Any], name: str, default: int = 0) -> int:
    value = headers.get(name, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _str_header(headers: dict[str, Any], name: str, default: str = "") -> str:
    value = headers.get(name, default)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


@dataclass
class _Held:
    """A delivery the application holds, with its visibility deadline."""

    message: AbstractIncomingMessage
    deadline: float
    settled: bool = False


@dataclass
class _ConsumerState:
    """What one ``consume`` generator holds on its current channel."""

    channel: AbstractChannel | None = None
    held: dict[int, _Held] = field(default_factory=dict)
    queue: AbstractQueue | None = None
    inbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    tag: str | None = None  # None: not subscribed (paused by the watchdog)
    yielded_at: float | None = None  # None while the generator waits for the next frame
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settling: set[asyncio.Task[None]] = field(default_factory=set)  # dead letters in flight


class _RabbitDelivery:
    """One frame handed to one consumer of a group (see :class:`eventbus.transports.Delivery`)."""

    __slots__ = ("_group", "_held", "_state", "_transport", "data", "deliveries", "position")

    def __init__(
        self,
        transport: RabbitMQTransport,
        group: str,
        state: _ConsumerState,
        held: _Held,
        deliveries: int,
    ) -> None:
        self._transport = transport
        self._group = group
        self._state = state
        self._held = held
        message = held.message
        self.data: bytes = message.body
        self.position: str = message.message_id or ""
        self.deliveries: int = deliveries

    def _take(self) -> bool:
        """Claim the right to settle; False when it was settled, expired or its channel died.

        The frame stays in ``held`` until :meth:`_release`, so a finished consumer keeps
        its channel open until the ack has been sent.
        """
        held = self._held
        if held.settled:
            return False
        held.settled = True
        return not held.message.channel.is_closed

    def _release(self) -> None:
        self._state.held.pop(id(self._held), None)

    async def ack(self) -> None:
        """Ack it. A frame whose channel died or whose visibility timeout passed was already
        returned to the queue: the ack is then dropped (it will be redelivered)."""
        if not self._take():
            log.debug("ack of %s dropped: it was already returned to the queue", self.position)
            return
        try:
            await self._held.message.ack()
        except _RETRYABLE as exc:
            log.warning("ack of %s failed (%r); it will be redelivered", self.position, exc)
        finally:
            self._release()

    async def reject(self, reason: str) -> None:
        """Move it to the group's dead letters with ``reason``, then ack it.

        Raises:
            PublishError: the dead letter could not be stored within ``publish_timeout``
                (the frame stays un-acked and will be redelivered).
        """
        if not self._take():
            log.debug("reject of %s dropped: it was already returned to the queue", self.position)
            return
        try:
            await self._transport._dead_letter(
                self._group, self._held.message, reason, self.deliveries
            )
            await self._held.message.ack()
        except _RETRYABLE as exc:
            log.warning("ack of rejected %s failed (%r)", self.position, exc)
        except BaseException:
            # not dead-lettered: let the watchdog return it at its visibility timeout
            self._held.settled = False
            raise
        finally:
            if self._held.settled:
                self._release()


class _Outage:
    """The reconnect bookkeeping of one follower or consumer: since when the broker has
    been failing it, and how long to pause before the next attempt."""

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: float) -> None:
        self._loop = loop
        self._limit = limit
        self._since: float | None = None
        self._delay = 0.05

    def deadline(self) -> float:
        """When reconnecting gives up (``limit`` after the outage began, or from now)."""
        return (self._since or self._loop.time()) + self._limit

    def over(self) -> None:
        self._since = None
        self._delay = 0.05

    def check(self, what: str, exc: BaseException) -> None:
        """Note a failure; raise ConnectError if the outage has lasted longer than ``limit``."""
        now = self._loop.time()
        self._since = self._since or now
        if now - self._since > self._limit:
            raise ConnectError(f"{what}: RabbitMQ kept failing: {exc!r}") from exc

    async def pause(self) -> None:
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, 2.0)


class RabbitMQTransport:
    """The RabbitMQ transport (see the module docstring and ``docs/rabbitmq.md``).

    Raises:
        ConfigurationError: malformed URL or unknown/invalid option.
    """

    def __init__(self, url: str, namespace: str, **options: Any) -> None:
        self.namespace = check_name("namespace", namespace)
        self._safe_url = redact_url(url)
        try:
            parts = urlsplit(url)
            _ = parts.port
        except ValueError as exc:
            raise ConfigurationError(f"malformed AMQP URL {self._safe_url!r}") from exc
        if parts.scheme.lower() not in ("amqp", "amqps") or not parts.hostname:
            raise ConfigurationError(f"not an amqp:// or amqps:// URL: {self._safe_url!r}")
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        query.update(
            {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in options.items()}
        )
        try:
            self.publish_timeout = float(query.pop("publish_timeout", 30))
            self.persistent = _parse_bool(query.pop("persistent", "true"))
            self.retention = float(query.pop("retention", 3600))
            self.max_run_age = float(query.pop("max_run_age", 86400))
            self.sweep_interval = float(query.pop("sweep_interval", 300))
            self.reconnect_timeout = float(query.pop("reconnect_timeout", 120))
            self.follow_prefetch = int(query.pop("follow_prefetch", 1000))
            self.segment_bytes = int(query.pop("segment_bytes", 8 * 1024 * 1024))
        except ValueError as exc:
            raise ConfigurationError(f"bad amqp:// option in {self._safe_url!r}: {exc}") from exc
        unknown = sorted(set(query) - _PASSTHROUGH)
        if unknown:
            raise ConfigurationError(
                f"unknown amqp:// option(s) {', '.join(unknown)} in {self._safe_url!r}; known: "
                "publish_timeout, persistent, retention, max_run_age, sweep_interval, "
                "reconnect_timeout, follow_prefetch, segment_bytes, "
                + ", ".join(sorted(_PASSTHROUGH))
            )
        for name, value in (
            ("publish_timeout", self.publish_timeout),
            ("retention", self.retention),
            ("max_run_age", self.max_run_age),
            ("sweep_interval", self.sweep_interval),
            ("reconnect_timeout", self.reconnect_timeout),
        ):
            if not value > 0:
                raise ConfigurationError(f"amqp:// option {name} must be > 0, got {value}")
        if self.follow_prefetch < 1 or self.segment_bytes < 4096:
            raise ConfigurationError("follow_prefetch must be >= 1 and segment_bytes >= 4096")
        self._url = urlunsplit(
            (parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment)
        )

        prefix = f"eventbus.{namespace}"
        self.exchange_name = prefix
        self.log_queue = f"{prefix}.log"
        self.registry_queue = f"{prefix}.registry"
        self._run_prefix = f"{prefix}.run."
        self._group_prefix = f"{prefix}.group."

        self._conn: AbstractConnection | None = None
        self._conn_lock = asyncio.Lock()
        self._pub: tuple[AbstractChannel, AbstractExchange] | None = None  # confirm channel
        self._pub_lock = asyncio.Lock()
        self._topology_ready = False
        self._runs_declared: set[str] = set()
        # publish's channel for declaring run streams, kept open (a channel round trip
        # less per new run), and registry records still in flight
        self._decl: tuple[AbstractConnection, AbstractChannel] | None = None
        self._registering: set[asyncio.Task[None]] = set()
        self._last_sweep = 0.0
        self._closed = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._group_locks: dict[str, asyncio.Lock] = {}

    # -- names -------------------------------------------------------------------------

    def run_queue(self, run_id: str) -> str:
        """The stream queue that holds run ``run_id``."""
        return self._run_prefix + _run_key(run_id)

    def group_queue(self, group: str) -> str:
        """The quorum queue of consumer group ``group``."""
        return self._group_prefix + group

    def dead_letter_queue(self, group: str) -> str:
        """The queue of the dead letters of consumer group ``group``."""
        return self._group_prefix + group + ".dead"

    def _lock_queue(self, group: str) -> str:
        return self._group_prefix + group + ".lock"

    def _log_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "stream",
            "x-max-age": f"{max(1, round(self.retention))}s",
            "x-stream-max-segment-size-bytes": self.segment_bytes,
        }

    def _registry_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "stream",
            "x-max-age": f"{max(1, round(self.max_run_age + self.retention))}s",
            "x-stream-max-segment-size-bytes": 1024 * 1024,
        }

    # -- connection --------------------------------------------------------------------

    async def connect(self) -> None:
        """Connect once and declare the namespace topology.

        Raises:
            AuthenticationError: bad credentials or a vhost the user may not use.
            ConnectError: the broker is unreachable.
            TransportError: the broker refused the topology (e.g. arguments that differ
                from an existing declaration).
        """
        self._closed = False
        conn = await self._connection(deadline=None)
        try:
            await self._ensure_topology(conn)
            # the channels publish uses, opened now rather than in front of the first
            # frames of the first run (subscribers' transports open them too: two channels)
            await self._publisher(conn)
            self._decl = (conn, await _open_channel(conn, confirms=False))
        except amqp_errors.ChannelAccessRefused as exc:
            raise AuthenticationError(
                f"RabbitMQ at {self._safe_url!r} refused access to the eventbus topology: {exc}"
            ) from exc
        except amqp_errors.AMQPChannelError as exc:
            raise TransportError(
                f"RabbitMQ at {self._safe_url!r} refused the eventbus topology: {exc}"
            ) from exc
        except _RETRYABLE as exc:
            raise ConnectError(f"lost RabbitMQ at {self._safe_url!r}: {exc!r}") from exc

    async def aclose(self) -> None:
        """Close the connection; running ``follow``/``consume`` iterations then raise."""
        self._closed = True
        if self._registering:  # the sweeper's records of runs started: let them land
            await asyncio.wait(self._registering, timeout=5)
        conn, self._conn, self._pub, self._decl = self._conn, None, None, None
        if conn is not None and not conn.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)
        tasks = list(self._tasks)
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    def _check_open(self) -> None:
        if self._closed:
            raise TransportError("the RabbitMQ transport is closed")

    async def _connect_once(self) -> AbstractConnection:
        try:
            # named, so that an operator (and the tests) can tell whose connection it is
            return await aio_pika.connect(
                self._url, client_properties={"connection_name": f"eventbus {self.namespace}"}
            )
        except amqp_errors.ProbableAuthenticationError as exc:
            raise AuthenticationError(
                f"RabbitMQ at {self._safe_url!r} refused the credentials"
            ) from exc
        except amqp_errors.AuthenticationError as exc:
            raise AuthenticationError(
                f"RabbitMQ at {self._safe_url!r} refused the authentication: {exc}"
            ) from exc
        except (amqp_errors.ConnectionNotAllowed, amqp_errors.ProtocolSyntaxError) as exc:
            # A Connection.Close instead of OpenOk: the vhost does not exist or the user
            # may not use it (aiormq reports that as an unexpected frame).
            raise AuthenticationError(
                f"RabbitMQ at {self._safe_url!r} refused the virtual host "
                f"(does it exist, and may the user access it?)"
            ) from exc
        except (TimeoutError, amqp_errors.AMQPConnectionError, OSError) as exc:
            raise ConnectError(f"cannot reach RabbitMQ at {self._safe_url!r}: {exc!r}") from exc
        except ValueError as exc:
            raise ConfigurationError(f"bad AMQP URL {self._safe_url!r}: {exc}") from exc

    async def _connection(
        self, deadline: float | None, stale: AbstractConnection | None = None
    ) -> AbstractConnection:
        """The live connection, reconnecting with backoff until ``deadline`` (loop time).

        ``deadline=None`` makes one attempt. ``stale``: a connection the caller saw fail,
        replaced even if it does not know yet that it is closed.

        Raises:
            AuthenticationError: at once, never retried.
            ConnectError: no connection before ``deadline``.
            TransportError: the transport is closed.
        """
        loop = asyncio.get_running_loop()
        delay = 0.05
        async with self._conn_lock:
            while True:
                self._check_open()
                conn = self._conn
                if conn is not None and conn is stale:
                    self._conn = self._pub = None
                    self._discard(conn)
                    conn = None
                if conn is not None and not conn.is_closed:
                    return conn
                self._pub = None
                try:
                    conn = await self._connect_once()
                except ConnectError:
                    if deadline is None or loop.time() + delay > deadline:
                        raise
                    log.info("RabbitMQ at %s unreachable; retrying in %.2fs", self._safe_url, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                if self._closed:
                    self._discard(conn)
                    self._check_open()
                self._conn = conn
                self._runs_declared.clear()
                self._topology_ready = False
                return conn

    def _discard(self, conn: AbstractConnection) -> None:
        if not conn.is_closed:
            self._spawn(asyncio.wait_for(conn.close(), 10))

    def _spawn(self, coro: Awaitable[Any]) -> None:
        """Run cleanup in the background: a cancelled caller must not leave it half done."""

        async def quiet() -> None:
            with contextlib.suppress(Exception):
                await coro

        task = asyncio.get_running_loop().create_task(quiet())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _close_channel(self, channel: AbstractChannel | None) -> None:
        if channel is not None and not channel.is_closed:
            self._spawn(asyncio.wait_for(channel.close(), 10))

    async def _retrying(
        self,
        what: str,
        op: Callable[[AbstractConnection], Awaitable[T]],
        deadline: float,
    ) -> T:
        """Run ``op`` on a live connection, reconnecting and retrying until ``deadline``.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        loop = asyncio.get_running_loop()
        delay = 0.05
        stale: AbstractConnection | None = None
        while True:
            conn = await self._connection(deadline, stale)
            try:
                return await op(conn)
            except amqp_errors.ChannelAccessRefused as exc:
                raise AuthenticationError(f"{what}: RabbitMQ refused access: {exc}") from exc
            except _RETRYABLE as exc:
                if loop.time() + delay > deadline:
                    raise ConnectError(f"{what}: RabbitMQ kept failing: {exc!r}") from exc
                log.info("%s failed (%r); retrying", what, exc)
                stale = conn if isinstance(exc, amqp_errors.AMQPConnectionError) else None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except amqp_errors.AMQPChannelError as exc:
                raise TransportError(f"{what}: RabbitMQ refused: {exc}") from exc

    # -- topology ----------------------------------------------------------------------

    async def _ensure_topology(self, conn: AbstractConnection) -> None:
        if self._topology_ready:
            return
        channel = await _open_channel(conn, confirms=False)
        try:
            exchange = await channel.declare_exchange(
                self.exchange_name, aio_pika.ExchangeType.TOPIC, durable=True
            )
            log_q = await self._declare_stream(channel, self.log_queue, self._log_arguments())
            await log_q.bind(exchange, "f.#")
            await self._declare_stream(channel, self.registry_queue, self._registry_arguments())
        finally:
            self._close_channel(channel)
        self._topology_ready = True

    async def _declare_stream(
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

    async def _declare_run(
        self, channel: AbstractChannel, run_id: str, *, publishing: bool = False
    ) -> tuple[AbstractQueue, bool]:
        """Declare the run's stream and its binding; True when this call created it
        (``publishing``: declared as if new, since a publisher's run is new or active).
        """
        name = self.run_queue(run_id)
        arguments = {
            "x-queue-type": "stream",
            "x-stream-max-segment-size-bytes": self.segment_bytes,
        }
        created = True
        if publishing:
            queue = await self._declare_stream(channel, name, arguments)
        else:
            try:
                queue = await channel.declare_queue(name, passive=True)
                created = False
            except amqp_errors.ChannelNotFoundEntity:
                await channel.reopen()
                queue = await self._declare_stream(channel, name, arguments)
        # one binding for both kinds of frames of the run: f.<r> and h.<r>
        await queue.bind(self.exchange_name, f"*.{_run_key(run_id)}")
        return queue, created

    # -- publishing --------------------------------------------------------------------

    async def _publisher(
        self, conn: AbstractConnection
    ) -> tuple[AbstractChannel, AbstractExchange]:
        async with self._pub_lock:
            pub = self._pub
            if pub is not None and not pub[0].is_closed and self._conn is conn:
                return pub
            await self._ensure_topology(conn)
            channel = await _open_channel(conn, confirms=True)
            exchange = await channel.get_exchange(self.exchange_name, ensure=False)
            self._pub = (channel, exchange)
            return channel, exchange

    def _message(self, frame: OutFrame, message_id: str) -> aio_pika.Message:
        headers: dict[str, Any] = {_H_RUN: frame.run_id}
        if frame.final:
            headers[_H_FINAL] = True
        return aio_pika.Message(
            frame.data,
            headers=headers,
            message_id=message_id,
            content_type="application/octet-stream",
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if self.persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
        )

    async def publish(self, frames: Sequence[OutFrame]) -> None:
        """Publish every frame as one AMQP message, all in flight at once; return when the
        broker confirmed them all.

        After a connection loss the unconfirmed suffix of the batch is published again, in
        order, on a new connection (frames before it may then appear twice, never out of
        order).

        Raises:
            AuthenticationError: credentials refused (not retried).
            PublishError: not every frame confirmed within ``publish_timeout``, a broker
                refusal, or the transport is closed.
        """
        if self._closed:
            raise PublishError("the RabbitMQ transport is closed")
        if not frames:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        messages = [
            (f"{'f' if f.fanout else 'h'}.{_run_key(f.run_id)}", self._message(f, uuid.uuid4().hex))
            for f in frames
        ]
        done = 0  # frames[:done] are confirmed
        delay = 0.05
        stale: AbstractConnection | None = None
        conn: AbstractConnection | None = None
        channel: AbstractChannel | None = None
        while True:
            try:
                conn = await self._connection(deadline, stale)
                stale = None
                channel, exchange = await self._publisher(conn)
                await self._declare_runs(conn, frames[done:])
                remaining = max(0.001, deadline - loop.time())
                results: list[Any]
                if len(messages) - done == 1:  # the usual batch: no task for gather to make
                    rk, m = messages[done]
                    try:
                        results = [
                            await exchange.publish(m, rk, mandatory=False, timeout=remaining)
                        ]
                    except Exception as exc:
                        results = [exc]
                else:
                    results = await asyncio.gather(
                        *(
                            exchange.publish(m, rk, mandatory=False, timeout=remaining)
                            for rk, m in messages[done:]
                        ),
                        return_exceptions=True,
                    )
                failure: BaseException | None = None
                for result in results:
                    if isinstance(result, BaseException):
                        failure = result
                        break
                    done += 1
                if failure is None:
                    break
                raise failure
            except (AuthenticationError, PublishError):
                raise
            except ConnectError as exc:
                raise PublishError(
                    f"publish to {self._safe_url!r}: {len(frames) - done} frame(s) not "
                    f"confirmed within {self.publish_timeout:g}s"
                ) from exc
            except TransportError:
                raise
            except amqp_errors.ChannelAccessRefused as exc:
                raise AuthenticationError(f"publish refused by RabbitMQ: {exc}") from exc
            except _RETRYABLE as exc:
                if loop.time() + delay > deadline:
                    raise PublishError(
                        f"publish to {self._safe_url!r}: {len(frames) - done} frame(s) not "
                        f"confirmed within {self.publish_timeout:g}s"
                    ) from exc
                log.info(
                    "publish interrupted (%r); re-publishing %d frame(s)", exc, len(frames) - done
                )
                if isinstance(exc, amqp_errors.AMQPConnectionError):
                    stale = conn
                self._pub = None
                self._close_channel(channel)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
            except amqp_errors.AMQPChannelError as exc:
                raise PublishError(f"publish refused by RabbitMQ: {exc}") from exc
        finals = [f.run_id for f in frames if f.final]
        if finals and conn is not None:
            self._register_later(conn, "end", finals)
        self._maybe_sweep()

    async def _declare_runs(self, conn: AbstractConnection, frames: Sequence[OutFrame]) -> None:
        new = [r for r in dict.fromkeys(f.run_id for f in frames) if r not in self._runs_declared]
        if not new:
            return
        decl = self._decl
        if decl is None or decl[0] is not conn or decl[1].is_closed:
            decl = self._decl = (conn, await _open_channel(conn, confirms=False))
        # a channel does one declaration at a time: a batch that starts many runs (a
        # worker taking up hundreds at once) declares them over several channels
        extra: list[AbstractChannel] = []

        async def declare(channel: AbstractChannel, run_ids: list[str]) -> None:
            for run_id in run_ids:
                await self._declare_run(channel, run_id, publishing=True)

        try:
            for _ in range(min(_DECLARE_CHANNELS, len(new)) - 1):
                extra.append(await _open_channel(conn, confirms=False))
            channels = [decl[1], *extra]
            results = await asyncio.gather(
                *(declare(ch, new[i :: len(channels)]) for i, ch in enumerate(channels)),
                return_exceptions=True,
            )
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        except BaseException:
            self._decl = None
            self._close_channel(decl[1])
            raise
        finally:
            for channel in extra:
                self._close_channel(channel)
        self._runs_declared.update(new)
        self._register_later(conn, "start", new)

    # -- registry and clean-up of run streams ------------------------------------------

    def _register_later(self, conn: AbstractConnection, event: str, run_ids: list[str]) -> None:
        """:meth:`_register` off the publish path (a confirm round trip less per batch
        that starts or ends a run); ``aclose`` waits for it."""
        task = asyncio.get_running_loop().create_task(self._register(conn, event, run_ids))
        self._registering.add(task)
        task.add_done_callback(self._registering.discard)

    async def _register(self, conn: AbstractConnection, event: str, run_ids: list[str]) -> None:
        """Record run starts/ends for the sweeper; best effort (a lost record only delays
        the deletion of a stream until ``max_run_age``)."""
        try:
            channel, _ = await self._publisher(conn)
            # integer milliseconds: pamqp sends a Python float as a 32-bit float, which
            # rounds an epoch time to about two minutes
            now_ms = int(time.time() * 1000)
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            b"",
                            headers={_H_RUN: run_id, _H_EVENT: event, _H_AT: now_ms},
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        self.registry_queue,
                        mandatory=False,
                        timeout=self.publish_timeout,
                    )
                    for run_id in run_ids
                )
            )
        except Exception as exc:
            log.warning("could not record run %s in the registry: %r", event, exc)

    def _maybe_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < self.sweep_interval:
            return
        self._last_sweep = now
        task = asyncio.get_running_loop().create_task(self._sweep_quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sweep_quietly(self) -> None:
        try:
            await self.sweep()
        except Exception as exc:
            if not self._closed:
                log.warning("sweeping expired run streams failed: %r", exc)

    async def sweep(self) -> list[str]:
        """Delete the streams of runs that ended more than ``retention`` seconds ago or
        started more than ``max_run_age`` seconds ago; return their run ids.

        Publishers call it every ``sweep_interval`` seconds in the background.

        Raises:
            TransportError: the broker could not be used.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout

        async def op(conn: AbstractConnection) -> list[str]:
            await self._ensure_topology(conn)
            records = await self._read_until_marker(conn, self.registry_queue, "first")
            started: dict[str, float] = {}
            ended: dict[str, float] = {}
            for message in records:
                headers = dict(message.headers or {})
                run_id = _str_header(headers, _H_RUN)
                at = _int_header(headers, _H_AT) / 1000
                event = _str_header(headers, _H_EVENT)
                if event not in ("start", "end"):
                    continue  # a group record: groups are never swept
                target = ended if event == "end" else started
                target[run_id] = max(at, target.get(run_id, 0.0))
            now = time.time()
            expired = [
                r
                for r in set(started) | set(ended)
                if (r in ended and now - ended[r] > self.retention)
                or (r not in ended and now - started.get(r, now) > self.max_run_age)
            ]
            if expired:
                channel = await _open_channel(conn, confirms=False)
                try:
                    for run_id in expired:
                        await channel.queue_delete(
                            self.run_queue(run_id), if_unused=False, if_empty=False
                        )
                        self._runs_declared.discard(run_id)
                finally:
                    self._close_channel(channel)
            return expired

        return await self._retrying("sweep", op, deadline)

    async def delete_namespace(self) -> None:
        """Delete every queue and the exchange of this namespace: run streams, the log, the
        registry, group queues and their dead letters. Running consumers and followers of
        the namespace are cancelled by the broker. Not part of the transport protocol: an
        operator's (and the test suite's) clean-up.

        Groups created by a version without group registry records are not found.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        loop = asyncio.get_running_loop()

        async def op(conn: AbstractConnection) -> None:
            await self._ensure_topology(conn)
            records = await self._read_until_marker(conn, self.registry_queue, "first")
            names: list[str] = []
            for message in records:
                headers = dict(message.headers or {})
                name = _str_header(headers, _H_RUN)
                if _str_header(headers, _H_EVENT) == "group":
                    names += [
                        self.group_queue(name),
                        self.dead_letter_queue(name),
                        self._lock_queue(name),
                    ]
                else:
                    names.append(self.run_queue(name))
            names += [self.log_queue, self.registry_queue]
            channel = await _open_channel(conn, confirms=False)
            try:
                for name in dict.fromkeys(names):
                    await channel.queue_delete(name, if_unused=False, if_empty=False)
                await channel.exchange_delete(self.exchange_name)
            finally:
                self._close_channel(channel)
            self._topology_ready = False
            self._runs_declared.clear()
            self._pub = None

        await self._retrying("delete namespace", op, loop.time() + self.publish_timeout)

    async def _read_until_marker(
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
        token = uuid.uuid4().hex
        pub, _ = await self._publisher(conn)
        await pub.default_exchange.publish(
            aio_pika.Message(b"", headers={_H_MARKER: token}),
            stream,
            mandatory=False,
            timeout=self.publish_timeout,
        )
        out: list[AbstractIncomingMessage] = []
        channel = await _open_channel(conn, confirms=False)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        try:
            await channel.set_qos(prefetch_count=1000)
            await self._watch_channel(channel, inbox)
            queue = await channel.get_queue(stream, ensure=False)
            await _consume_stream(queue, inbox.put, offset)
            while True:
                item = await asyncio.wait_for(inbox.get(), self.publish_timeout)
                if item is _LOST:
                    raise _Lost(stream)
                message: AbstractIncomingMessage = item
                await message.ack()
                headers = message.headers or {}
                if _H_MARKER in headers:
                    if _str_header(headers, _H_MARKER) == token:
                        return out
                    continue
                if on_message is not None:
                    await on_message(message)
                else:
                    out.append(message)
        finally:
            self._close_channel(channel)

    # -- following a run ---------------------------------------------------------------

    async def _watch_channel(self, channel: AbstractChannel, inbox: asyncio.Queue[Any]) -> None:
        """Wake the reader of ``inbox`` when the channel closes or the broker cancels the
        consumer (a quorum leader move, a deleted queue): aio-pika reports neither to a
        consumer that only waits for messages."""

        def lost(*_: Any) -> None:
            inbox.put_nowait(_LOST)

        channel.close_callbacks.add(lost)
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(lost)

    async def follow(self, run_id: str, *, start: str | None = None) -> AsyncIterator[Entry]:
        """Yield the run's frames from its stream queue, from the first or from ``start``
        (a position yielded before, inclusive); wait for more; never end by itself.

        After a connection loss it reconnects and resumes after the last yielded entry.

        Raises:
            ConfigurationError: ``start`` is not a position of this transport.
            AuthenticationError: access refused.
            ConnectError: no connection for ``reconnect_timeout`` seconds.
            TransportError: the transport was closed.
        """
        self._check_open()
        next_offset: int | None = None
        if start is not None:
            try:
                next_offset = int(start)
            except ValueError:
                raise ConfigurationError(f"not an amqp:// position: {start!r}") from None
            if next_offset < 0:
                raise ConfigurationError(f"not an amqp:// position: {start!r}")
        loop = asyncio.get_running_loop()
        outage = _Outage(loop, self.reconnect_timeout)
        stale: AbstractConnection | None = None
        conn: AbstractConnection | None = None
        while True:
            channel: AbstractChannel | None = None
            try:
                deadline = outage.deadline()
                conn = await self._connection(deadline, stale)
                stale = None
                await self._ensure_topology(conn)
                channel = await _open_channel(conn, confirms=False)
                # declared first: a declare of a missing queue reopens the channel, and
                # a stream refuses a consumer on a channel without prefetch
                queue, created = await self._declare_run(channel, run_id)
                await channel.set_qos(prefetch_count=self.follow_prefetch)
                if created:
                    await self._register(conn, "start", [run_id])
                inbox: asyncio.Queue[Any] = asyncio.Queue()
                await self._watch_channel(channel, inbox)
                await _consume_stream(
                    queue, inbox.put, "first" if next_offset is None else next_offset
                )
                outage.over()
                while True:
                    item = await inbox.get()
                    if item is _LOST:
                        raise _Lost(run_id)
                    message: AbstractIncomingMessage = item
                    # the ack is stream credit, not removal
                    await message.ack()
                    offset = _int_header(dict(message.headers or {}), "x-stream-offset", -1)
                    if offset < 0 or (next_offset is not None and offset < next_offset):
                        continue  # a stream attaches at a chunk boundary: skip what was read
                    next_offset = offset + 1
                    yield Entry(str(offset), message.body)
            except amqp_errors.ChannelAccessRefused as exc:
                raise AuthenticationError(
                    f"follow {run_id}: RabbitMQ refused access: {exc}"
                ) from exc
            except _RESUMABLE as exc:
                self._check_open()
                outage.check(f"follow {run_id}", exc)
                log.info("follow %s interrupted (%r); resuming at %s", run_id, exc, next_offset)
                if isinstance(exc, amqp_errors.AMQPConnectionError):
                    stale = conn
                await outage.pause()
            except amqp_errors.AMQPChannelError as exc:
                raise TransportError(f"follow {run_id}: RabbitMQ refused: {exc}") from exc
            finally:
                self._close_channel(channel)

    # -- consumer groups ---------------------------------------------------------------

    async def _group_exists(self, conn: AbstractConnection, group: str) -> bool:
        channel = await _open_channel(conn, confirms=False)
        try:
            await channel.declare_queue(self.dead_letter_queue(group), passive=True)
            return True
        except amqp_errors.ChannelNotFoundEntity:
            return False
        finally:
            self._close_channel(channel)

    async def _ensure_group(
        self, conn: AbstractConnection, group: str, options: GroupOptions, deadline: float
    ) -> None:
        """Create the group's queues once, seeding them from the namespace log for
        ``start="first"``.

        The dead-letter queue is declared last: it marks a complete creation, so a creator
        that died half-way is redone by the next consumer. Creators exclude each other with
        an exclusive queue (RabbitMQ drops it with the connection of a dead creator).
        """
        if await self._group_exists(conn, group):
            return
        # the exclusive queue excludes other connections only: consumers sharing this
        # transport's connection take an in-process lock first
        async with self._group_locks.setdefault(group, asyncio.Lock()):
            await self._ensure_group_locked(conn, group, options, deadline)

    async def _ensure_group_locked(
        self, conn: AbstractConnection, group: str, options: GroupOptions, deadline: float
    ) -> None:
        loop = asyncio.get_running_loop()
        delay = 0.02
        while True:
            lock = await _open_channel(conn, confirms=False)
            try:
                await lock.declare_queue(self._lock_queue(group), exclusive=True, auto_delete=True)
            except amqp_errors.ChannelLockedResource:
                self._close_channel(lock)
                if loop.time() > deadline:
                    raise TransportError(f"group {group}: its creation did not finish") from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                if await self._group_exists(conn, group):
                    return
                continue
            try:
                if await self._group_exists(conn, group):
                    return
                await self._create_group(conn, lock, group, options)
                return
            finally:
                with contextlib.suppress(Exception):
                    await lock.queue_delete(self._lock_queue(group))
                self._close_channel(lock)

    async def _create_group(
        self, conn: AbstractConnection, channel: AbstractChannel, group: str, options: GroupOptions
    ) -> None:
        await self._ensure_topology(conn)
        name = self.group_queue(group)
        queue = await channel.declare_queue(
            name, durable=True, arguments={"x-queue-type": "quorum"}
        )
        await queue.bind(self.exchange_name, "f.#")
        if options.start == "first":
            # Frames published between the bind and the marker reach the group twice (live
            # and seeded): at-least-once, never lost.
            pub, _ = await self._publisher(conn)
            default = pub.default_exchange
            pending: list[Awaitable[Any]] = []

            async def copy(message: AbstractIncomingMessage) -> None:
                headers = dict(message.headers or {})
                headers.pop("x-stream-offset", None)
                pending.append(
                    default.publish(
                        aio_pika.Message(
                            message.body,
                            headers=headers,
                            message_id=message.message_id,
                            content_type=message.content_type,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        name,
                        mandatory=False,
                        timeout=self.publish_timeout,
                    )
                )
                if len(pending) >= 500:
                    batch = pending[:]
                    pending.clear()
                    await asyncio.gather(*batch)

            await self._read_until_marker(conn, self.log_queue, "first", on_message=copy)
            await asyncio.gather(*pending)
        await channel.declare_queue(
            self.dead_letter_queue(group), durable=True, arguments={"x-queue-type": "classic"}
        )
        await self._register(conn, "group", [group])

    async def consume(
        self, group: str, consumer: str, options: GroupOptions
    ) -> AsyncIterator[_RabbitDelivery]:
        """Yield the group's frames for this consumer from the group's quorum queue,
        at-least-once, until cancelled.

        A frame delivered more than ``max_deliveries`` times goes to the dead letters
        instead; a frame held longer than ``visibility_timeout`` without ack is returned to
        the queue (``nack`` with requeue) for another consumer. After a connection loss or a
        broker cancel the consumer is re-established.

        Raises:
            ConfigurationError: bad group/consumer name or options.
            AuthenticationError: access refused.
            ConnectError: no connection for ``reconnect_timeout`` seconds.
            TransportError: the transport was closed, or the broker refused the group.
        """
        check_name("group", group)
        check_name("consumer", consumer)
        if options.prefetch < 1 or options.max_deliveries < 1 or not options.visibility_timeout > 0:
            raise ConfigurationError(f"bad group options: {options!r}")
        self._check_open()
        loop = asyncio.get_running_loop()
        outage = _Outage(loop, self.reconnect_timeout)
        stale: AbstractConnection | None = None
        ensured = False
        conn: AbstractConnection | None = None
        while True:
            state = _ConsumerState()
            watchdog: asyncio.Task[None] | None = None
            try:
                deadline = outage.deadline()
                conn = await self._connection(deadline, stale)
                stale = None
                if not ensured:
                    await self._ensure_group(conn, group, options, deadline)
                    ensured = True
                channel = await _open_channel(conn, confirms=False)
                state.channel = channel
                await channel.set_qos(prefetch_count=options.prefetch)
                inbox = state.inbox
                await self._watch_channel(channel, inbox)
                state.queue = await channel.get_queue(self.group_queue(group), ensure=False)
                watchdog = loop.create_task(
                    self._watchdog(state, consumer, options.visibility_timeout)
                )
                outage.over()
                while True:
                    if state.tag is None:  # new channel, or paused while the caller hung
                        async with state.lock:
                            state.tag = await state.queue.consume(
                                inbox.put, no_ack=False, consumer_tag=_tag(consumer)
                            )
                    state.yielded_at = None
                    item = await inbox.get()
                    if item is _LOST:
                        raise _Lost(group)
                    message: AbstractIncomingMessage = item
                    headers = dict(message.headers or {})
                    deliveries = _int_header(headers, "x-delivery-count") + 1
                    if deliveries > options.max_deliveries:
                        # Shielded: a consumer cancelled half-way would return the frame,
                        # adding a delivery and possibly a second dead letter.
                        settle = loop.create_task(
                            self._dead_letter_and_ack(
                                group,
                                message,
                                f"not acked after {deliveries - 1} deliveries",
                                deliveries - 1,
                            )
                        )
                        state.settling.add(settle)
                        settle.add_done_callback(state.settling.discard)
                        await asyncio.shield(settle)
                        continue
                    state.yielded_at = loop.time()
                    held = _Held(message, state.yielded_at + options.visibility_timeout)
                    state.held[id(held)] = held
                    yield _RabbitDelivery(self, group, state, held, deliveries)
            except amqp_errors.ChannelAccessRefused as exc:
                raise AuthenticationError(f"group {group}: RabbitMQ refused access: {exc}") from exc
            except _RESUMABLE_GROUP as exc:
                self._check_open()
                outage.check(f"group {group}", exc)
                log.info("consumer %s/%s interrupted (%r); re-consuming", group, consumer, exc)
                if isinstance(exc, amqp_errors.AMQPConnectionError):
                    stale = conn
                if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
                    ensured = False  # the group queue was deleted: create it again
                await outage.pause()
            except amqp_errors.AMQPChannelError as exc:
                raise TransportError(f"group {group}: RabbitMQ refused: {exc}") from exc
            finally:
                channel_open = state.channel is not None and not state.channel.is_closed
                if watchdog is not None and channel_open and (state.held or state.settling):
                    # The caller stopped iterating but may still ack or reject what it
                    # holds, and an ack is only valid on the channel that delivered it.
                    self._spawn(self._linger(state, watchdog))
                else:
                    if watchdog is not None:
                        watchdog.cancel()
                    for held in state.held.values():
                        held.settled = True  # closing the channel returns them
                    state.held.clear()
                    self._close_channel(state.channel)

    async def _linger(self, state: _ConsumerState, watchdog: asyncio.Task[None]) -> None:
        """Keep a finished consumer's channel until what it holds is settled or expired.

        The subscription is cancelled and the prefetched frames the caller never saw are
        returned at once; the watchdog still returns held frames at their visibility
        timeout, and the channel closes when none is left.
        """
        try:
            async with state.lock:
                tag, state.tag = state.tag, None
                if tag is not None and state.queue is not None:
                    with contextlib.suppress(Exception):
                        await state.queue.cancel(tag)
                while not state.inbox.empty():
                    item = state.inbox.get_nowait()
                    if item is not _LOST:
                        with contextlib.suppress(Exception):
                            await item.nack(requeue=True)
            if state.settling:
                await asyncio.wait(list(state.settling))
            for _ in itertools.count():  # until settled or expired (the watchdog's job)
                if not state.held or state.channel is None or state.channel.is_closed:
                    break
                await asyncio.sleep(0.05)
        finally:
            watchdog.cancel()
            self._close_channel(state.channel)

    async def _watchdog(self, state: _ConsumerState, consumer: str, visibility: float) -> None:
        """Enforce the visibility timeout on a consumer that is alive but hung.

        RabbitMQ returns un-acked frames only when the channel closes, so: a frame the
        caller has held for ``visibility`` seconds is returned (``nack`` + requeue) for
        another consumer; and when the caller has not asked for its next frame for that
        long, the subscription is cancelled and the prefetched frames it never saw are
        returned too, so they do not wait behind the hung caller (and a returned frame is
        not handed straight back to it). The subscription resumes at the caller's next
        request. Every return counts as a delivery in a quorum queue.
        """
        loop = asyncio.get_running_loop()
        period = min(max(visibility / 4, 0.02), 1.0)
        while True:
            await asyncio.sleep(period)
            now = loop.time()
            if (
                state.yielded_at is not None
                and now - state.yielded_at > visibility
                and state.tag is not None
                and state.queue is not None
            ):
                async with state.lock:
                    tag, state.tag = state.tag, None
                    try:
                        await state.queue.cancel(tag)
                    except Exception as exc:  # the channel died: the frames come back anyway
                        log.debug("could not pause consumer %s: %r", consumer, exc)
                    keep: list[Any] = []
                    while not state.inbox.empty():
                        item = state.inbox.get_nowait()
                        if item is _LOST:
                            keep.append(item)
                            continue
                        with contextlib.suppress(Exception):
                            await item.nack(requeue=True)
                    for item in keep:
                        state.inbox.put_nowait(item)
                log.info(
                    "consumer %s hung for %.1fs: paused, prefetched frames returned",
                    consumer,
                    visibility,
                )
            for key, held in list(state.held.items()):
                if held.deadline <= now and not held.settled:
                    held.settled = True
                    del state.held[key]
                    try:
                        await held.message.nack(requeue=True)
                    except Exception as exc:  # the channel died: RabbitMQ returns it anyway
                        log.debug("could not return an expired frame: %r", exc)

    async def _dead_letter_and_ack(
        self, group: str, message: AbstractIncomingMessage, reason: str, deliveries: int
    ) -> None:
        await self._dead_letter(group, message, reason, deliveries)
        await message.ack()

    async def _dead_letter(
        self, group: str, message: AbstractIncomingMessage, reason: str, deliveries: int
    ) -> None:
        """Store a dead letter (confirmed) before the caller acks the original.

        Raises:
            PublishError: not confirmed within ``publish_timeout``.
        """
        headers = dict(message.headers or {})
        headers.update(
            {
                _H_REASON: reason,
                _H_DELIVERIES: deliveries,
                _H_POSITION: message.message_id or "",
            }
        )
        loop = asyncio.get_running_loop()

        async def op(conn: AbstractConnection) -> None:
            pub, _ = await self._publisher(conn)
            await pub.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    headers=headers,
                    message_id=message.message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                self.dead_letter_queue(group),
                mandatory=False,
                timeout=self.publish_timeout,
            )

        try:
            await self._retrying(
                f"dead-letter in group {group}", op, loop.time() + self.publish_timeout
            )
        except ConnectError as exc:
            raise PublishError(f"group {group}: could not store a dead letter: {exc}") from exc

    async def delete_group(self, group: str) -> None:
        """Delete the group's queue, its dead-letter queue and its creation lock queue.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        check_name("group", group)
        self._check_open()
        loop = asyncio.get_running_loop()

        async def op(conn: AbstractConnection) -> None:
            channel = await _open_channel(conn, confirms=False)
            try:
                for name in (
                    self.group_queue(group),
                    self.dead_letter_queue(group),
                    self._lock_queue(group),
                ):
                    await channel.queue_delete(name, if_unused=False, if_empty=False)
            finally:
                self._close_channel(channel)

        await self._retrying("delete a group", op, loop.time() + self.publish_timeout)

    async def dead_letters(self, group: str, *, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters of the group, left in place.

        They are fetched un-acked, then returned (a classic queue puts a returned message
        back where it was) before this returns, so the next call sees them again.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        check_name("group", group)
        self._check_open()
        if count <= 0:
            return []
        loop = asyncio.get_running_loop()

        async def op(conn: AbstractConnection) -> list[DeadLetter]:
            channel = await _open_channel(conn, confirms=False)
            out: list[DeadLetter] = []
            taken: list[AbstractIncomingMessage] = []
            try:
                try:
                    queue = await channel.declare_queue(self.dead_letter_queue(group), passive=True)
                except amqp_errors.ChannelNotFoundEntity:
                    return []
                while len(out) < count:
                    message = await queue.get(no_ack=False, fail=False)
                    if message is None:
                        break
                    taken.append(message)
                    headers = dict(message.headers or {})
                    out.append(
                        DeadLetter(
                            position=_str_header(headers, _H_POSITION, message.message_id or ""),
                            data=message.body,
                            reason=_str_header(headers, _H_REASON, "unknown"),
                            deliveries=_int_header(headers, _H_DELIVERIES),
                        )
                    )
                if taken:
                    await taken[-1].nack(requeue=True, multiple=True)
                    # a synchronous round trip on the same channel: the returns are done
                    await channel.declare_queue(self.dead_letter_queue(group), passive=True)
                return out
            finally:
                self._close_channel(channel)

        return await self._retrying(
            f"dead letters of {group}", op, loop.time() + self.reconnect_timeout
        )
