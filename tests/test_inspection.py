"""Remote cancel and inspection through the library, over every transport (memory, Redis,
RabbitMQ): ``Subscriber.cancel``, ``status``, ``runs``, ``groups``, ``dead_letters``."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
import uuid
from typing import Any

import anyio
import pytest
from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.runnables import RunnableLambda

import eventbus
from eventbus._wire import Event, encode_envelope
from eventbus.transports import OutFrame, open_transport

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

WAIT = 30


def endless(started: threading.Event | None = None) -> RunnableLambda[Any, Any]:
    """A run that emits custom events until it is cancelled."""

    async def ticks(x: Any) -> Any:
        for i in itertools.count():
            await adispatch_custom_event("tick", {"i": i})
            if i == 3 and started is not None:
                started.set()
            await asyncio.sleep(0.01)  # pacing a stream of events, not synchronising
        return x

    return RunnableLambda(ticks, name="endless")


async def test_cancel_a_run_from_another_subscriber(url: str, namespace: str) -> None:
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace, idle_timeout=WAIT) as sub,
    ):
        task = asyncio.create_task(pub.run(endless(), 0, config={"run_id": run_id}))
        follower = asyncio.create_task(_follow_until_error(sub, run_id))
        with anyio.fail_after(WAIT):
            while (await sub.status(run_id, wait=0.2, settle=0.05)).status != "running":
                pass
        result = await sub.cancel(run_id, reason="user pressed stop", timeout=WAIT)
        assert result.outcome == "cancelled" and result.worker == pub.producer
        # the worker's call raises it, its task is not cancelled
        with pytest.raises(eventbus.RunCancelledError) as raised:
            await asyncio.wait_for(task, WAIT)
        assert raised.value.reason == "user pressed stop"
        assert not task.cancelled()
        error = await asyncio.wait_for(follower, WAIT)
        assert isinstance(error, eventbus.RunCancelledError)
        assert error.reason == "user pressed stop"
        status = await sub.status(run_id)
        assert (status.status, status.error) == ("cancelled", "user pressed stop")
        assert status.events >= 1 and status.duration is not None and status.started
        # asked again: it has ended, which is reported, not raised
        again = await sub.cancel(run_id, reason="twice", timeout=WAIT)
        assert (again.outcome, again.status.status) == ("finished", "cancelled")
        unknown = await sub.cancel(str(uuid.uuid4()), timeout=WAIT)
        assert (unknown.outcome, unknown.status.status) == ("unknown", "unknown")
        # the publisher goes on serving other runs
        assert await pub.run(RunnableLambda(lambda x: x + 1), 1) == 2


async def _follow_until_error(sub: eventbus.Subscriber, run_id: str) -> BaseException | None:
    try:
        async for _ in sub.astream_events(run_id):
            pass
    except eventbus.EventbusError as exc:
        return exc
    return None


async def test_cancel_reaches_astream_events_and_sync_publishers(url: str, namespace: str) -> None:
    run_a, run_b = str(uuid.uuid4()), str(uuid.uuid4())
    got: list[Any] = []
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace, idle_timeout=WAIT) as sub,
    ):

        async def consume() -> None:
            try:
                async for ev in pub.astream_events(endless(), 0, config={"run_id": run_a}):
                    got.append(ev)
            except eventbus.RunCancelledError as exc:
                got.append(exc)

        consumer = asyncio.create_task(consume())
        await _until_running(sub, run_a)
        result = await sub.cancel(run_a, reason="a", timeout=WAIT)
        assert result.outcome == "cancelled", result
        await asyncio.wait_for(consumer, WAIT)
        assert isinstance(got[-1], eventbus.RunCancelledError) and got[-1].reason == "a"

        outcome: list[Any] = []

        def sync_worker() -> None:
            with eventbus.SyncPublisher(url, namespace) as spub:
                try:
                    spub.run(endless(), 0, config={"run_id": run_b})
                except eventbus.RunCancelledError as exc:
                    outcome.append(exc)

        thread = threading.Thread(target=sync_worker)
        thread.start()
        try:
            await _until_running(sub, run_b)
            result = await sub.cancel(run_b, reason="b", timeout=WAIT)
            assert result.outcome == "cancelled", result
        finally:
            await anyio.to_thread.run_sync(thread.join, WAIT)
        assert [e.reason for e in outcome] == ["b"]
        assert (await sub.status(run_b)).status == "cancelled"


async def _until_running(sub: eventbus.Subscriber, run_id: str) -> None:
    with anyio.fail_after(WAIT):
        while (await sub.status(run_id, wait=0.2, settle=0.05)).status != "running":
            pass


async def test_a_cancel_nobody_answers_is_reported_after_the_timeout(
    url: str, namespace: str
) -> None:
    run_id = str(uuid.uuid4())
    # a worker that does not listen stands for one that is gone
    async with (
        eventbus.Subscriber(url, namespace, idle_timeout=WAIT) as sub,
        eventbus.Publisher(url, namespace, remote_cancel=False) as pub,
    ):
        task = asyncio.create_task(pub.run(endless(), 0, config={"run_id": run_id}))
        await _until_running(sub, run_id)
        result = await sub.cancel(run_id, reason="anyone?", timeout=1.0)
        assert (result.outcome, result.status.status) == ("no_worker", "running")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_status_and_runs_tell_each_outcome(url: str, namespace: str) -> None:
    ok, bad = str(uuid.uuid4()), str(uuid.uuid4())

    def explode(x: Any) -> Any:
        raise ValueError("no luck")

    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        await pub.run(RunnableLambda(lambda x: x, name="fine"), 1, config={"run_id": ok})
        with pytest.raises(ValueError, match="no luck"):
            await pub.run(RunnableLambda(explode, name="broken"), 1, config={"run_id": bad})
        good = await sub.status(ok)
        assert (good.status, good.name, good.events, good.error) == ("ended", "fine", 3, None)
        assert good.started and good.duration is not None and good.duration >= 0
        failed = await sub.status(bad)
        assert (failed.status, failed.error_type, failed.error) == (
            "failed",
            "ValueError",
            "no luck",
        )
        assert (await sub.status(str(uuid.uuid4()), wait=0.3)).status == "unknown"
        runs = await sub.runs(wait=WAIT)
        assert [(r.run_id, r.status) for r in runs] == [(bad, "failed"), (ok, "ended")]

    # a run whose worker went silent (no end, nothing for longer than idle_timeout)
    silent = str(uuid.uuid4())
    t = open_transport(url, namespace)
    await t.connect()
    try:
        event = {"event": "on_chain_start", "run_id": silent, "name": "silent", "tags": [],
                 "metadata": {}, "data": {"input": 1}, "parent_ids": []}  # fmt: skip
        records = [Event(1, time.time() - 60, event)]
        await t.publish(
            [OutFrame(silent, encode_envelope("msgpack", namespace, silent, "p", records))]
        )
    finally:
        await t.aclose()
    async with eventbus.Subscriber(url, namespace, idle_timeout=30) as sub:
        lost = await sub.status(silent)
        assert (lost.status, lost.name, lost.events) == ("lost", "silent", 1)
        assert lost.error is not None and "nothing from its worker" in lost.error
        assert {r.run_id: r.status for r in await sub.runs(wait=WAIT)}[silent] == "lost"


async def test_groups_and_decoded_dead_letters(url: str, namespace: str) -> None:
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        assert await sub.groups() == []
        run_id = str(uuid.uuid4())
        await pub.run(RunnableLambda(lambda x: x, name="fine"), 1, config={"run_id": run_id})
        with anyio.fail_after(WAIT):
            async for msg in sub.consume("audit", "a1", start="first"):
                await msg.reject("cannot store it")
                if msg.kind == "end":
                    break
        (group,) = await sub.groups()
        assert group.name == "audit" and group.dead_letters >= 1
        dead = await sub.dead_letters("audit")
        records = [r for letter in dead for r in letter.records]
        assert {letter.reason for letter in dead} == {"cannot store it"}
        assert all(letter.run_id == run_id and letter.data for letter in dead)
        assert [r.kind for r in records] == ["event", "event", "event", "end"]
        assert records[0].event is not None and records[0].event["event"] == "on_chain_start"
        assert [r.seq for r in records] == [1, 2, 3, 4]


async def test_with_keys_only_signed_cancels_are_obeyed(url: str, namespace: str) -> None:
    keys = {"k1": "s" * 32}
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace, keys=keys) as pub,
        eventbus.Subscriber(url, namespace, keys=keys) as signed,
        eventbus.Subscriber(url, namespace, keys={"k2": "t" * 32}) as other,
    ):
        task = asyncio.create_task(pub.run(endless(), 0, config={"run_id": run_id}))
        await _until_running(signed, run_id)
        # a stranger's request is ignored (its status read fails verification too: it
        # sees nothing of the run)
        assert (await other.cancel(run_id, timeout=1.0)).outcome == "unknown"
        forged = await _forged_cancel(url, namespace, run_id)
        assert forged == "no_worker"
        assert (await signed.cancel(run_id, reason="signed", timeout=WAIT)).outcome == "cancelled"
        with pytest.raises(eventbus.RunCancelledError, match="signed"):
            await asyncio.wait_for(task, WAIT)


async def _forged_cancel(url: str, namespace: str, run_id: str) -> str:
    """A cancel request from a subscriber without keys (it reads the run unchecked)."""
    async with eventbus.Subscriber(url, namespace) as unsigned:
        return (await unsigned.cancel(run_id, reason="forged", timeout=1.0)).outcome


async def test_a_callback_handler_run_cannot_be_cancelled_and_says_so(
    url: str, namespace: str
) -> None:
    run_id = str(uuid.uuid4())
    release = asyncio.Event()

    async def wait(x: Any) -> Any:
        await adispatch_custom_event("waiting", {})
        await release.wait()
        return x

    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        runnable = RunnableLambda(wait)
        config: Any = {"run_id": run_id, "callbacks": [pub.callback_handler()]}
        task = asyncio.create_task(runnable.ainvoke(1, config))
        await _until_running(sub, run_id)
        result = await sub.cancel(run_id, timeout=WAIT)
        assert (result.outcome, result.worker) == ("refused", pub.producer)
        release.set()
        assert await asyncio.wait_for(task, WAIT) == 1
