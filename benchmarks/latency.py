"""End-to-end latency: publish to yield in a follower in ANOTHER OS process.

    python -m benchmarks latency [--quick]

At 100, 1,000 and 10,000 events/s (quick: 1,000 only, short runs), eventbus publishes the
events of a LangGraph run streaming tokens (``token_graph``: ``on_chat_model_stream``, the
root's ``on_chain_stream`` in messages/updates/custom mode, ~0.8 KB each), recorded once
and cycled, one per tick; the publisher stamps into each event's metadata
(``metadata["t_ns"]``) the wall-clock time the event was **due** by the schedule (start +
i / rate), not the time it was actually sent: a publisher that falls behind makes its
later events late, and that delay is counted (no coordinated omission). A row whose
achieved rate fell short of the target rate by more than 5% is flagged and not judged. It
hands the event to eventbus (``Publisher._emit_event``, the path every event of
``Publisher.run`` takes: encode, buffer, the writer's linger, the broker round trip), and
a follower process (``benchmarks._latency_follower``, ``Subscriber.follow``) computes the
delta when the event is yielded to it, rebuilt. LangChain's own callback latency is not
included (it is the same locally).

Baselines in the same minute: raw redis-py ``XADD`` (awaited per event) read by ``XREAD
BLOCK`` in another process; raw aio-pika publishing (no confirms) to a classic queue
consumed with auto-ack in another process; and raw aio-pika publishing persistent
messages with a confirm awaited per message to a stream queue (what eventbus' run streams
are) consumed with acks in another process. The four followers run side by side; runs of
the four modes are interleaved, one at a time (the others wait, idle).

p999 of a run with fewer than 1,000 events is close to its maximum. "After the first
100 ms" leaves out the events stamped in a run's first 100 ms, which also wait for what a
broker does once per run (RabbitMQ: creating and binding the run's stream queue, and its
first publisher confirms); the target is judged on every event, on the worst of the
repetitions' p99.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

from ._common import (
    AMQP_URL,
    REDIS_URL,
    TOKEN_GRAPH_MODES,
    URLS,
    Row,
    cleanup,
    describe,
    fmt,
    fresh,
    md_table,
    note,
    token_graph,
    unavailable,
)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"redis": 5_000.0, "rabbitmq": 10_000.0}  # p99 µs at 1,000 events/s


async def _paced(n: int, rate: float, send: Any) -> float:
    """Call ``send(i, due_ns)`` n times at ``rate`` per second (bursts of what is due),
    ``due_ns``: the wall-clock time event i was scheduled for; the achieved rate."""
    t0 = time.perf_counter()
    t0_ns = time.time_ns()
    step_ns = 1e9 / rate
    i = 0
    while i < n:
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        while i < due:
            await send(i, t0_ns + int(i * step_ns))
            i += 1
        delay = t0 + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
    return n / (time.perf_counter() - t0)


class _Child:
    def __init__(self, mode: str, label: str, url: str, ns: str, names: list[str]) -> None:
        self.mode, self.label, self.url, self.ns, self.names = mode, label, url, ns, names
        self.proc: asyncio.subprocess.Process | None = None
        self.result: list[dict[str, Any]] | None = None

    async def start(self) -> None:
        env = dict(os.environ)
        root = _ROOT
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks._latency_follower",
            self.mode,
            self.url,
            self.ns,
            *self.names,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            cwd=root,
        )

    async def expect(self, prefix: str, timeout: float = 60) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.label}: no {prefix!r} from the follower in {timeout}s")
            line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not line:
                raise RuntimeError(
                    f"{self.label}: the follower exited (code {self.proc.returncode})"
                )
            text = line.decode().strip()
            if text.startswith(prefix):
                return text

    async def finish(self) -> None:
        text = await self.expect("result ", 60)
        self.result = json.loads(text[len("result ") :])
        assert self.proc is not None
        await asyncio.wait_for(self.proc.wait(), 30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


async def _graph_events() -> list[dict[str, Any]]:
    """The events of a LangGraph run streaming tokens (``token_graph``, messages + updates
    + custom), recorded once: what eventbus publishes, cycled, one per tick."""
    from langchain_core.messages import HumanMessage

    graph = token_graph(100)
    inp = {"messages": [HumanMessage("hi")], "done": False}
    return [
        event
        async for event in graph.astream_events(inp, version="v2", stream_mode=TOKEN_GRAPH_MODES)
    ]


async def _run(quick: bool) -> list[Row]:
    from eventbus import Publisher

    plan = [(1000, 1.5)] if quick else [(100, 8.0), (1000, 5.0), (10_000, 3.0)]
    repeats = 2
    runs = [(rep, rate, int(rate * seconds)) for rep in range(repeats) for rate, seconds in plan]
    modes = [
        "eventbus redis",
        "raw redis",
        "eventbus rabbitmq",
        "raw rabbitmq",
        "raw rabbitmq stream",
    ]
    broker_of = {m: m.split()[1] for m in modes}
    rows: list[Row] = []
    errors: dict[str, str] = {}
    skipped: dict[str, str] = {}
    for m in modes:
        why = unavailable(broker_of[m])
        if why and (m.startswith("eventbus") or why[0] == "error"):
            (skipped if why[0] == "skipped" else errors)[m] = why[1]

    ns = {m: fresh("lat") for m in modes}
    names: dict[str, list[str]] = {}
    for m in modes:
        if m.startswith("eventbus"):
            names[m] = [str(uuid.uuid4()) for _ in runs]
        else:
            names[m] = [f"{ns[m]}-{i}" for i in range(len(runs))]
    workload = await _graph_events()
    children: dict[str, _Child] = {}
    pubs: dict[str, Any] = {}
    achieved: dict[tuple[str, int], list[float]] = {}
    resources: dict[str, Any] = {}
    try:
        # publishers and queues first, then the followers
        for m in modes:
            if m in errors or m in skipped:
                continue
            try:
                if m.startswith("eventbus"):
                    pubs[m] = await asyncio.wait_for(
                        Publisher(URLS[broker_of[m]], namespace=ns[m]).connect(), 30
                    )
                elif m == "raw redis":
                    import redis.asyncio as aioredis

                    resources[m] = aioredis.Redis.from_url(REDIS_URL, protocol=2)
                    await resources[m].ping()
                else:
                    import aio_pika

                    conn = await asyncio.wait_for(aio_pika.connect(AMQP_URL), 30)
                    resources[m + " conn"] = conn
                    stream = m.endswith("stream")
                    channel = await conn.channel(publisher_confirms=stream)
                    resources[m] = channel
                    for name in names[m]:
                        if stream:  # what eventbus' run streams are, confirms and all
                            args = {"x-queue-type": "stream"}
                            await channel.declare_queue(name, durable=True, arguments=args)
                        else:
                            await channel.declare_queue(name, durable=False)
                url = URLS[broker_of[m]]
                child = _Child(
                    m.split()[0]
                    if m.startswith("eventbus")
                    else "raw-amqp-stream"
                    if m.endswith("stream")
                    else f"raw-{'redis' if 'redis' in m else 'amqp'}",
                    m,
                    url,
                    ns[m],
                    names[m],
                )
                await child.start()
                children[m] = child
            except Exception as exc:
                errors[m] = f"setup: {describe(exc)}"

        for k, (_rep, rate, n) in enumerate(runs):
            order = modes[k % len(modes) :] + modes[: k % len(modes)]
            for m in order:
                if m in errors or m not in children:
                    continue
                child = children[m]
                try:
                    await child.expect(f"following {k}")
                    await asyncio.sleep(0.3)  # let the follower's read block
                    name = names[m][k]
                    if m.startswith("eventbus"):
                        pub = pubs[m]
                        run = pub._open_run(name)

                        async def send(i: int, due_ns: int, pub: Any = pub, run: Any = run) -> None:
                            event = workload[i % len(workload)]
                            stamped = {**event, "metadata": {**event["metadata"], "t_ns": due_ns}}
                            pub._emit_event(run, stamped)
                            if pub._buffered > pub._max_buffer_bytes:
                                await pub._backpressure()

                        rate_done = await asyncio.wait_for(_paced(n, rate, send), 120)
                        await asyncio.wait_for(pub._finish(run, None), 60)
                    elif m == "raw redis":
                        client = resources[m]

                        async def send(
                            i: int, due_ns: int, client: Any = client, key: str = name
                        ) -> None:
                            await client.xadd(key, {"data": str(due_ns)})

                        rate_done = await asyncio.wait_for(_paced(n, rate, send), 120)
                        await client.xadd(name, {"data": b"end"})
                    else:
                        import aio_pika

                        ex = resources[m].default_exchange
                        mode = 2 if m.endswith("stream") else 1  # persistent, as eventbus'

                        async def send(
                            i: int, due_ns: int, ex: Any = ex, q: str = name, mode: int = mode
                        ) -> None:
                            body = str(due_ns).encode()
                            await ex.publish(aio_pika.Message(body, delivery_mode=mode), q)

                        rate_done = await asyncio.wait_for(_paced(n, rate, send), 120)
                        await ex.publish(aio_pika.Message(b"end", delivery_mode=mode), name)
                    achieved.setdefault((m, rate), []).append(rate_done)
                except Exception as exc:
                    errors[m] = describe(exc)
                    child.kill()
        for m, child in children.items():
            if m in errors:
                continue
            try:
                await child.finish()
            except Exception as exc:
                errors[m] = f"follower: {describe(exc)}"
    finally:
        for child in children.values():
            child.kill()
        for pub in pubs.values():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pub.aclose(), 30)
        if "raw redis" in resources:
            with contextlib.suppress(Exception):
                await resources["raw redis"].aclose()
        if "raw rabbitmq conn" in resources:
            with contextlib.suppress(Exception):
                await resources["raw rabbitmq conn"].close()
        for m in modes:
            await cleanup(broker_of[m], ns[m], names[m] if m.startswith("raw rabbitmq") else ())

    for m in modes:
        broker = broker_of[m]
        for rate, _seconds in plan:
            row: Row = {"case": m, "broker": broker, "rate": rate}
            if m in skipped:
                row["skipped"] = skipped[m]
            elif m in errors:
                row["error"] = errors[m]
            child = children.get(m)
            if child is not None and child.result is not None:
                per_run = [child.result[k] for k, (_r, rt, _n) in enumerate(runs) if rt == rate]
                row["events"] = sum(r.get("count", 0) for r in per_run)
                for key in ("p50_us", "p99_us", "p999_us", "max_us", "steady_p99_us"):
                    xs = [r[key] for r in per_run if key in r]
                    if xs:
                        row[key] = statistics.median(xs)
                        row[f"{key}_min"], row[f"{key}_max"] = min(xs), max(xs)
                row["repeats"] = len(per_run)
                rates = achieved.get((m, rate), [])
                short = False
                if rates:
                    row["achieved_rate"] = statistics.median(rates)
                    if min(rates) < 0.95 * rate:
                        short = True
                        row["note"] = (
                            f"**rate not reached**: {min(rates):,.0f}/s at worst of "
                            f"{rate:,}/s: the publisher fell behind (its delay is counted)"
                        )
                if m.startswith("eventbus") and rate == 1000 and "p99_us" in row:
                    row["target"] = f"p99 ≤{TARGETS[broker] / 1000:g} ms"
                    row["met"] = not short and row["p99_us_max"] <= TARGETS[broker]
            rows.append(row)
    return rows


def run(quick: bool = False) -> list[Row]:
    return asyncio.run(_run(quick))


def _ms(row: Row, key: str) -> str:
    if key not in row:
        return ""
    med = row[key] / 1000
    lo, hi = row.get(f"{key}_min"), row.get(f"{key}_max")
    if lo is None or row.get("repeats", 1) < 2:
        return f"{med:.2f}"
    return f"{med:.2f} ({lo / 1000:.2f}\u2013{hi / 1000:.2f})"


def table(results: list[Row]) -> str:
    headers = [
        "broker",
        "path",
        "target rate/s",
        "achieved/s",
        "events",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "p99 ms after the first 100 ms",
        "target (p99 of all events, worst repetition)",
        "note",
    ]
    lines = []
    for r in results:
        target = ""
        if "met" in r:
            target = f"{r['target']}: {'**met**' if r['met'] else '**missed**'}"
        lines.append(
            [
                r.get("broker", ""),
                r.get("case", ""),
                fmt(r.get("rate")),
                fmt(r.get("achieved_rate"), 0),
                fmt(r.get("events")),
                _ms(r, "p50_us"),
                _ms(r, "p99_us"),
                _ms(r, "p999_us"),
                _ms(r, "max_us"),
                _ms(r, "steady_p99_us"),
                target,
                note(r),
            ]
        )
    return md_table(headers, lines)
