"""``amqp://`` and ``amqps://``: RabbitMQ (3.9+, stream queues) through aio-pika.

URL: ``amqp://user:password@host:port/vhost?option=value&...``. Options come from the query
string or from keyword arguments (keyword arguments win): the fields of
:class:`~eventbus.transports._rabbit_options.Options` (their table is in ``docs/rabbitmq.md``).
A cluster's URL lists its nodes, ``amqp://user:password@host1:5672,host2:5672/vhost``:
they are tried in turn (see :mod:`._rabbit_cluster`).

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

The transport is thin: the connection and topology are :mod:`._rabbit_link`'s, reading
streams (follow, tap) :mod:`._rabbit_follow`'s, consumer groups :mod:`._rabbit_group`'s,
the registry and sweeper :mod:`._rabbit_registry`'s, operations :mod:`._rabbit_ops`'s.

Beyond the transport protocol: :meth:`RabbitMQTransport.sweep` (delete expired run streams;
publishers run it every ``sweep_interval``) and :meth:`RabbitMQTransport.delete_namespace`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal

import aio_pika
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel, AbstractConnection

from .._exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    PublishError,
    TransportError,
)
from . import check_name
from ._base import DeadLetter, Entry, GroupInfo, GroupOptions, OutFrame
from ._kit import Retry, check_consumer
from ._rabbit_follow import read_stream
from ._rabbit_group import GroupConsumer, Groups, RabbitDelivery
from ._rabbit_link import (
    H_FINAL,
    H_RUN,
    RETRYABLE,
    Link,
    closed_here,
    log,
    open_channel,
    run_key,
)
from ._rabbit_ops import Operations
from ._rabbit_registry import Registry

__all__ = ["RabbitMQTransport"]

# what a publish retries, or reports as refused unless it was closed here
_RETRY_OR_REFUSED: tuple[type[BaseException], ...] = (*RETRYABLE, amqp_errors.AMQPChannelError)
_DECLARE_CHANNELS = 16  # channels declaring the new runs of one batch at once


def _default_max_message_size(conn: AbstractConnection) -> int:
    """RabbitMQ's default ``max_message_size`` for the server's version: AMQP 0-9-1 does
    not negotiate it (``frame_max`` is the size of one frame of a message, not of the
    message), so a broker configured otherwise needs the ``max_message_size`` option."""
    try:
        props = conn.transport.connection.server_properties  # type: ignore[union-attr]
        version = props.get("version", "")
        major = int(str(version.decode() if isinstance(version, bytes) else version).split(".")[0])
    except Exception:  # no version to go by: the smaller default is the safe one
        major = 4
    return (16 if major >= 4 else 128) * 1024 * 1024


class RabbitMQTransport:
    """The RabbitMQ transport (see the module docstring and ``docs/rabbitmq.md``).

    A thin front: the link (:mod:`._rabbit_link`) holds the connection and topology, the
    groups (:mod:`._rabbit_group`) the group consumers, the registry
    (:mod:`._rabbit_registry`) the maintenance of run streams.

    Raises:
        ConfigurationError: malformed URL or unknown/invalid option.
    """

    def __init__(self, url: str, namespace: str, **options: Any) -> None:
        self._link = link = Link(url, namespace, options)
        self.namespace = link.namespace
        self._safe_url = link.safe_url
        #: the parsed options (see :class:`~eventbus.transports._rabbit_options.Options`)
        self.options = link.options
        #: the largest frame the broker takes (known at connect; None before)
        self.max_message_bytes: int | None = None
        self.exchange_name = link.exchange_name
        self.log_queue = link.log_queue
        self.registry_queue = link.registry_queue
        self._registry = Registry(link)
        self._groups = Groups(link, self._registry)
        self._ops = Operations(link, self._registry)
        # publish's channel for declaring run streams, kept open (a channel round trip
        # less per new run)
        self._decl: tuple[AbstractConnection, AbstractChannel] | None = None

    def __repr__(self) -> str:
        return f"RabbitMQTransport({self._safe_url!r}, namespace={self.namespace!r})"

    @property
    def _conn(self) -> AbstractConnection | None:
        return self._link.conn

    # -- names -------------------------------------------------------------------------

    def run_queue(self, run_id: str) -> str:
        """The stream queue that holds run ``run_id``."""
        return self._link.run_queue(run_id)

    def group_queue(self, group: str) -> str:
        """The quorum queue of consumer group ``group``."""
        return self._link.group_queue(group)

    def dead_letter_queue(self, group: str) -> str:
        """The queue of the dead letters of consumer group ``group``."""
        return self._link.dead_letter_queue(group)

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self, *, declare: bool = True) -> None:
        """Connect once and declare the namespace topology (``declare=False``: only
        connect; a reader's connect creates nothing).

        Raises:
            AuthenticationError: bad credentials or a vhost the user may not use.
            ConnectError: the broker is unreachable.
            TransportError: the broker refused the topology (e.g. arguments that differ
                from an existing declaration).
        """
        link = self._link
        link.closed = False
        conn = await link.connection(deadline=None)
        self.max_message_bytes = link.options.max_message_size or _default_max_message_size(conn)
        if not declare:
            return
        try:
            await link.ensure_topology(conn)
            # the channels publish uses, opened now rather than in front of the first
            # frames of the first run (subscribers' transports open them too: two channels)
            await link.publisher(conn)
            self._decl = (conn, await open_channel(conn, confirms=False))
        except amqp_errors.ChannelAccessRefused as exc:
            raise AuthenticationError(
                f"RabbitMQ at {self._safe_url!r} refused access to the eventbus topology: {exc}"
            ) from exc
        except amqp_errors.AMQPChannelError as exc:
            raise TransportError(
                f"RabbitMQ at {self._safe_url!r} refused the eventbus topology: {exc}"
            ) from exc
        except RETRYABLE as exc:
            raise ConnectError(f"lost RabbitMQ at {self._safe_url!r}: {exc!r}") from exc

    async def aclose(self) -> None:
        """Close the connection; running ``follow``/``consume`` iterations then raise."""
        self._link.closed = True
        await self._registry.close()
        self._decl = None
        await self._link.close()

    # -- publishing --------------------------------------------------------------------

    def _message(self, frame: OutFrame, message_id: str) -> aio_pika.Message:
        headers: dict[str, Any] = {H_RUN: frame.run_id}
        if frame.final:
            headers[H_FINAL] = True
        return aio_pika.Message(
            frame.data,
            headers=headers,
            message_id=message_id,
            content_type="application/octet-stream",
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if self.options.persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
        )

    async def publish(self, frames: Sequence[OutFrame]) -> None:
        """Publish every frame as one AMQP message, all in flight at once; return when the
        broker confirmed them all.

        After a connection loss the unconfirmed suffix of the batch is published again, in
        order, on a new connection (frames before it may then appear twice, never out of
        order). The registry records of runs started and ended are written in the
        background, and the first publish starts the sweeper.

        Raises:
            AuthenticationError: credentials refused (not retried).
            PublishError: not every frame confirmed within ``publish_timeout``, or a broker
                refusal.
            TransportClosedError: the transport is closed.
        """
        link = self._link
        link.check_open()
        if not frames:
            return
        retry = Retry(deadline=time.monotonic() + self.options.publish_timeout)
        messages = [
            (f"{'f' if f.fanout else 'h'}.{run_key(f.run_id)}", self._message(f, uuid.uuid4().hex))
            for f in frames
        ]
        done = 0  # frames[:done] are confirmed
        stale: AbstractConnection | None = None
        conn: AbstractConnection | None = None
        channel: AbstractChannel | None = None
        while True:
            try:
                conn = await link.connection(retry.deadline(), stale)
                stale = None
                channel, exchange = await link.publisher(conn)
                await self._declare_runs(conn, frames[done:])
                remaining = max(0.001, retry.deadline() - time.monotonic())
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
                    f"confirmed within {self.options.publish_timeout:g}s"
                ) from exc
            except TransportError:
                raise
            except amqp_errors.ChannelAccessRefused as exc:
                raise AuthenticationError(f"publish refused by RabbitMQ: {exc}") from exc
            except _RETRY_OR_REFUSED as exc:
                if not isinstance(exc, RETRYABLE) and not closed_here(exc):
                    raise PublishError(f"publish refused by RabbitMQ: {exc}") from exc
                delay = retry.next_delay(exc)
                if delay is None:
                    raise PublishError(
                        f"publish to {self._safe_url!r}: {len(frames) - done} frame(s) not "
                        f"confirmed within {self.options.publish_timeout:g}s"
                    ) from exc
                log.info(
                    "publish interrupted (%r); re-publishing %d frame(s)", exc, len(frames) - done
                )
                if isinstance(exc, amqp_errors.AMQPConnectionError):
                    stale = conn
                # the confirm channel is shared by every publish in flight: it goes only if
                # it failed itself (a declare's failure, a stream that is starting, is not)
                if channel is not None and (
                    channel.is_closed or isinstance(exc, asyncio.TimeoutError)
                ):
                    link.drop_publisher(channel)
                await asyncio.sleep(delay)
        finals = [f.run_id for f in frames if f.final]
        if finals and conn is not None:
            self._registry.note(conn, "end", finals)
        self._registry.start_sweeper()

    async def _declare_runs(self, conn: AbstractConnection, frames: Sequence[OutFrame]) -> None:
        link = self._link
        declared = link.runs_declared
        new = [r for r in dict.fromkeys(f.run_id for f in frames) if r not in declared]
        if not new:
            return
        decl = self._decl
        if decl is None or decl[0] is not conn or decl[1].is_closed:
            decl = self._decl = (conn, await open_channel(conn, confirms=False))
        # a channel does one declaration at a time: a batch that starts many runs (a
        # worker taking up hundreds at once) declares them over several channels
        extra: list[AbstractChannel] = []

        async def declare(channel: AbstractChannel, run_ids: list[str]) -> None:
            for run_id in run_ids:
                await link.declare_run(channel, run_id)

        try:
            for _ in range(min(_DECLARE_CHANNELS, len(new)) - 1):
                extra.append(await open_channel(conn, confirms=False))
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
            link.close_channel(decl[1])
            raise
        finally:
            for channel in extra:
                link.close_channel(channel)
        declared.update(new)
        self._registry.note(conn, "start", new)

    # -- following a run ---------------------------------------------------------------

    async def follow(self, run_id: str, *, start: str | None = None) -> AsyncIterator[Entry]:
        """Yield the run's frames from its stream queue, from the first or from ``start``
        (a position yielded before, inclusive); wait for more; never end by itself.

        A read: it waits (polling with backoff) for a run whose stream does not exist yet,
        and declares nothing. After a connection loss it reconnects and resumes after the
        last yielded entry.

        Raises:
            ConfigurationError: ``start`` is not a position of this transport.
            AuthenticationError: access refused.
            ConnectError: no connection for ``reconnect_timeout`` seconds.
            TransportClosedError: the transport was closed.
        """
        link = self._link
        link.check_open()
        next_offset: int | None = None
        if start is not None:
            try:
                next_offset = int(start)
            except ValueError:
                raise ConfigurationError(f"not an amqp:// position: {start!r}") from None
            if next_offset < 0:
                raise ConfigurationError(f"not an amqp:// position: {start!r}")
        stream = link.run_queue(run_id)
        async for entry in read_stream(
            self._link, stream, next_offset, "first", run_id, of_run=run_id
        ):
            yield entry

    # -- consumer groups ---------------------------------------------------------------

    async def consume(
        self, group: str, consumer: str, options: GroupOptions
    ) -> AsyncIterator[RabbitDelivery]:
        """Yield the group's frames for this consumer from the group's quorum queue,
        at-least-once, until cancelled.

        A frame delivered more than ``max_deliveries`` times goes to the dead letters
        instead; a frame held longer than ``visibility_timeout`` without ack is returned to
        the queue (``nack`` with requeue) for another consumer. After a connection loss or a
        broker cancel the consumer is re-established; a group queue that was deleted is
        declared again (with its binding).

        Raises:
            ConfigurationError: bad group/consumer name or options.
            AuthenticationError: access refused.
            ConnectError: no connection for ``reconnect_timeout`` seconds.
            TransportError: the transport was closed, or the broker refused the group.
        """
        check_consumer(group, consumer, options)
        self._link.check_open()
        async for delivery in GroupConsumer(
            self._link, self._groups, group, consumer, options
        ).run():
            yield delivery

    async def delete_group(self, group: str) -> None:
        """Delete the group's queue, its dead-letter queue and its creation lock queue.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        check_name("group", group)
        self._link.check_open()
        await self._groups.delete(group)

    async def dead_letters(self, group: str, *, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters of the group, left in place: fetched
        un-acked, then returned (to where they were) before this returns.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        check_name("group", group)
        self._link.check_open()
        if count <= 0:
            return []
        return await self._groups.dead_letters(group, count)

    async def requeue_dead_letters(self, group: str, positions: Sequence[str] | None = None) -> int:
        """Published to the group's queue, confirmed, then acked in the dead letters.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        check_name("group", group)
        self._link.check_open()
        return await self._ops.requeue_dead_letters(group, positions)

    # -- operating (see _rabbit_ops) ---------------------------------------------------

    async def tap(self, start: Literal["first", "new"] = "new") -> AsyncIterator[Entry]:
        """Read the namespace log (a stream bound with ``f.#``) from its first or its next
        frame, once it exists: a stream consumer, which creates nothing.

        Raises:
            AuthenticationError, ConnectError, TransportError: as :meth:`follow`.
        """
        self._link.check_open()
        attach = "first" if start == "first" else "next"
        async for entry in read_stream(
            self._link, self._link.log_queue, None, attach, "the namespace log"
        ):
            yield entry

    async def groups(self) -> list[GroupInfo]:
        """See :meth:`eventbus.transports.Transport.groups` (``pending`` is unknown)."""
        return await self._ops.groups()

    async def signal(self, data: bytes) -> None:
        """See :meth:`eventbus.transports.Transport.signal`."""
        await self._ops.signal(data)

    def signals(self) -> AsyncIterator[bytes]:
        """See :meth:`eventbus.transports.Transport.signals`."""
        return self._ops.signals()

    # -- maintenance -------------------------------------------------------------------

    async def sweep(self) -> list[str]:
        """Delete the streams of runs that ended more than ``retention`` seconds ago or
        started more than ``max_run_age`` seconds ago; return their run ids.

        Publishers run it every ``sweep_interval`` seconds in the background.

        Raises:
            TransportError: the broker could not be used.
        """
        return await self._registry.sweep()

    async def delete_namespace(self) -> None:
        """Delete every queue and the exchange of this namespace: run streams, the log, the
        registry, group queues and their dead letters. Running consumers and followers of
        the namespace are cancelled by the broker. Not part of the transport protocol: an
        operator's (and the test suite's) clean-up.

        Groups created by a version without group registry records are not found.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        await self._registry.delete_namespace()
