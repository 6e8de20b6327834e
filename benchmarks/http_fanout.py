"""Gateway fan-out: events/s the HTTP gateway pushes to N SSE clients of one run.

``python -m benchmarks.http_fanout [--url URL] [--clients 100] [--events 2000]``

A finished run of ``--events`` token events (LangChain's ``on_chain_stream`` of a streaming
generator, ~300 bytes of JSON each) is published first; then the gateway runs in its own
process (``eventbus serve``) and ``--clients`` SSE clients in this process read the whole
run at once. Reported: events delivered (all clients) per second of wall time, from the
first request to the last ``end`` event. The clients share this process's core(s) with
nothing else; the gateway has its own process. Not a scenario of ``make bench`` (yet).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from langchain_core.runnables import RunnableGenerator

import eventbus


def _tokens(n: int) -> Any:
    async def gen(_: AsyncIterator[Any]) -> AsyncIterator[str]:
        for i in range(n):
            yield f" token{i}"

    return RunnableGenerator(gen, name="tokens")


async def _client(client: httpx.AsyncClient, path: str) -> int:
    events = 0
    tail = b""
    marker = b"\nevent: message\n"
    async with client.stream("GET", path) as response:
        async for chunk in response.aiter_bytes():
            # a marker may straddle two chunks: count over the previous chunk's tail too
            data = tail + chunk
            events += data.count(marker)
            tail = data[-(len(marker) - 1) :]
            if b"event: end" in data:
                break
    return events


async def main(url: str, clients: int, events: int) -> None:
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    run_id = str(uuid.uuid4())
    async with eventbus.Publisher(url, namespace) as pub:
        await pub.run(_tokens(events), None, config={"run_id": run_id})
        published = pub.stats.events
    command = [sys.executable, "-m", "eventbus", "serve", "--url", url, "-n", namespace]
    with subprocess.Popen([*command, "--port", "0"], stderr=subprocess.PIPE, text=True) as proc:  # noqa: ASYNC220 - the benchmark owns this process
        try:
            assert proc.stderr is not None
            line = await asyncio.to_thread(proc.stderr.readline)
            base = line.split()[2].rstrip("/")
            limits = httpx.Limits(max_connections=clients + 10)
            async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
                await _client(client, f"/runs/{run_id}/events")  # warm-up
                start = time.perf_counter()
                counts = await asyncio.gather(
                    *(_client(client, f"/runs/{run_id}/events") for _ in range(clients))
                )
                elapsed = time.perf_counter() - start
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    if url.startswith("redis"):  # the namespace's keys (the group stream has no TTL)
        import redis.asyncio as aioredis

        r = aioredis.Redis.from_url(url)
        keys = [k async for k in r.scan_iter(match=f"eventbus:{{{namespace}*")]
        if keys:
            await r.delete(*keys)
        await r.aclose()
    total = sum(counts)
    assert all(c == published for c in counts), (set(counts), published)
    print(
        f"{clients} clients x {published} events = {total} events in {elapsed:.2f}s: "
        f"{total / elapsed:,.0f} events/s pushed ({published / elapsed:,.0f} per client)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="redis://127.0.0.1:6379/15")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    args = parser.parse_args()
    asyncio.run(main(args.url, args.clients, args.events))
