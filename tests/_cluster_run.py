"""A run of paced custom events ("tick" i), followed and read through a consumer group
while something fails (a node, a slot), counting what the application received: the one
scenario of the cluster failover tests (tests/test_cluster_failover.py,
tests/test_cluster_rabbitmq.py)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.runnables import RunnableLambda

import eventbus

WAIT = 90  # a failover (node timeout + election), a node's restart, on a busy machine
BEFORE, AFTER = 200, 200  # ticks the follower sees before the failure, and after it


def counts(seen: list[int], published: int) -> tuple[int, int]:
    """(lost, duplicated) ticks among ``published`` ones."""
    counter = Counter(seen)
    lost = sum(1 for i in range(published) if i not in counter)
    return lost, sum(n - 1 for n in counter.values())


async def _progress(progress: asyncio.Event, follower: asyncio.Task[None]) -> None:
    """Wait for the follower's progress; its own failure, if it fails first, is raised."""
    waiter = asyncio.create_task(progress.wait())
    try:
        with anyio.fail_after(WAIT):
            await asyncio.wait({waiter, follower}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if follower.done() and not progress.is_set():
        follower.result()
        raise AssertionError("the follower ended early")


async def ticking_run(
    url: str, namespace: str, run_id: str, disrupt: Callable[[], None]
) -> dict[str, Any]:
    """Publish ticks as run ``run_id``; once the follower saw BEFORE of them, call
    ``disrupt`` (in a thread); once it saw AFTER more (or a SequenceGapError), end the run.
    Returns the counts: published, lost/duplicated for the follower and the group."""
    stop = asyncio.Event()
    followed: list[int] = []
    grouped: list[int] = []
    progress = asyncio.Event()
    goal = BEFORE
    gap: list[eventbus.SequenceGapError] = []

    async def ticks(x: Any) -> int:
        i = 0
        while not stop.is_set():
            await adispatch_custom_event("tick", {"i": i})
            i += 1
            await asyncio.sleep(0.002)  # pacing the stream, not synchronising
        return i

    async def follow(sub: eventbus.Subscriber) -> None:
        try:
            async for ev in sub.astream_events(run_id):
                if ev["event"] == "on_custom_event":
                    followed.append(ev["data"]["i"])
                    if len(followed) >= goal:
                        progress.set()
        except eventbus.SequenceGapError as exc:
            gap.append(exc)
            progress.set()

    async def consume(sub: eventbus.Subscriber) -> None:
        async for msg in sub.consume("audit", "c1", start="first", visibility_timeout=5):
            if msg.run_id == run_id:
                if msg.kind == "event" and msg.event and msg.event["event"] == "on_custom_event":
                    grouped.append(msg.event["data"]["i"])
                elif msg.kind != "event":
                    await msg.ack()
                    return
            await msg.ack()

    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace, idle_timeout=WAIT) as sub,
        eventbus.Subscriber(url, namespace) as group_sub,
    ):
        group_task = asyncio.create_task(consume(group_sub))
        follow_task = asyncio.create_task(follow(sub))
        run = asyncio.create_task(pub.run(RunnableLambda(ticks), 0, config={"run_id": run_id}))
        try:
            await _progress(progress, follow_task)
            started = time.monotonic()
            await anyio.to_thread.run_sync(disrupt)
            disrupted = time.monotonic() - started
            progress.clear()
            goal = len(followed) + AFTER
            await _progress(progress, follow_task)  # the run carries on (or a gap is seen)
            stop.set()
            with anyio.fail_after(WAIT):
                published = await run
                await follow_task
                await group_task
        finally:
            stop.set()
            for task in (run, follow_task, group_task):
                task.cancel()
            await asyncio.gather(run, follow_task, group_task, return_exceptions=True)
        follow_lost, follow_dups = counts(followed, published)
        group_lost, group_dups = counts(grouped, published)
        return {
            "published": published,
            "follower_lost": follow_lost,
            "follower_duplicates": follow_dups,
            "follower_gap": str(gap[0]) if gap else None,
            "duplicate_frames_dropped_by_follower": sub.stats.duplicates,
            "group_lost": group_lost,
            "group_duplicates": group_dups,
            "failure_seconds": round(disrupted, 2),
        }
