"""Gateway fan-out: events/s the HTTP gateway pushes to 100 SSE clients of one run.

    python -m benchmarks http_fanout [--quick]
    python -m benchmarks.http_fanout [--url URL] [--clients 100] [--events 2000]

A finished run of 2,000 token events (LangChain's ``on_chain_stream`` of a streaming
generator, ~300 bytes of JSON each) is published once per broker; the gateway runs in a
process of its own (``eventbus serve``), and 100 SSE clients (httpx, in the benchmark's
process) read the whole run at once: events delivered to all the clients per second of
wall time, from the first request to the last ``end`` event. The baseline, interleaved
repetition by repetition: a bare Starlette app on uvicorn in a process of its own that
sends the same SSE messages, pre-rendered (the bytes the gateway sent), 64 per write as
the gateway writes what a client has buffered, to the same clients: the ceiling of
uvicorn, the loopback and the clients ("x bare" column, per repetition). Quick: 20
clients, 300 events.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ._common import (
    URLS,
    Case,
    Row,
    case_row,
    cleanup,
    fmt,
    fresh,
    interleaved,
    md_table,
    note,
    per_rep_ratios,
    spread,
    summary,
    unavailable,
)

MARKER = b"\nevent: message\n"


def _tokens(n: int) -> Any:
    from langchain_core.runnables import RunnableGenerator

    async def gen(_: AsyncIterator[Any]) -> AsyncIterator[str]:
        for i in range(n):
            yield f" token{i}"

    return RunnableGenerator(gen, name="tokens")


async def _client(client: httpx.AsyncClient, path: str, keep: list[bytes] | None = None) -> int:
    events = 0
    tail = b""
    async with client.stream("GET", path) as response:
        async for chunk in response.aiter_bytes():
            if keep is not None:
                keep.append(chunk)
            # a marker may straddle two chunks: count over the previous chunk's tail too
            data = tail + chunk
            events += data.count(MARKER)
            tail = data[-(len(MARKER) - 1) :]
            if b"event: end" in data:
                break
    return events


async def _start(command: list[str]) -> tuple[subprocess.Popen[str], str]:
    """A server process that prints ``... http://host:port ...`` on its first stderr line."""
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)  # noqa: ASYNC220 - the benchmark owns it
    assert proc.stderr is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stderr.readline), 60)
    base = next((w for w in line.split() if w.startswith("http://")), None)
    if base is None:
        proc.terminate()
        proc.wait(timeout=30)
        raise RuntimeError(f"server did not start: {line!r}")
    return proc, base.rstrip("/")


def _stop(proc: subprocess.Popen[str] | None) -> None:
    if proc is not None:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


class _Fanout:
    """The gateway and the bare baseline for one broker, sharing one published run."""

    def __init__(self, broker: str, clients: int, events: int) -> None:
        self.broker = broker
        self.url = URLS[broker]
        self.clients = clients
        self.events = events
        self.namespace = fresh("http")
        self.run_id = str(uuid.uuid4())
        self.published = 0
        self.gateway: subprocess.Popen[str] | None = None
        self.bare: subprocess.Popen[str] | None = None
        self.bases: dict[str, str] = {}
        self.body_file = ""
        self.client: httpx.AsyncClient | None = None

    async def setup(self) -> None:
        import eventbus

        async with eventbus.Publisher(self.url, self.namespace) as pub:
            await pub.run(_tokens(self.events), None, config={"run_id": self.run_id})
            self.published = pub.stats.events
        command = [sys.executable, "-m", "eventbus", "serve", "--url", self.url]
        self.gateway, self.bases["gateway"] = await _start(
            [*command, "-n", self.namespace, "--port", "0"]
        )
        limits = httpx.Limits(max_connections=self.clients + 10)
        self.client = httpx.AsyncClient(timeout=120, limits=limits)
        # the bytes the gateway sends, for the bare server
        chunks: list[bytes] = []
        await _client(self.client, f"{self.bases['gateway']}/runs/{self.run_id}/events", chunks)
        fd, self.body_file = tempfile.mkstemp(prefix="eventbus-bench-sse-")
        with os.fdopen(fd, "wb") as f:
            f.write(b"".join(chunks))
        self.bare, self.bases["bare"] = await _start(
            [sys.executable, "-m", "benchmarks.http_fanout", "--serve-bare", self.body_file]
        )

    async def teardown(self) -> None:
        if self.client is not None:
            await self.client.aclose()
        _stop(self.gateway)
        _stop(self.bare)
        with contextlib.suppress(OSError):
            os.unlink(self.body_file)
        await cleanup(self.broker, self.namespace)

    async def once(self, which: str) -> dict[str, float]:
        assert self.client is not None
        path = f"{self.bases[which]}/runs/{self.run_id}/events"
        start = time.perf_counter()
        counts = await asyncio.gather(*(_client(self.client, path) for _ in range(self.clients)))
        elapsed = time.perf_counter() - start
        if any(c != self.published for c in counts):
            raise RuntimeError(f"clients got {sorted(set(counts))} events of {self.published}")
        return {"events_per_s": sum(counts) / elapsed, "seconds": elapsed}


