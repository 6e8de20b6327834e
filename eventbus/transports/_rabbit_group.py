"""RabbitMQ consumer groups: their queues, their dead letters, and the group consumer.

A group ``g`` is a quorum queue bound with ``f.#`` plus a classic dead-letter queue
(declared last: it marks a complete creation). :class:`GroupConsumer` is the state machine
of one ``consume`` iterator: it emulates visibility timeouts (RabbitMQ returns un-acked
frames only when their channel closes) with a watchdog, lingers after the caller stopped
iterating until what the caller holds is settled, and survives connection losses and a
deleted group queue (re-declared with its binding, with backoff).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq.exceptions as amqp_errors
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)

from .._exceptions import (
    AuthenticationError,
    ConnectError,
    TransportClosedError,
    TransportError,
)
from ._base import DeadLetter, GroupOptions
from ._kit import Retry, describe
from ._rabbit_link import (
    H_DELIVERIES,
    H_POSITION,
    H_REASON,
    LOST,
    RESUMABLE,
    RETRYABLE,
    Link,
    Lost,
    copy_message,
    int_header,
    log,
    open_channel,
    pause,
    str_header,
    watch_channel,
)
from ._rabbit_registry import Registry

# a consumer outlives a dead letter it could not store: the frame comes back
_RESUMABLE_GROUP: tuple[type[BaseException], ...] = (*RESUMABLE, ConnectError)
# what settling on a channel that died may raise (aio-pika/aiormq's own exceptions)
_SETTLE_FAILURES: tuple[type[BaseException], ...] = (
    *RETRYABLE,
    amqp_errors.AMQPError,
    RuntimeError,
)


class Groups:
    """The groups of one namespace: creation, dead letters, deletion."""

    def __init__(self, link: Link, registry: Registry) -> None:
        self._link = link
        self._registry = registry
        self._locks: dict[str, asyncio.Lock] = {}

    async def _exists(self, conn: AbstractConnection, name: str) -> bool:
        channel = await open_channel(conn, confirms=False)
        try:
            await channel.declare_queue(name, passive=True)
            return True
        except amqp_errors.ChannelNotFoundEntity:
            return False
        finally:
            self._link.close_channel(channel)

    async def ensure(
        self, conn: AbstractConnection, group: str, options: GroupOptions, deadline: float
    ) -> None:
        """Make sure the group's queue exists: create the group once (seeding it from the
        namespace log for ``start="first"``), or re-declare a group queue that vanished.

        The dead-letter queue is declared last: it marks a complete creation, so a creator
        that died half-way is redone by the next consumer. Creators exclude each other with
        an exclusive queue (RabbitMQ drops it with the connection of a dead creator).
        """
        link = self._link
        if await self._exists(conn, link.dead_letter_queue(group)):
            if not await self._exists(conn, link.group_queue(group)):
                # deleted by an operator, a policy or a broker reset: what was routed to
                # it meanwhile is gone, but the group goes on with what comes next
                log.warning("group %s: its queue vanished; declaring it again", group)
                channel = await open_channel(conn, confirms=False)
                try:
                    await self._declare_queue(conn, channel, group)
                finally:
                    link.close_channel(channel)
            return
        # the exclusive queue excludes other connections only: consumers sharing this
        # transport's connection take an in-process lock first
        async with self._locks.setdefault(group, asyncio.Lock()):
            await self._ensure_locked(conn, group, options, deadline)

    async def _ensure_locked(
        self, conn: AbstractConnection, group: str, options: GroupOptions, deadline: float
    ) -> None:
        link = self._link
        retry = Retry(deadline=deadline, first=0.02, cap=0.5)
        while True:
            lock = await open_channel(conn, confirms=False)
            try:
                await lock.declare_queue(link.lock_queue(group), exclusive=True, auto_delete=True)
            except amqp_errors.ChannelLockedResource:
                link.close_channel(lock)
                delay = retry.next_delay()
                if delay is None:
                    raise TransportError(f"group {group}: its creation did not finish") from None
                await asyncio.sleep(delay)
                if await self._exists(conn, link.dead_letter_queue(group)):
                    return
                continue
            try:
                if await self._exists(conn, link.dead_letter_queue(group)):
                    return
                await self._create(conn, lock, group, options)
                return
            finally:
                with contextlib.suppress(Exception):
                    await lock.queue_delete(link.lock_queue(group))
                link.close_channel(lock)

    async def _declare_queue(
        self, conn: AbstractConnection, channel: AbstractChannel, group: str
    ) -> AbstractQueue:
        link = self._link
        await link.ensure_topology(conn)
        queue = await channel.declare_queue(
            link.group_queue(group), durable=True, arguments=link.group_arguments()
        )
        await queue.bind(link.exchange_name, "f.#")
        return queue

    async def _create(
        self, conn: AbstractConnection, channel: AbstractChannel, group: str, options: GroupOptions
    ) -> None:
        link = self._link
        await self._declare_queue(conn, channel, group)
        name = link.group_queue(group)
        if options.start == "first":
            # Frames published between the bind and the marker reach the group twice (live
            # and seeded): at-least-once, never lost.
            pub, _ = await link.publisher(conn)
            default = pub.default_exchange
            pending: list[Awaitable[Any]] = []

            async def copy(message: AbstractIncomingMessage) -> None:
                headers = dict(message.headers or {})
                headers.pop("x-stream-offset", None)
                pending.append(
                    default.publish(
                        copy_message(message, headers),
                        name,
                        mandatory=False,
                        timeout=link.options.publish_timeout,
                    )
                )
                if len(pending) >= 500:
                    batch = pending[:]
                    pending.clear()
                    await asyncio.gather(*batch)

            await link.read_until_marker(conn, link.log_queue, "first", on_message=copy)
            await asyncio.gather(*pending)
        await channel.declare_queue(
            link.dead_letter_queue(group), durable=True, arguments=link.dead_letter_arguments()
        )
        await self._registry.record(conn, "group", [group])

    async def dead_letter(
        self, group: str, message: AbstractIncomingMessage, reason: str, deliveries: int
    ) -> None:
        """Store a dead letter (confirmed) before the caller acks the original.

        Raises:
            ConnectError: not confirmed within ``publish_timeout``.
        """
        link = self._link
        headers = dict(message.headers or {})
        headers.update(
            {H_REASON: reason, H_DELIVERIES: deliveries, H_POSITION: message.message_id or ""}
        )

        async def op(conn: AbstractConnection) -> None:
            pub, _ = await link.publisher(conn)
            await pub.default_exchange.publish(
                aio_pika.Message(
                    message.body,
                    headers=headers,
                    message_id=message.message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                link.dead_letter_queue(group),
                mandatory=False,
                timeout=link.options.publish_timeout,
            )

        try:
            await link.retrying(
                f"dead-letter in group {group}", op, time.monotonic() + link.options.publish_timeout
            )
        except ConnectError as exc:
            raise ConnectError(f"group {group}: could not store a dead letter: {exc}") from exc

    async def delete(self, group: str) -> None:
        """Delete the group's queue, its dead-letter queue and its creation lock queue."""
        link = self._link

        async def op(conn: AbstractConnection) -> None:
            channel = await open_channel(conn, confirms=False)
            try:
                for name in (
                    link.group_queue(group),
                    link.dead_letter_queue(group),
                    link.lock_queue(group),
                ):
                    await channel.queue_delete(name, if_unused=False, if_empty=False)
            finally:
                link.close_channel(channel)

        await link.retrying("delete a group", op, time.monotonic() + link.options.publish_timeout)

    async def dead_letters(self, group: str, count: int) -> list[DeadLetter]:
        """The oldest ``count`` dead letters, fetched un-acked and returned before this
        returns (a classic queue puts a returned message back where it was)."""
        link = self._link
        name = link.dead_letter_queue(group)

        async def op(conn: AbstractConnection) -> list[DeadLetter]:
            channel = await open_channel(conn, confirms=False)
            out: list[DeadLetter] = []
            taken: list[AbstractIncomingMessage] = []
            try:
                try:
                    queue = await channel.declare_queue(name, passive=True)
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
                            position=str_header(headers, H_POSITION, message.message_id or ""),
                            data=message.body,
                            reason=str_header(headers, H_REASON, "unknown"),
                            deliveries=int_header(headers, H_DELIVERIES),
                        )
                    )
                if taken:
                    await taken[-1].nack(requeue=True, multiple=True)
                    # a synchronous round trip on the same channel: the returns are done
                    await channel.declare_queue(name, passive=True)
                return out
            finally:
                link.close_channel(channel)

        deadline = time.monotonic() + link.options.reconnect_timeout
        return await link.retrying(f"dead letters of {group}", op, deadline)


