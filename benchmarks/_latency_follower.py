"""The follower side of the latency scenario, run in its own OS process.

    python -m benchmarks._latency_follower MODE URL NAMESPACE NAME [NAME ...]

MODE ``eventbus``: NAMEs are run ids followed one after the other with
``Subscriber.follow``; ``raw-redis``: NAMEs are stream keys read with ``XREAD BLOCK``;
``raw-amqp``: NAMEs are queues consumed with aio-pika (auto-ack); ``raw-amqp-stream``:
NAMEs are stream queues consumed from their first offset (acked). Before each NAME it
prints ``following <i>`` (the publisher waits for it); at the end one JSON line: per
NAME the publish-to-receipt deltas summarised (µs), computed from the ``time.time_ns()``
stamp the publisher put in each event against this process' ``time.time_ns()`` at
receipt (the same machine clock).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from typing import Any

DEADLINE = 900.0  # seconds for the whole process (the full scenario: ~5 min); waits are bounded


SETTLED_NS = 100_000_000  # "steady": events stamped 100 ms or more after the run's first


def _q(xs: list[float], p: float) -> float:
    return xs[min(len(xs) - 1, max(0, round(p * (len(xs) - 1))))]


def _summary(deltas_ns: list[int], stamps_ns: list[int]) -> dict[str, Any]:
    """Percentiles (µs) of every event's delta, and p99 of the steady part: the events
    stamped from 100 ms after the first on (a run's first frames also wait for what the
    broker does once per run, e.g. RabbitMQ creating the run's stream)."""
    xs = sorted(d / 1000 for d in deltas_ns)
    if not xs:
        return {"count": 0}
    first = min(stamps_ns)
    steady = sorted(
        d / 1000 for d, t in zip(deltas_ns, stamps_ns, strict=True) if t - first >= SETTLED_NS
    )
    out = {
        "count": len(xs),
        "p50_us": _q(xs, 0.5),
        "p99_us": _q(xs, 0.99),
        "p999_us": _q(xs, 0.999),
        "max_us": xs[-1],
    }
    if steady:
        out["steady_p99_us"] = _q(steady, 0.99)
    return out


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _eventbus(url: str, ns: str, names: list[str]) -> list[dict[str, Any]]:
    from eventbus import Subscriber

    out = []
    # start_timeout: a run starts when the publisher gets round to it, after the other
    # modes' runs of the same round (a slow baseline's take tens of seconds)
    async with Subscriber(url, namespace=ns, idle_timeout=30, start_timeout=DEADLINE) as sub:
        for i, run_id in enumerate(names):
            deltas: list[int] = []
            stamps: list[int] = []
            _say(f"following {i}")
            async with contextlib.aclosing(sub.follow(run_id)) as items:
                async for item in items:
                    now = time.time_ns()
                    stamp = (item.event.get("metadata") or {}).get("t_ns")
                    if isinstance(stamp, int):
                        deltas.append(now - stamp)
                        stamps.append(stamp)
            out.append(_summary(deltas, stamps))
    return out


async def _raw_redis(url: str, names: list[str]) -> list[dict[str, Any]]:
    import redis.asyncio as aioredis

    out = []
    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        for i, key in enumerate(names):
            deltas: list[int] = []
            stamps: list[int] = []
            last = "0-0"
            _say(f"following {i}")
            end = time.monotonic() + DEADLINE
            finished = False
            while not finished and time.monotonic() < end:
                reply = await client.xread({key: last}, count=1000, block=1000)
                now = time.time_ns()
                for _stream, page in reply or ():
                    for entry_id, fields in page:
                        last = entry_id
                        data = fields[b"data"]
                        if data == b"end":
                            finished = True
                            break
                        deltas.append(now - int(data))
                        stamps.append(int(data))
            out.append(_summary(deltas, stamps))
    finally:
        await client.aclose()
    return out


async def _raw_amqp(url: str, names: list[str], stream: bool = False) -> list[dict[str, Any]]:
    import aio_pika

    out = []
    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=1000)
        for i, name in enumerate(names):
            deltas: list[int] = []
            stamps: list[int] = []
            done = asyncio.get_running_loop().create_future()

            async def on_message(
                message: Any,
                deltas: list[int] = deltas,
                stamps: list[int] = stamps,
                done: Any = done,
            ) -> None:
                now = time.time_ns()
                if stream:
                    await message.ack()  # a stream consumer's credit comes back with acks
                if message.body == b"end":
                    if not done.done():
                        done.set_result(None)
                    return
                deltas.append(now - int(message.body))
                stamps.append(int(message.body))

            queue = await channel.get_queue(name, ensure=False)
            if stream:
                tag = await queue.consume(on_message, arguments={"x-stream-offset": "first"})
            else:
                tag = await queue.consume(on_message, no_ack=True)
            _say(f"following {i}")
            await asyncio.wait_for(done, DEADLINE)
            await queue.cancel(tag)
            out.append(_summary(deltas, stamps))
    finally:
        await conn.close()
    return out


async def main() -> None:
    mode, url, ns, *names = sys.argv[1:]
    if mode == "eventbus":
        result = await _eventbus(url, ns, names)
    elif mode == "raw-redis":
        result = await _raw_redis(url, names)
    elif mode == "raw-amqp":
        result = await _raw_amqp(url, names)
    elif mode == "raw-amqp-stream":
        result = await _raw_amqp(url, names, stream=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    _say("result " + json.dumps(result))


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), DEADLINE))
