"""One side of the scale scenario, in its own OS process (so its peak RSS is its own).

    python -m benchmarks._scale_proc ROLE URL NAMESPACE ARG [ARG]

ROLE ``publish-one`` (ARG: run id, events), ``follow`` (ARG: run id, events),
``publish-many`` (ARG: runs, tokens per run), ``consume`` (ARG: runs). Prints ``ready``
once connected, waits for a line on stdin (go), works, then prints one JSON line
``result {...}``: peak RSS (``VmHWM``), RSS when ready, and the event count over time
(one mark per 1% of the events) from which the parent computes rates per decile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
import uuid
from typing import Any

DEADLINE = 900.0


def _rss_mb() -> float:
    try:
        import psutil

        return float(psutil.Process().memory_info().rss) / 2**20
    except ImportError:
        with open("/proc/self/statm") as f:
            import os

            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mb() -> float:
    """Peak RSS of this process: VmHWM (ru_maxrss survives execve on Linux, so in a child
    of a big parent it would report the parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _go() -> None:
    loop = asyncio.get_running_loop()
    await asyncio.wait_for(loop.run_in_executor(None, sys.stdin.readline), DEADLINE)


class _Marks:
    """(seconds since start, events so far), every ``step`` events."""

    def __init__(self, step: int) -> None:
        self.step = max(1, step)
        self.t0 = time.perf_counter()
        self.marks: list[tuple[float, int]] = [(0.0, 0)]

    def add(self, count: int) -> None:
        if count % self.step == 0:
            self.marks.append((time.perf_counter() - self.t0, count))

    def close(self, count: int) -> None:
        if self.marks[-1][1] != count:
            self.marks.append((time.perf_counter() - self.t0, count))


def _events(n: int) -> Any:
    from langchain_core.messages import AIMessageChunk

    from .codec import token_event

    base = token_event()
    base["metadata"] = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}
    for i in range(n):  # generated lazily: 1M pre-built dicts would dwarf the publisher's RSS
        ev = dict(base)
        ev["data"] = {"chunk": AIMessageChunk(content=f" tok{i}")}
        yield ev


async def publish_one(url: str, ns: str, run_id: str, n: int) -> dict[str, Any]:
    from eventbus import Publisher

    async with Publisher(url, namespace=ns) as pub:
        ready = _rss_mb()
        _say("ready")
        await _go()
        marks = _Marks(n // 100)
        run = pub._open_run(run_id)
        limit = pub._max_buffer_bytes
        count = 0
        for event in _events(n):
            pub._emit_event(run, event)
            if pub._buffered > limit:
                await pub._backpressure()
            await asyncio.sleep(0)
            count += 1
            marks.add(count)
        await pub._finish(run, None)
        marks.close(count)
        stats = pub.stats
    return {
        "events": count,
        "marks": marks.marks,
        "rss_ready_mb": ready,
        "rss_end_mb": _rss_mb(),
        "peak_rss_mb": _peak_mb(),
        "frames": stats.frames,
        "backpressure_waits": stats.backpressure_waits,
    }


async def follow(url: str, ns: str, run_id: str, n: int) -> dict[str, Any]:
    from eventbus import Subscriber

    async with Subscriber(url, namespace=ns, idle_timeout=60, start_timeout=120) as sub:
        ready = _rss_mb()
        _say("ready")
        await _go()
        marks = _Marks(n // 100)
        count = 0
        async with contextlib.aclosing(sub.follow(run_id)) as items:
            async for _item in items:
                count += 1
                marks.add(count)
        marks.close(count)
    return {
        "events": count,
        "marks": marks.marks,
        "rss_ready_mb": ready,
        "rss_end_mb": _rss_mb(),
        "peak_rss_mb": _peak_mb(),
    }


async def publish_many(url: str, ns: str, runs: int, tokens: int) -> dict[str, Any]:
    from eventbus import Publisher

    from ._common import streaming_chain

    chain = streaming_chain(tokens)
    async with Publisher(url, namespace=ns) as pub:
        ready = _rss_mb()
        _say("ready")
        await _go()
        t0 = time.perf_counter()
        marks: list[tuple[float, int]] = [(0.0, 0)]
        stop = asyncio.Event()

        async def sample() -> None:
            while not stop.is_set():
                await asyncio.sleep(0.05)
                marks.append((time.perf_counter() - t0, pub.stats.events))

        sampler = asyncio.create_task(sample())
        await asyncio.gather(
            *(pub.run(chain, {"q": f"q{i}"}, config={"run_id": uuid.uuid4()}) for i in range(runs))
        )
        stop.set()
        await sampler
        marks.append((time.perf_counter() - t0, pub.stats.events))
        stats = pub.stats
    return {
        "events": stats.events,
        "marks": marks,
        "rss_ready_mb": ready,
        "rss_end_mb": _rss_mb(),
        "peak_rss_mb": _peak_mb(),
        "frames": stats.frames,
        "backpressure_waits": stats.backpressure_waits,
    }


async def consume(url: str, ns: str, runs: int) -> dict[str, Any]:
    from eventbus import Subscriber

    async with Subscriber(url, namespace=ns) as sub:
        group = f"g{uuid.uuid4().hex[:8]}"
        msgs = sub.consume(group, "c1", start="first", prefetch=100)
        ready = _rss_mb()
        _say("ready")
        await _go()
        marks = _Marks(1000)
        count = ended = 0
        async with contextlib.aclosing(msgs):
            async for msg in msgs:
                await msg.ack()
                if msg.kind == "event":
                    count += 1
                    marks.add(count)
                else:
                    ended += 1
                    if ended >= runs:
                        break
        marks.close(count)
    return {
        "events": count,
        "runs": ended,
        "marks": marks.marks,
        "rss_ready_mb": ready,
        "rss_end_mb": _rss_mb(),
        "peak_rss_mb": _peak_mb(),
    }


async def main() -> None:
    role, url, ns, *args = sys.argv[1:]
    if role == "publish-one":
        result = await publish_one(url, ns, args[0], int(args[1]))
    elif role == "follow":
        result = await follow(url, ns, args[0], int(args[1]))
    elif role == "publish-many":
        result = await publish_many(url, ns, int(args[0]), int(args[1]))
    elif role == "consume":
        result = await consume(url, ns, int(args[0]))
    else:
        raise SystemExit(f"unknown role {role!r}")
    _say("result " + json.dumps(result))


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), DEADLINE))