def _cases(broker: str, clients: int, events: int) -> tuple[list[Case], _Fanout | None]:
    why = unavailable(broker)
    labels = {"broker": broker, "clients": clients}
    if why is not None:
        kind, message = why
        case = Case(f"eventbus gateway, {broker}", _nothing, labels)
        if kind == "skipped":
            case.skipped = message
        else:
            case.error = message
        return [case], None
    fan = _Fanout(broker, clients, events)

    async def gateway() -> dict[str, float]:
        return await fan.once("gateway")

    async def bare() -> dict[str, float]:
        return await fan.once("bare")

    return [
        Case(f"eventbus gateway, {broker}", gateway, labels, setup=fan.setup),
        Case(f"bare uvicorn SSE, pre-rendered ({broker} run)", bare, labels, teardown=fan.teardown),
    ], fan


async def _nothing() -> dict[str, float]:
    return {}


def run(quick: bool = False) -> list[Row]:
    clients, events, repeats = (20, 300, 2) if quick else (100, 2000, 5)

    async def main() -> list[Row]:
        rows: list[Row] = []
        for broker in ("redis", "rabbitmq"):
            cases, fan = _cases(broker, clients, events)
            await interleaved(cases, repeats, timeout=600)
            if fan is not None and fan.published:
                for case in cases:
                    case.labels["events"] = fan.published
            ours = case_row(cases[0])
            if len(cases) == 2:
                ratios = per_rep_ratios(cases[0], cases[1], "events_per_s")
                if ratios:
                    s = summary(ratios)
                    ours["vs_bare"] = s["median"]
                    ours["vs_bare_min"], ours["vs_bare_max"] = s["min"], s["max"]
            rows.append(ours)
            rows += [case_row(c) for c in cases[1:]]
        return rows

    return asyncio.run(main())


def table(results: list[Row]) -> str:
    lines = []
    for r in results:
        per_client = (
            r["events_per_s"] / r["clients"] if r.get("events_per_s") and r.get("clients") else None
        )
        lines.append(
            [
                r["case"],
                fmt(r.get("clients")),
                fmt(r.get("events")),
                spread(r, "events_per_s", 0),
                fmt(per_client, 0),
                spread(r, "vs_bare", 2),
                note(r),
            ]
        )
    return md_table(
        ["case", "clients", "events", "events/s, all clients", "per client", "x bare", "note"],
        lines,
    )


# -- the bare baseline server ------------------------------------------------------------


def _serve_bare(body_file: str) -> None:
    """A Starlette app that sends the pre-rendered SSE messages of ``body_file`` to every
    ``GET /runs/{run_id}/events``, 64 per write (the gateway's most per write)."""
    import socket

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import StreamingResponse
    from starlette.routing import Route

    with open(body_file, "rb") as f:
        blocks = [b + b"\n\n" for b in f.read().split(b"\n\n") if b]

    async def events(request: Request) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            for i in range(0, len(blocks), 64):
                yield b"".join(blocks[i : i + 64])

        return StreamingResponse(body(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/runs/{run_id}/events", events)])
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    print(f"bare: http://127.0.0.1:{sock.getsockname()[1]}", file=sys.stderr, flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    asyncio.run(server.serve(sockets=[sock]))


async def _once(url: str, clients: int, events: int) -> None:
    broker = url.split(":", 1)[0].replace("amqp", "rabbitmq")
    fan = _Fanout("redis" if broker.startswith("redis") else broker, clients, events)
    fan.url = url
    await fan.setup()
    try:
        for which in ("gateway", "bare"):
            sample = await fan.once(which)
            total = fan.published * clients
            print(
                f"{which}: {clients} clients x {fan.published} events = {total} events in "
                f"{sample['seconds']:.2f}s: {sample['events_per_s']:,.0f} events/s pushed "
                f"({sample['events_per_s'] / clients:,.0f} per client)"
            )
    finally:
        await fan.teardown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default=URLS["redis"])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--serve-bare", metavar="FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        _serve_bare(args.serve_bare)
    else:
        asyncio.run(_once(args.url, args.clients, args.events))