@dataclass
class _Held:
    """A delivery the application holds, with its visibility deadline."""

    message: AbstractIncomingMessage
    deadline: float
    settled: bool = False


@dataclass
class _Channel:
    """What one group consumer holds on its current channel."""

    channel: AbstractChannel | None = None
    held: dict[int, _Held] = field(default_factory=dict)
    queue: AbstractQueue | None = None
    inbox: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    tag: str | None = None  # None: not subscribed (paused by the watchdog)
    yielded_at: float | None = None  # None while the generator waits for the next frame
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    settling: set[asyncio.Task[None]] = field(default_factory=set)  # dead letters in flight

    def take(self, held: _Held) -> bool:
        """Claim the right to settle ``held``; False when it was settled, expired, or its
        channel died (RabbitMQ then returned it to the queue).

        The frame stays in ``held`` until :meth:`release`, so a finished consumer keeps
        its channel open until the ack has been sent.
        """
        if held.settled:
            return False
        held.settled = True
        return self.channel is not None and not self.channel.is_closed

    def release(self, held: _Held) -> None:
        self.held.pop(id(held), None)

    async def return_prefetched(self, keep_lost: bool) -> None:
        """Cancel the subscription and return the frames the caller never saw (the lock
        is held by the caller)."""
        tag, self.tag = self.tag, None
        if tag is not None and self.queue is not None:
            try:
                await self.queue.cancel(tag)
            except Exception as exc:  # the channel died: the frames come back anyway
                log.debug("could not cancel a group consumer: %r", exc)
        keep: list[Any] = []
        while not self.inbox.empty():
            item = self.inbox.get_nowait()
            if item is LOST:
                if keep_lost:
                    keep.append(item)
                continue
            with contextlib.suppress(Exception):
                await item.nack(requeue=True)
        for item in keep:
            self.inbox.put_nowait(item)


