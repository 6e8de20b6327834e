"""Scale on one Redis node and on a Redis Cluster, and the cost of ``wait_replicas``:
the figures of ``docs/scaling.md``.

    python -m benchmarks.cluster [--runs 10000] [--procs 5] [--single URL] [--cluster URL]
                                 [--skip-scale]

* **concurrent runs**: ``--runs`` concurrent ``Publisher.run`` of ``prompt |
  NativeFakeChat(30 tokens) | StrOutputParser``, spread over ``--procs`` publisher
  processes (one process with 10,000 concurrent runs starves its own event loop: its
  publishes time out), consumed by one consumer group consumer in another process (the
  processes of ``benchmarks.scale``); per broker: events/s
  of each side, their peak RSS, the broker's memory and CPU time spent (``INFO``, summed
  over the primaries), and how the runs' keys and the group stream partitions spread over
  the primaries;
* **wait_replicas**: 1,000 batches of 1 and of 50 frames (~200 bytes) published by the
  transport, one batch at a time, with ``wait_replicas`` 0 and 1, on the cluster: the
  time per batch (median and p99).

Writes ``docs/scaling-figures.json`` and prints it. The brokers' figures are
deltas, so run it against brokers nobody else uses meanwhile (the test cluster of
``make redis-cluster``, and a private single node: ``redis-server --port 7110 --save ""
--daemonize yes``, ``--single redis://127.0.0.1:7110/0``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from ._common import fresh
from .scale import _Proc, _side

# not in benchmarks/results: that holds the suite's scenarios (python -m benchmarks)
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "scaling-figures.json"
FRAME = b"x" * 200


async def _primaries(url: str) -> list[aioredis.Redis]:
    if "cluster=1" not in url:
        return [aioredis.Redis.from_url(url.split("?", 1)[0])]
    cluster = RedisCluster.from_url(url.split("?", 1)[0])
    await cluster.initialize()
    nodes = [aioredis.Redis(host=n.host, port=int(n.port)) for n in cluster.get_primaries()]
    await cluster.aclose()
    return nodes


async def _broker_stats(nodes: list[aioredis.Redis], ns: str) -> dict[str, Any]:
    memory = cpu = 0.0
    keys: list[int] = []
    partitions: list[int] = []
    for node in nodes:
        info = await node.info()
        memory += float(info["used_memory"])
        cpu += float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        runs = parts = 0
        async for key in node.scan_iter(match=f"eventbus:{{{ns}*", count=1000):
            if key.endswith(b":run"):
                runs += 1
            elif key.endswith(b":events"):
                parts += 1
        keys.append(runs)
        partitions.append(parts)
    return {"memory": memory, "cpu": cpu, "run_keys": keys, "partitions": partitions}


async def _cleanup(nodes: list[aioredis.Redis], ns: str) -> None:
    for node in nodes:
        async for key in node.scan_iter(match=f"eventbus:{{{ns}*", count=1000):
            await node.delete(key)


async def concurrent_runs(url: str, runs: int, procs: int) -> dict[str, Any]:
    ns = fresh("cluster")
    nodes = await _primaries(url)
    row: dict[str, Any] = {"url": url, "runs": runs, "publisher_processes": procs}
    consumer = _Proc("consume", url, ns, str(runs))
    publishers = [_Proc("publish-many", url, ns, str(runs // procs), "30") for _ in range(procs)]
    try:
        before = await _broker_stats(nodes, ns)
        await consumer.start()
        for publisher in publishers:
            await publisher.start()
        await consumer.expect("ready", 60)
        for publisher in publishers:
            await publisher.expect("ready", 60)
        consumer.go()
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        for publisher in publishers:
            publisher.go()
        budget = 120 + runs * 0.2
        pubs = [await publisher.result(budget) for publisher in publishers]
        con = await consumer.result(budget)
        row["wall_s"] = time.perf_counter() - t0
        after = await _broker_stats(nodes, ns)
        row.update({k: v for k, v in _side("con", con).items() if not k.endswith("deciles")})
        events = sum(pub["events"] for pub in pubs)
        row["pub_events"] = events
        row["pub_rate"] = events / max(pub["marks"][-1][0] for pub in pubs)
        row["pub_peak_rss_mb"] = max(pub["peak_rss_mb"] for pub in pubs)
        row["broker_memory_mb"] = (after["memory"] - before["memory"]) / 2**20
        row["broker_memory_per_run_kb"] = (after["memory"] - before["memory"]) / runs / 1024
        row["broker_cpu_s"] = after["cpu"] - before["cpu"]
        row["broker_cpu_us_per_event"] = row["broker_cpu_s"] / events * 1e6 if events else None
        row["run_keys_per_primary"] = after["run_keys"]
        row["partitions_per_primary"] = after["partitions"]
    finally:
        consumer.kill()
        for publisher in publishers:
            publisher.kill()
        await _cleanup(nodes, ns)
        for node in nodes:
            await node.aclose()
    return row


async def wait_cost(url: str, batches: int = 1000) -> list[dict[str, Any]]:
    from eventbus.transports import OutFrame, open_transport

    rows = []
    for size in (1, 50):
        for replicas in (0, 1):
            ns = fresh("wait")
            t = open_transport(f"{url}&wait_replicas={replicas}&wait_timeout=5", ns)
            await t.connect()
            times = []
            try:
                for _ in range(batches):
                    run = str(uuid.uuid4())
                    frames = [OutFrame(run, FRAME) for _ in range(size)]
                    t0 = time.perf_counter()
                    await t.publish(frames)
                    times.append(time.perf_counter() - t0)
            finally:
                await t.aclose()
                nodes = await _primaries(url)
                await _cleanup(nodes, ns)
                for node in nodes:
                    await node.aclose()
            times.sort()
            rows.append(
                {
                    "frames_per_batch": size,
                    "wait_replicas": replicas,
                    "median_ms": statistics.median(times) * 1000,
                    "p99_ms": times[int(len(times) * 0.99)] * 1000,
                    "frames_per_s": size * len(times) / sum(times),
                }
            )
    return rows


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster")
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=5, help="publisher processes")
    parser.add_argument("--single", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--cluster", default="redis://127.0.0.1:7100/0?cluster=1")
    parser.add_argument("--skip-scale", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out["wait_cost"] = await wait_cost(args.cluster)
    print(json.dumps(out["wait_cost"], indent=1), flush=True)
    if not args.skip_scale:
        out["concurrent_runs"] = []
        for url in (args.single, args.cluster):
            row = await concurrent_runs(url, args.runs, args.procs)
            print(json.dumps(row, indent=1), flush=True)
            out["concurrent_runs"].append(row)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
