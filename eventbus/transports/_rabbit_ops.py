"""RabbitMQ: operating a namespace. What its groups hold (read from the registry and
passive declares: nothing is created) and the control channel.

The control channel is the namespace exchange with routing key ``c.-.control``: three
words, so that neither a run stream's ``*.<run>`` binding nor the log's ``f.#`` takes it.
Each listener binds an exclusive, auto-delete, server-named queue to ``c.#``: the broker
deletes it with the listener's channel or connection (a ``kill -9`` leaves nothing).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aio_pika
import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from .._exceptions import AuthenticationError, ConnectError, TransportError
from ._base import GroupInfo
from ._kit import Retry
from ._rabbit_link import (
    H_DELIVERIES,
    H_EVENT,
    H_POSITION,
    H_REASON,
    H_RUN,
    LOST,
    RESUMABLE,
    Link,
    Lost,
    copy_message,
    log,
    open_channel,
    pause,
    str_header,
    watch_channel,
)
from ._rabbit_registry import Registry

CONTROL_KEY = "c.-.control"
_DEAD_HEADERS = frozenset((H_REASON, H_DELIVERIES, H_POSITION))
_REQUEUE_SLACK = 100_000

# a listener outlives a failed connect too: it connects one attempt at a time
_RESUMABLE: tuple[type[BaseException], ...] = (*RESUMABLE, ConnectError)


class Operations:
    """Group inspection and the control channel of one namespace."""

    def __init__(self, link: Link, registry: Registry) -> None:
        self._link = link
        self._registry = registry

    async def _exists(self, conn: AbstractConnection, name: str) -> Any:
        """The passive declare's result of queue ``name``, or None if it does not exist."""
        channel = await open_channel(conn, confirms=False)
        try:
            queue = await channel.declare_queue(name, passive=True)
            return queue.declaration_result
        except amqp_errors.ChannelNotFoundEntity:
            return None
        finally:
            self._link.close_channel(channel)

    async def groups(self) -> list[GroupInfo]:
        """The groups the registry names that still exist: consumers attached now, lag
        (frames ready in the group queue), dead letters; pending is not told by AMQP.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        link = self._link

        async def op(conn: AbstractConnection) -> list[GroupInfo]:
            # a namespace that was never used has no registry: nothing to create for it
            if await self._exists(conn, link.registry_queue) is None:
                return []
            records = await link.read_until_marker(conn, link.registry_queue, "first")
            names = {
                str_header(dict(m.headers or {}), H_RUN)
                for m in records
                if str_header(dict(m.headers or {}), H_EVENT) == "group"
            }
            out = []
            for name in sorted(names):
                queue = await self._exists(conn, link.group_queue(name))
                dead = await self._exists(conn, link.dead_letter_queue(name))
                if queue is None and dead is None:
                    continue  # deleted
                out.append(
                    GroupInfo(
                        name,
                        queue.consumer_count if queue is not None else 0,
                        None,
                        queue.message_count if queue is not None else None,
                        dead.message_count if dead is not None else 0,
                    )
                )
            return out

        deadline = time.monotonic() + link.options.publish_timeout
        return await link.retrying("list groups", op, deadline)

    async def requeue_dead_letters(self, group: str, positions: Sequence[str] | None) -> int:
        """Move dead letters back to the group's queue: each is fetched from the dead-letter
        queue, published to the group's queue as a new message (no delivery counted) and
        confirmed, and only then acked in the dead-letter queue (a crash in between leaves
        a duplicate, never a loss); the others are returned where they were.

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        link = self._link
        dead_name, queue_name = link.dead_letter_queue(group), link.group_queue(group)
        wanted = None if positions is None else set(positions)
        done = 0

        async def op(conn: AbstractConnection) -> None:
            nonlocal done
            channel = await open_channel(conn, confirms=False)
            kept: list[AbstractIncomingMessage] = []
            try:
                try:
                    dead = await channel.declare_queue(dead_name, passive=True)
                    # published to a queue that is not there, a frame would be dropped
                    await channel.declare_queue(queue_name, passive=True)
                except amqp_errors.ChannelNotFoundEntity:
                    return
                pub, _ = await link.publisher(conn)
                # until the queue has nothing more to give: the count a declare tells
                # may lag on a quorum queue (a cluster's dead letters); bounded by it
                # plus what other consumers may dead-letter meanwhile
                known = dead.declaration_result.message_count or 0
                for _ in range(known + _REQUEUE_SLACK):
                    if wanted is not None and not wanted:
                        break
                    message = await dead.get(no_ack=False, fail=False)
                    if message is None:
                        break
                    headers = dict(message.headers or {})
                    position = str_header(headers, H_POSITION, message.message_id or "")
                    if wanted is not None and position not in wanted:
                        kept.append(message)
                        continue
                    # the broker's headers (x-delivery-count above all: the frame would
                    # go straight back to the dead letters) and the dead letter's own go
                    for name in [h for h in headers if h.startswith("x-")]:
                        if not name.startswith("x-eb-") or name in _DEAD_HEADERS:
                            del headers[name]
                    await pub.default_exchange.publish(
                        copy_message(message, headers),
                        queue_name,
                        mandatory=False,
                        timeout=link.options.publish_timeout,
                    )
                    await message.ack()
                    done += 1
                    if wanted is not None:
                        wanted.discard(position)
                for message in kept:
                    await message.nack(requeue=True)
            finally:
                link.close_channel(channel)  # (returns what was not settled)

        deadline = time.monotonic() + link.options.publish_timeout
        await link.retrying(f"requeue dead letters of {group}", op, deadline)
        return done

    async def signal(self, data: bytes) -> None:
        """Publish on the control key, if the namespace's exchange exists (else no one
        can be listening, and nothing is declared for it).

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        link = self._link

        async def op(conn: AbstractConnection) -> None:
            channel = await open_channel(conn, confirms=True)
            try:
                try:
                    exchange = await channel.declare_exchange(link.exchange_name, passive=True)
                except amqp_errors.ChannelNotFoundEntity:
                    return
                await exchange.publish(
                    aio_pika.Message(data, delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT),
                    CONTROL_KEY,
                    mandatory=False,
                    timeout=link.options.publish_timeout,
                )
            finally:
                link.close_channel(channel)

        deadline = time.monotonic() + link.options.publish_timeout
        await link.retrying("send a control message", op, deadline)

    async def signals(self) -> AsyncIterator[bytes]:
        """Listen on the control key through an exclusive auto-delete queue; waits for
        the namespace's exchange to exist; reconnects (missing what was sent meanwhile).

        Raises:
            AuthenticationError: access refused.
            ConnectError: no connection for ``reconnect_timeout`` seconds.
            TransportError: the transport was closed, or the broker refused.
        """
        link = self._link
        link.check_open()
        retry = Retry(limit=link.options.reconnect_timeout, what="RabbitMQ control", log=log)
        absent = Retry(first=0.05, cap=1.0)
        stale: AbstractConnection | None = None
        conn: AbstractConnection | None = None
        while True:
            channel = None
            try:
                # one attempt at a time: the link's lock is held while it connects, and a
                # publisher sharing the link must not wait out this loop's backoff
                conn = await link.connection(None, stale)
                stale = None
                channel = await open_channel(conn, confirms=False)
                try:
                    exchange = await channel.declare_exchange(link.exchange_name, passive=True)
                except amqp_errors.ChannelNotFoundEntity:
                    # nothing published in the namespace yet: no one to hear from
                    retry.ok()
                    await asyncio.sleep(absent.next_delay() or 1.0)
                    continue
                absent.ok()
                queue = await channel.declare_queue("", exclusive=True, auto_delete=True)
                await queue.bind(exchange, "c.#")
                inbox: asyncio.Queue[Any] = asyncio.Queue()
                await watch_channel(channel, inbox)
                await queue.consume(inbox.put, no_ack=True)
                retry.ok()
                yield b""  # listening
                while True:
                    item = await inbox.get()
                    if item is LOST:
                        raise Lost("control")
                    yield bytes(item.body)
            except amqp_errors.ChannelAccessRefused as exc:
                raise AuthenticationError(f"control: RabbitMQ refused access: {exc}") from exc
            except _RESUMABLE as exc:
                link.check_open()
                if await pause(retry, exc, "control"):
                    stale = conn
            except amqp_errors.AMQPChannelError as exc:
                raise TransportError(f"control: RabbitMQ refused: {exc}") from exc
            finally:
                link.close_channel(channel)