class RabbitDelivery:
    """One frame handed to one consumer of a group (see :class:`eventbus.transports.Delivery`,
    whose error contract it follows)."""

    __slots__ = ("_consumer", "_held", "_state", "data", "deliveries", "position")

    def __init__(
        self, consumer: GroupConsumer, state: _Channel, held: _Held, deliveries: int
    ) -> None:
        self._consumer = consumer
        self._state = state
        self._held = held
        message = held.message
        self.data: bytes = message.body
        self.position: str = message.message_id or ""
        self.deliveries: int = deliveries

    async def ack(self) -> None:
        """Ack it. A frame whose channel died or whose visibility timeout passed was already
        returned to the queue: the ack is then dropped (it will be redelivered)."""
        held = self._held
        if not self._state.take(held):
            log.debug("ack of %s dropped: it was already returned to the queue", self.position)
            return
        try:
            await held.message.ack()
        except _SETTLE_FAILURES as exc:
            log.info("ack of %s dropped (%s); it will be redelivered", self.position, describe(exc))
        finally:
            self._state.release(held)

    async def reject(self, reason: str) -> None:
        """Move it to the group's dead letters with ``reason``, then ack it; dropped like
        :meth:`ack` when the frame was already returned to the queue.

        Raises:
            ConnectError: the dead letter could not be stored within ``publish_timeout``
                (the frame stays un-acked and will be redelivered).
        """
        held = self._held
        if not self._state.take(held):
            log.debug("reject of %s dropped: it was already returned to the queue", self.position)
            return
        try:
            await self._consumer.groups.dead_letter(
                self._consumer.group, held.message, reason, self.deliveries
            )
            await held.message.ack()
        except _SETTLE_FAILURES as exc:
            log.info("ack of rejected %s dropped (%s)", self.position, describe(exc))
        except TransportClosedError:
            log.debug("reject of %s dropped: the transport is closed", self.position)
        except BaseException:
            # not dead-lettered: let the watchdog return it at its visibility timeout
            held.settled = False
            raise
        finally:
            if held.settled:
                self._state.release(held)


