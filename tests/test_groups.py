"""Consumer groups at the ``Subscriber`` level, over every transport: frames of several
records acked record by record, reject, redelivery with ``redelivered``, dead letters after
``max_deliveries``, and ``delete_group``.

Frames are written by hand (``encode_envelope``) so that the test knows exactly which
records share a broker delivery.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import eventbus
from eventbus._wire import End, Event, encode_envelope
from eventbus.transports import OutFrame, open_transport

pytestmark = pytest.mark.anyio

WAIT = 30  # seconds any single wait may take before the test fails


def _event(run_id: str, n: int) -> dict[str, Any]:
    return {"event": "on_custom_event", "run_id": run_id, "name": f"e{n}", "tags": [],
            "metadata": {}, "data": n, "parent_ids": []}  # fmt: skip


async def _publish_runs(url: str, namespace: str, sizes: list[int]) -> list[tuple[str, bytes]]:
    """One frame per run, holding ``size`` events and the end: [(run id, frame)]."""
    out = []
    for size in sizes:
        run_id = str(uuid.uuid4())
        records = [Event(i, 0.0, _event(run_id, i)) for i in range(1, size + 1)]
        frame = encode_envelope("msgpack", namespace, run_id, "p", [*records, End(size + 1, 0.0)])
        out.append((run_id, frame))
    t = open_transport(url, namespace)
    await t.connect()
    try:
        await t.publish([OutFrame(run_id, frame) for run_id, frame in out])
    finally:
        await t.aclose()
    return out


async def _take(
    sub: eventbus.Subscriber,
    group: str,
    consumer: str,
    until: Callable[[list[eventbus.Message]], bool],
    settle: Callable[[eventbus.Message], Any] | None = None,
    **options: Any,
) -> list[eventbus.Message]:
    """Messages of one consumer until ``until(seen)``; ``settle`` acks/rejects (or not)
    each message while the consumer is alive. Leaving the loop stops the consumer, which
    leaves what it did not settle to be redelivered."""
    seen: list[eventbus.Message] = []
    with anyio.fail_after(WAIT):
        async for msg in sub.consume(group, consumer, start="first", **options):
            seen.append(msg)
            if settle is not None:
                await settle(msg)
            if until(seen):
                break
    return seen


def _keys(msgs: list[eventbus.Message]) -> list[tuple[str, int, str]]:
    return [(m.run_id, m.seq, m.kind) for m in msgs]


async def test_a_partly_acked_frame_is_redelivered_whole(url: str, namespace: str) -> None:
    (run_a, _), (run_b, _) = await _publish_runs(url, namespace, [2, 1])
    opts = {"visibility_timeout": 0.5, "max_deliveries": 5, "prefetch": 10}
    async with eventbus.Subscriber(url, namespace) as sub:

        async def ack_all_but_the_end_of_a(msg: eventbus.Message) -> None:
            if not (msg.run_id == run_a and msg.kind == "end"):
                await msg.ack()

        first = await _take(
            sub, "g", "c1", lambda seen: len(seen) == 5, settle=ack_all_but_the_end_of_a, **opts
        )
        assert sorted(_keys(first)) == sorted(
            [
                (run_a, 1, "event"),
                (run_a, 2, "event"),
                (run_a, 3, "end"),
                (run_b, 1, "event"),
                (run_b, 2, "end"),
            ]
        )
        assert not any(m.redelivered for m in first)

        # c1 has gone holding two acked records and one un-acked of run A's frame: the
        # frame is one broker delivery, so all three records come again, marked
        # redelivered; run B's frame was acked whole, so the first delivery c2 gets is A's
        async def ack(msg: eventbus.Message) -> None:
            await msg.ack()

        again = await _take(sub, "g", "c2", lambda seen: len(seen) == 3, settle=ack, **opts)
        assert _keys(again) == [(run_a, 1, "event"), (run_a, 2, "event"), (run_a, 3, "end")]
        assert all(m.redelivered for m in again)
        assert [m.event["data"] for m in again if m.event is not None] == [1, 2]

        # everything is acked now: nothing is pending, nothing is dead
        assert await sub.dead_letters("g") == []


async def test_rejecting_one_record_dead_letters_its_whole_frame(url: str, namespace: str) -> None:
    (run_a, frame_a), (run_b, _) = await _publish_runs(url, namespace, [2, 1])
    async with eventbus.Subscriber(url, namespace) as sub:

        async def reject_a2(msg: eventbus.Message) -> None:
            if msg.run_id == run_a and msg.seq == 2:
                await msg.reject("a2 is poison")
            else:
                await msg.ack()

        seen = await _take(sub, "rej", "c1", lambda seen: len(seen) == 5, settle=reject_a2)
        assert {m.run_id for m in seen} == {run_a, run_b}
        with anyio.fail_after(WAIT):
            dead = await sub.dead_letters("rej")
        # the frame is settled once all its records are: the reject of record 2 wins over
        # the acks of records 1 and 3, and the frame goes to the dead letters as sent
        assert [(d.data, d.reason) for d in dead] == [(frame_a, "a2 is poison")]
        assert sub.stats.events == 3  # all three events were delivered before the reject


async def test_unacked_frames_are_dead_lettered_after_max_deliveries(
    url: str, namespace: str
) -> None:
    ((_, frame_a),) = await _publish_runs(url, namespace, [1])
    opts = {"visibility_timeout": 0.3, "max_deliveries": 2, "prefetch": 10}
    async with eventbus.Subscriber(url, namespace) as sub:
        deliveries: list[bool] = []
        # a consumer that never acks: the frame comes once new, once redelivered, then
        # goes to the dead letters, and this consumer never sees it a third time
        with anyio.fail_after(WAIT):
            while not await sub.dead_letters("dlq"):
                # each pass holds a consumer open long enough (2 visibility timeouts) for
                # the broker to redeliver or dead-letter what the previous pass left
                got = await _take_for(sub, "dlq", f"c{len(deliveries)}", 0.6, **opts)
                deliveries += [m.redelivered for m in got if m.kind == "event"]
        dead = await sub.dead_letters("dlq")
    assert deliveries == [False, True]
    assert [d.data for d in dead] == [frame_a]
    assert dead[0].deliveries == 2 and "deliver" in dead[0].reason


async def _take_for(
    sub: eventbus.Subscriber, group: str, consumer: str, seconds: float, **options: Any
) -> list[eventbus.Message]:
    """What one never-acking consumer receives in ``seconds``."""
    seen: list[eventbus.Message] = []

    async def run() -> None:
        async for msg in sub.consume(group, consumer, start="first", **options):
            seen.append(msg)

    task = asyncio.create_task(run())
    await asyncio.wait({task}, timeout=seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return seen


async def test_delete_group_starts_it_afresh(url: str, namespace: str) -> None:
    (run_a, frame_a), (run_b, _) = await _publish_runs(url, namespace, [1, 1])
    async with eventbus.Subscriber(url, namespace) as sub:

        async def reject_a(msg: eventbus.Message) -> None:
            if msg.run_id == run_a:
                await msg.reject("test")
            else:
                await msg.ack()

        await _take(sub, "gone", "c1", lambda seen: len(seen) == 4, settle=reject_a)
        assert [d.data for d in await sub.dead_letters("gone")] == [frame_a]

        await sub.delete_group("gone")
        await sub.delete_group("never-existed")  # not an error
        assert await sub.dead_letters("gone") == []

        async def ack(msg: eventbus.Message) -> None:
            await msg.ack()

        # the same name is a new group: it starts at the first retained record again, and
        # nothing is marked redelivered (the old group's delivery counts are gone)
        again = await _take(sub, "gone", "c1", lambda seen: len(seen) == 4, settle=ack)
        assert sorted(_keys(again)) == sorted(
            [(run_a, 1, "event"), (run_a, 2, "end"), (run_b, 1, "event"), (run_b, 2, "end")]
        )
        assert not any(m.redelivered for m in again)
