"""Reading a RabbitMQ stream queue (a run's, or the namespace log) for ``follow`` and
``tap``: waiting for a stream its publisher has not declared yet (woken by the run's first
frame), attaching at an offset, skipping what a chunk boundary repeats, and resuming after
the last yielded entry across reconnects. Reads declare nothing on the broker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiormq.exceptions as amqp_errors
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from .._exceptions import AuthenticationError, TransportError
from ._base import Entry
from ._kit import Retry
from ._rabbit_link import (
    LOST,
    RESUMABLE,
    Link,
    Lost,
    consume_stream,
    int_header,
    log,
    open_channel,
    pause,
    run_key,
    watch_channel,
)

__all__ = ["read_stream"]


async def read_stream(
    link: Link,
    name: str,
    next_offset: int | None,
    attach: str,
    what: str,
    of_run: str | None = None,
) -> AsyncIterator[Entry]:
    """Read stream queue ``name`` (of run ``of_run``, if it is one) from
    ``next_offset`` (else from ``attach``: first, next) once it exists, reconnecting,
    for ever (see :meth:`RabbitMQTransport.follow`)."""
    run_id = what  # (named in the messages below)
    retry = Retry(limit=link.options.reconnect_timeout, what=f"RabbitMQ follow {run_id}", log=log)
    stale: AbstractConnection | None = None
    conn: AbstractConnection | None = None
    while True:
        channel: AbstractChannel | None = None
        try:
            conn = await link.connection(retry.deadline(), stale)
            stale = None
            # found first: a probe of a missing queue closes the channel, and a stream
            # refuses a consumer on a channel without prefetch
            channel, queue = await _find_run(link, conn, name, of_run)
            await channel.set_qos(prefetch_count=link.options.follow_prefetch)
            inbox: asyncio.Queue[Any] = asyncio.Queue()
            await watch_channel(channel, inbox)
            await consume_stream(queue, inbox.put, attach if next_offset is None else next_offset)
            retry.ok()
            while True:
                item = await inbox.get()
                if item is LOST:
                    raise Lost(run_id)
                message: AbstractIncomingMessage = item
                # the ack is stream credit, not removal
                await message.ack()
                offset = int_header(dict(message.headers or {}), "x-stream-offset", -1)
                if offset < 0 or (next_offset is not None and offset < next_offset):
                    continue  # a stream attaches at a chunk boundary: skip what was read
                next_offset = offset + 1
                yield Entry(str(offset), message.body)
        except amqp_errors.ChannelAccessRefused as exc:
            raise AuthenticationError(f"follow {run_id}: RabbitMQ refused access: {exc}") from exc
        except RESUMABLE as exc:
            link.check_open()
            if await pause(retry, exc, f"follow {run_id}"):
                stale = conn
        except amqp_errors.AMQPChannelError as exc:
            raise TransportError(f"follow {run_id}: RabbitMQ refused: {exc}") from exc
        finally:
            link.close_channel(channel)


async def _find_run(
    link: Link, conn: AbstractConnection, name: str, run_id: str | None
) -> tuple[AbstractChannel, AbstractQueue]:
    """A channel and the stream ``name`` on it (of the run ``run_id``, if it is one),
    once its publisher has declared the stream. Waiting for that is woken by the run's
    first frame (a publisher declares the stream before it publishes; the namespace
    log is only probed), with a passive probe with backoff behind it: a
    probe alone found a run up to 250 ms late, which was the p99 of a follower that
    came first (RabbitMQ follow latency at 1k events/s: 9 ms before the transport
    split, 45-170 ms after)."""
    wait = Retry(first=0.02, cap=0.25)
    waker: tuple[AbstractChannel, asyncio.Event] | None = None
    wakeable = run_id is not None  # (the namespace log: probed)
    try:
        while True:
            channel = await open_channel(conn, confirms=False)
            try:
                return channel, await channel.declare_queue(name, passive=True)
            except amqp_errors.ChannelNotFoundEntity:
                pass  # the broker closed the channel with the 404: a new one next time
            except BaseException:
                link.close_channel(channel)
                raise
            link.check_open()
            if waker is None and wakeable and run_id is not None:
                try:
                    waker = await _wake_on_frame(link, conn, run_id)
                except amqp_errors.AMQPChannelError as exc:
                    # a user that may only read (no configure permission for a queue
                    # of its own): the probe alone, as before
                    log.debug("follow %s: no wake-up queue (%r), probing", run_id, exc)
                    wakeable = False
                continue  # probe again at once: the stream may predate the binding
            delay = wait.next_delay() or 0.25
            if waker is None:
                await asyncio.sleep(delay)
                continue
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(waker[1].wait(), delay)
    finally:
        if waker is not None:
            link.close_channel(waker[0])  # (its consumer goes: the queue auto-deletes)


async def _wake_on_frame(
    link: Link, conn: AbstractConnection, run_id: str
) -> tuple[AbstractChannel, asyncio.Event]:
    """A channel with a server-named exclusive queue bound like the run's stream, and
    the event its first message sets (it holds one message at most)."""
    channel = await open_channel(conn, confirms=False)
    try:
        queue = await channel.declare_queue(
            "", exclusive=True, auto_delete=True, arguments={"x-max-length": 1}
        )
        await queue.bind(link.exchange_name, f"*.{run_key(run_id)}")
        arrived = asyncio.Event()

        async def wake(_message: AbstractIncomingMessage) -> None:
            arrived.set()

        await queue.consume(wake, no_ack=True)
    except BaseException:
        link.close_channel(channel)
        raise
    return channel, arrived
