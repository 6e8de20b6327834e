"""Throughput probe for the Redis transport (not a test).

Publishes N frames of ~8 KB (about 20 packed events each) through
``RedisTransport.publish()`` in batches of several sizes, and the same XADDs through a raw
redis-py pipeline, and prints frames/s and MB/s (median of ``--repeat`` rounds).

    .venv/bin/python benchmarks/redis_probe.py [--url redis://127.0.0.1:6379/15] [-n 20000]

It writes under a fresh namespace and deletes its keys afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import redis.asyncio as aioredis

from eventbus.transports import OutFrame, open_transport

FRAME = 8 * 1024


async def probe_transport(url: str, ns: str, n: int, batch: int, fanout: bool) -> float:
    t = open_transport(url, ns)
    await t.connect()
    try:
        runs = [str(uuid.uuid4()) for _ in range(8)]  # a few concurrent runs, as a worker has
        payload = os.urandom(FRAME)
        frames = [OutFrame(runs[i % len(runs)], payload, fanout=fanout) for i in range(n)]
        start = time.perf_counter()
        for i in range(0, n, batch):
            await t.publish(frames[i : i + batch])
        return time.perf_counter() - start
    finally:
        await t.aclose()


async def probe_raw(url: str, ns: str, n: int, batch: int, fanout: bool) -> float:
    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        runs = [f"raw:{{{ns}:{uuid.uuid4()}}}:run" for _ in range(8)]
        events = f"raw:{{{ns}}}:events"
        payload = os.urandom(FRAME)
        start = time.perf_counter()
        for i in range(0, n, batch):
            async with client.pipeline(transaction=False) as pipe:
                for j in range(i, min(n, i + batch)):
                    pipe.xadd(runs[j % len(runs)], {"data": payload})
                    if fanout:
                        pipe.xadd(events, {"data": payload}, maxlen=100_000, approximate=True)
                await pipe.execute()
        return time.perf_counter() - start
    finally:
        await client.aclose()


async def cleanup(url: str, ns: str) -> None:
    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        for pattern in (f"eventbus:{{{ns}*", f"raw:{{{ns}*"):
            async for key in client.scan_iter(match=pattern, count=1000):
                await client.delete(key)
    finally:
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--url", default=os.environ.get("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    )
    parser.add_argument("-n", type=int, default=20_000, help="frames per round")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batches", default="1,10,50,200")
    args = parser.parse_args()
    mb = args.n * FRAME / 1e6
    print(f"{args.n} frames of {FRAME} B ({mb:.0f} MB) per round, median of {args.repeat}")
    print(f"{'path':<34}{'batch':>6}{'frames/s':>12}{'MB/s':>9}")
    for fanout in (True, False):
        for batch in (int(b) for b in args.batches.split(",")):
            for name, probe in (("publish()", probe_transport), ("raw pipelined XADD", probe_raw)):
                times = []
                for _ in range(args.repeat):
                    ns = f"probe{uuid.uuid4().hex[:10]}"
                    try:
                        times.append(await probe(args.url, ns, args.n, batch, fanout))
                    finally:
                        await cleanup(args.url, ns)
                elapsed = statistics.median(times)
                label = f"{name} {'+fanout' if fanout else 'run only'}"
                print(f"{label:<34}{batch:>6}{args.n / elapsed:>12.0f}{mb / elapsed:>9.1f}")


if __name__ == "__main__":
    asyncio.run(main())