class GroupConsumer:
    """The state machine of one ``consume`` iterator (one consumer of one group).

    States: connecting (with backoff, bounded by ``reconnect_timeout`` from the first
    failure of an outage), ensuring the group, subscribed (frames go from the channel's
    inbox to the caller; the watchdog returns held frames at their visibility timeout and
    pauses the subscription while the caller hangs), and lingering (the caller stopped
    iterating while it still holds frames: the channel stays until they are settled).
    """

    def __init__(
        self, link: Link, groups: Groups, group: str, consumer: str, options: GroupOptions
    ) -> None:
        self.link = link
        self.groups = groups
        self.group = group
        self.consumer = consumer
        self.options = options

    def _tag(self) -> str:
        return f"{self.consumer}.{uuid.uuid4().hex[:12]}"

    async def run(self) -> AsyncIterator[RabbitDelivery]:
        link, group, options = self.link, self.group, self.options
        loop = asyncio.get_running_loop()
        retry = Retry(
            limit=link.options.reconnect_timeout,
            what=f"RabbitMQ group {group}, consumer {self.consumer}",
            log=log,
        )
        stale: AbstractConnection | None = None
        ensured = False
        conn: AbstractConnection | None = None
        while True:
            state = _Channel()
            watchdog: asyncio.Task[None] | None = None
            try:
                deadline = retry.deadline()
                conn = await link.connection(deadline, stale)
                stale = None
                if not ensured:
                    await self.groups.ensure(conn, group, options, deadline)
                    ensured = True
                channel = await open_channel(conn, confirms=False)
                state.channel = channel
                await channel.set_qos(prefetch_count=options.prefetch)
                await watch_channel(channel, state.inbox)
                state.queue = await channel.get_queue(link.group_queue(group), ensure=False)
                watchdog = loop.create_task(self._watchdog(state))
                while True:
                    if state.tag is None:  # new channel, or paused while the caller hung
                        async with state.lock:
                            state.tag = await state.queue.consume(
                                state.inbox.put, no_ack=False, consumer_tag=self._tag()
                            )
                        retry.ok()  # subscribed: an outage is over only now
                    state.yielded_at = None
                    item = await state.inbox.get()
                    if item is LOST:
                        raise Lost(group)
                    message: AbstractIncomingMessage = item
                    headers = dict(message.headers or {})
                    deliveries = int_header(headers, "x-delivery-count") + 1
                    if deliveries > options.max_deliveries:
                        # Shielded: a consumer cancelled half-way would return the frame,
                        # adding a delivery and possibly a second dead letter.
                        settle = loop.create_task(
                            self._dead_letter_and_ack(
                                message, f"not acked after {deliveries - 1} deliveries", deliveries
                            )
                        )
                        state.settling.add(settle)
                        settle.add_done_callback(state.settling.discard)
                        await asyncio.shield(settle)
                        continue
                    state.yielded_at = loop.time()
                    held = _Held(message, state.yielded_at + options.visibility_timeout)
                    state.held[id(held)] = held
                    yield RabbitDelivery(self, state, held, deliveries)
            except amqp_errors.ChannelAccessRefused as exc:
                raise AuthenticationError(f"group {group}: RabbitMQ refused access: {exc}") from exc
            except _RESUMABLE_GROUP as exc:
                link.check_open()
                if isinstance(exc, (amqp_errors.ChannelNotFoundEntity, Lost)):
                    # a cancel or a 404: the group queue may be gone; look before consuming
                    ensured = False
                if await pause(retry, exc, f"group {group}"):
                    stale = conn
            except amqp_errors.AMQPChannelError as exc:
                raise TransportError(f"group {group}: RabbitMQ refused: {exc}") from exc
            finally:
                self._leave(state, watchdog)

    def _leave(self, state: _Channel, watchdog: asyncio.Task[None] | None) -> None:
        channel_open = state.channel is not None and not state.channel.is_closed
        if watchdog is not None and channel_open and (state.held or state.settling):
            # The caller stopped iterating but may still ack or reject what it holds,
            # and an ack is only valid on the channel that delivered it.
            self.link.spawn(self._linger(state, watchdog))
            return
        if watchdog is not None:
            watchdog.cancel()
        for held in state.held.values():
            held.settled = True  # closing the channel returns them
        state.held.clear()
        self.link.close_channel(state.channel)

    async def _dead_letter_and_ack(
        self, message: AbstractIncomingMessage, reason: str, deliveries: int
    ) -> None:
        await self.groups.dead_letter(self.group, message, reason, deliveries - 1)
        await message.ack()

    async def _linger(self, state: _Channel, watchdog: asyncio.Task[None]) -> None:
        """Keep a finished consumer's channel until what it holds is settled or expired.

        The subscription is cancelled and the prefetched frames the caller never saw are
        returned at once; the watchdog still returns held frames at their visibility
        timeout, and the channel closes when none is left.
        """
        try:
            async with state.lock:
                await state.return_prefetched(keep_lost=False)
            if state.settling:
                await asyncio.wait(list(state.settling))
            for _ in itertools.count():  # until settled or expired (the watchdog's job)
                if not state.held or state.channel is None or state.channel.is_closed:
                    break
                await asyncio.sleep(0.05)
        finally:
            watchdog.cancel()
            self.link.close_channel(state.channel)

    async def _watchdog(self, state: _Channel) -> None:
        """Enforce the visibility timeout on a consumer that is alive but hung.

        RabbitMQ returns un-acked frames only when the channel closes, so: a frame the
        caller has held for ``visibility_timeout`` is returned (``nack`` + requeue) for
        another consumer; and when the caller has not asked for its next frame for that
        long, the subscription is cancelled and the prefetched frames it never saw are
        returned too, so they do not wait behind the hung caller (and a returned frame is
        not handed straight back to it). The subscription resumes at the caller's next
        request. Every return counts as a delivery in a quorum queue.
        """
        loop = asyncio.get_running_loop()
        visibility = self.options.visibility_timeout
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
                    await state.return_prefetched(keep_lost=True)
                log.info(
                    "consumer %s hung for %.1fs: paused, prefetched frames returned",
                    self.consumer,
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
