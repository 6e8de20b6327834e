"""Entry points for the multi-process tests: each runs as its own OS process and prints
one JSON line per thing it saw (flushed), so the test can watch it live.

    python tests/procs.py worker    URL NS RUN_ID       # publishes a run; prints its local events
    python tests/procs.py endless   URL NS RUN_ID       # publishes a run that never ends
    python tests/procs.py follower  URL NS RUN_ID [IDLE] # prints the run's remote events, then
                                                        # "end", or "lost" (WorkerLostError)
    python tests/procs.py consumer  URL NS GROUP NAME   # prints every group message (acked)
    python tests/procs.py cancellable URL NS RUN_ID HOW # a run that ends only when cancelled
                                                        # remotely (HOW: run, stream, sync);
                                                        # prints "flushed", then "cancelled"
    python tests/procs.py outcome   URL NS RUN_ID       # follows the run; prints how it ended
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


def _ticks(flushed: Any) -> RunnableLambda[Any, Any]:
    async def ticks(x: Any) -> Any:
        for i in itertools.count():
            await adispatch_custom_event("tick", {"i": i})
            if i == 9:
                await flushed()
            await asyncio.sleep(0.002)  # pacing a stream of events, not synchronising
        return x

    return RunnableLambda(ticks)


async def cancellable(url: str, ns: str, run_id: str, how: str) -> None:
    config: Any = {"run_id": run_id}
    if how == "sync":
        with eventbus.SyncPublisher(url, ns) as spub:

            async def flushed_sync() -> None:
                await spub._publisher.flush()  # (on the publisher's own loop)
                emit("flushed")

            try:
                spub.run(_ticks(flushed_sync), 0, config=config)
            except eventbus.RunCancelledError as exc:
                emit("cancelled", reason=exc.reason)
        return
    async with eventbus.Publisher(url, ns) as pub:

        async def flushed() -> None:
            await pub.flush()
            emit("flushed")

        try:
            if how == "stream":
                async for _ in pub.astream_events(_ticks(flushed), 0, config=config):
                    pass
            else:
                await pub.run(_ticks(flushed), 0, config=config)
        except eventbus.RunCancelledError as exc:
            emit("cancelled", reason=exc.reason)
        # the publisher goes on: another run after the cancelled one
        emit("next", output=await pub.run(RunnableLambda(lambda x: x + 1), 1))


async def outcome(url: str, ns: str, run_id: str) -> None:
    async with eventbus.Subscriber(url, ns, idle_timeout=60) as sub:
        emit("ready")
        try:
            async for _ in sub.astream_events(run_id):
                pass
        except eventbus.RunCancelledError as exc:
            emit("cancelled", reason=exc.reason)
            return
        except eventbus.EventbusError as exc:
            emit("error", error=repr(exc))
            return
    emit("end")


if __name__ == "__main__":
    role, *args = sys.argv[1:]
    roles = {
        "worker": worker,
        "endless": endless,
        "follower": follower,
        "consumer": consumer,
        "cancellable": cancellable,
        "outcome": outcome,
    }
    asyncio.run(roles[role](*args))
