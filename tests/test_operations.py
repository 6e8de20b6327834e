"""Operating a namespace at the transport level, over every transport: reading the group
stream without a group (``tap``), what groups hold (``groups``), the control channel
(``signal``/``signals``), and that reads create nothing on the broker."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest

from eventbus.transports import Entry, GroupOptions, OutFrame, Transport

pytestmark = pytest.mark.anyio

WAIT = 15


async def take(entries: AsyncIterator[Entry], n: int) -> list[bytes]:
    out: list[bytes] = []
    with anyio.fail_after(WAIT):
        async for entry in entries:
            out.append(entry.data)
            if len(out) == n:
                break
    return out


async def test_tap_reads_the_group_stream_from_first_or_from_now(transport: Transport) -> None:
    run = str(uuid.uuid4())
    await transport.publish([OutFrame(run, b"a"), OutFrame(run, b"hb", fanout=False)])
    await transport.publish([OutFrame(run, b"b")])
    first = transport.tap("first")
    assert await take(first, 2) == [b"a", b"b"]  # fan-out frames only, in order
    new = transport.tap("new")
    reader = asyncio.ensure_future(take(new, 1))
    # the "new" reader starts reading from wherever the stream ends when it attaches:
    # publish until it has seen a frame, each frame naming itself
    with anyio.fail_after(WAIT):
        i = 0
        while not reader.done():
            await transport.publish([OutFrame(run, b"c%d" % i)])
            i += 1
            await asyncio.wait({reader}, timeout=0.2)
    (got,) = reader.result()
    assert got.startswith(b"c")  # never a frame from before it was asked for
    assert await take(first, 1) == [b"c0"]


async def test_groups_report_consumers_lag_pending_and_dead_letters(
    transport: Transport, url: str
) -> None:
    run = str(uuid.uuid4())
    assert await transport.groups() == []
    await transport.publish([OutFrame(run, b"%d" % i) for i in range(3)])
    options = GroupOptions(start="first", max_deliveries=5)
    with anyio.fail_after(WAIT):
        async for d in transport.consume("g1", "c1", options):
            await d.reject("no good")
            break
    (info,) = [g for g in await transport.groups() if g.name == "g1"]
    assert info.dead_letters == 1
    if url.startswith("amqp"):
        assert info.pending is None  # AMQP does not tell
        # what the consumer had prefetched goes back to the queue when it leaves
        for _ in range(WAIT * 20):
            if (await transport.groups())[0].lag == 2:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the prefetched frames did not return to the group queue")
    else:
        assert info.consumers == 1
        # Redis hands the consumer a batch (pending), memory one frame at a time (lag)
        assert (info.pending or 0) + (info.lag or 0) == 2
    await transport.delete_group("g1")
    assert [g.name for g in await transport.groups()] == []


async def test_signals_reach_every_listener_and_are_stored_nowhere(transport: Transport) -> None:
    run = str(uuid.uuid4())
    await transport.publish([OutFrame(run, b"x")])  # (RabbitMQ: the namespace exists)
    await transport.signal(b"before anyone listens")  # dropped, not an error
    listeners = [transport.signals(), transport.signals()]
    got: list[list[bytes]] = [[], []]
    heard_last = [asyncio.Event(), asyncio.Event()]
    listening = [asyncio.Event(), asyncio.Event()]

    async def listen(i: int) -> None:
        async for data in listeners[i]:
            if not data:
                listening[i].set()  # (what it yields first, once it listens)
                continue
            got[i].append(data)
            if data == b"last":
                heard_last[i].set()

    tasks = [asyncio.ensure_future(listen(i)) for i in range(2)]
    try:
        # pub/sub keeps nothing for a listener that is not subscribed yet: both say
        # when they listen, and hear everything signalled after that
        with anyio.fail_after(WAIT):
            for event in listening:
                await event.wait()
            await transport.signal(b"ping")
            await transport.signal(b"last")
            for event in heard_last:
                await event.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for heard in got:
        assert b"before anyone listens" not in heard
        assert heard == [b"ping", b"last"]
