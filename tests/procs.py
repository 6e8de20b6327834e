"""Entry points for the multi-process tests: each runs as its own OS process and prints
one JSON line per thing it saw (flushed), so the test can watch it live.

    python tests/procs.py worker    URL NS RUN_ID       # publishes a run; prints its local events
    python tests/procs.py endless   URL NS RUN_ID       # publishes a run that never ends
    python tests/procs.py follower  URL NS RUN_ID [IDLE] # prints the run's remote events, then
                                                        # "end", or "lost" (WorkerLostError)
    python tests/procs.py consumer  URL NS GROUP NAME   # prints every group message (acked)
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import sys
from typing import Any

import msgspec
from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.runnables import RunnableLambda
from runnables import CASES

import eventbus
from eventbus._codec import to_wire

_json = msgspec.json.Encoder()


def emit(kind: str, **fields: Any) -> None:
    sys.stdout.write(_json.encode({"kind": kind, **fields}).decode() + "\n")
    sys.stdout.flush()


async def worker(url: str, ns: str, run_id: str) -> None:
    runnable, value, kwargs = CASES["custom_events"]()
    # one record per frame, so that competing consumers have frames to share
    async with eventbus.Publisher(url, ns, max_frame_bytes=1) as pub:
        async for ev in pub.astream_events(runnable, value, config={"run_id": run_id}, **kwargs):
            emit("event", event=to_wire(ev))
    emit("done", events=pub.stats.events)


async def endless(url: str, ns: str, run_id: str) -> None:
    """A run that emits custom events until the process is killed; "flushed" once the
    first ten are on the broker."""

    async def ticks(x: Any) -> Any:
        for i in itertools.count():
            await adispatch_custom_event("tick", {"i": i})
            if i == 9:
                await pub.flush()
                emit("flushed")
            await asyncio.sleep(0.002)  # pacing a stream of events, not synchronising
        return x

    async with eventbus.Publisher(url, ns, heartbeat_interval=0.2) as pub:
        runnable = RunnableLambda(ticks)
        async for ev in pub.astream_events(runnable, 0, config={"run_id": run_id}):
            emit("event", event=to_wire(ev))


async def follower(url: str, ns: str, run_id: str, idle: str = "30") -> None:
    # (keys, if any, from $EVENTBUS_KEYS, as for the worker and the consumer)
    async with eventbus.Subscriber(url, ns, idle_timeout=float(idle)) as sub:
        emit("ready")
        try:
            async for ev in sub.astream_events(run_id):
                emit("event", event=to_wire(ev))
        except eventbus.WorkerLostError as exc:
            emit("lost", idle_timeout=exc.idle_timeout)
            return
    emit("stats", **dataclasses.asdict(sub.stats))
    emit("end")


async def consumer(url: str, ns: str, group: str, name: str) -> None:
    async with eventbus.Subscriber(url, ns) as sub:
        emit("ready")
        async for msg in sub.consume(group, name, start="first", prefetch=5):
            emit(msg.kind, run=msg.run_id, seq=msg.seq, event=to_wire(msg.event))
            await msg.ack()
            if msg.kind != "event":
                emit("stats", **dataclasses.asdict(sub.stats))


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    roles = {"worker": worker, "endless": endless, "follower": follower, "consumer": consumer}
    asyncio.run(roles[role](*args))
