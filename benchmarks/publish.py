"""Publish throughput of pre-built events from one process.

    python -m benchmarks publish [--quick]

The events are realistic ``on_chat_model_stream`` dicts (an ``AIMessageChunk`` and
LangGraph metadata, ~860 bytes as an eventbus frame of one event). eventbus is driven
through the publisher's own path without LangChain in front (``benchmarks._common.emit_all``:
``Publisher._emit_event`` per event, yielding to the loop every 32 events, as a producer
with events at hand does (the baselines pipeline theirs too; the overhead scenario
measures the yield-per-event pace of ``astream_events``), then the run's End and a wait
until everything is on the broker), so the figures are eventbus' encode + buffer + batch +
send, not LangChain's event machinery.

Baselines, interleaved with eventbus repetition by repetition:

* Redis: raw redis-py ``XADD`` of the same encoded bytes (one frame per event), awaited
  one by one; the same pipelined 1,000 per round trip; the hand-rolled
  ``json.dumps(event, default=str)`` + awaited ``XADD``; FastStream's
  ``RedisBroker.publish(..., stream=...)``; and the server's ceiling from
  ``redis-benchmark -P 64 XADD`` (C client, pipelined, no Python at all).
* RabbitMQ: raw aio-pika publishing the same bytes (persistent, to a stream queue, as
  eventbus' run streams are) without confirms, with a confirm awaited per message, and
  with confirms gathered 100 at a time; FastStream's ``RabbitBroker.publish``.

Slow per-message baselines publish fewer events per repetition than eventbus does (a rate
is a rate); the row says how many.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

from ._common import (
    AMQP_URL,
    REDIS_URL,
    URLS,
    Case,
    Row,
    case_row,
    cleanup,
    emit_all,
    fmt,
    fresh,
    interleaved,
    md_table,
    note,
    spread,
    token_events,
    unavailable,
)

TARGETS = {
    "redis": ("raw redis-py XADD pipelined x1000", 2.0),
    "rabbitmq": ("raw aio-pika, confirm awaited per message", 5.0),
}


def _frames(events: list[dict[str, Any]]) -> list[bytes]:
    from eventbus._wire import Event, RecordEncoder

    enc = RecordEncoder("msgpack")
    return [
        enc.encode_envelope(
            "ns", "run", "p", [enc.encode_record(Event(i + 1, 0.0, enc.to_tree(e)))]
        )
        for i, e in enumerate(events)
    ]


def _rate(n: int, seconds: float) -> dict[str, float]:
    return {"events_per_s": n / seconds}


def _mark(case: Case, broker: str) -> Case:
    why = unavailable(broker)
    if why:
        setattr(case, why[0], why[1])
    return case


def _eventbus_case(broker: str, events: list[dict[str, Any]], namespaces: dict[str, str]) -> Case:
    from eventbus import Publisher

    ns = fresh("pub")
    namespaces[broker] = ns
    url = URLS[broker] if broker != "memory" else f"memory://{ns}"
    holder: dict[str, Any] = {}

    async def setup() -> None:
        holder["pub"] = await Publisher(url, namespace=ns).connect()

    async def once() -> dict[str, float]:
        t0 = time.perf_counter()
        await emit_all(holder["pub"], events, yield_every=32)
        return _rate(len(events), time.perf_counter() - t0)

    async def teardown() -> None:
        if "pub" in holder:
            await holder["pub"].aclose()

    case = Case(
        f"eventbus → {broker}", once, {"broker": broker, "events": len(events)}, setup, teardown
    )
    return _mark(case, broker)


def _redis_cases(
    events: list[dict[str, Any]], frames: list[bytes], slow: int, prefix: str
) -> list[Case]:
    import redis.asyncio as aioredis

    holder: dict[str, Any] = {}

    async def setup() -> None:
        if "client" not in holder:
            holder["client"] = aioredis.Redis.from_url(REDIS_URL, protocol=2)
            await holder["client"].ping()

    async def teardown() -> None:
        client = holder.pop("client", None)
        if client is not None:
            await client.aclose()

    def key() -> str:
        return f"{prefix}:{uuid.uuid4().hex[:8]}"

    async def awaited() -> dict[str, float]:
        client, k = holder["client"], key()
        t0 = time.perf_counter()
        for data in frames[:slow]:
            await client.xadd(k, {"data": data})
        out = _rate(slow, time.perf_counter() - t0)
        await client.delete(k)
        return out

    async def pipelined() -> dict[str, float]:
        client, k = holder["client"], key()
        t0 = time.perf_counter()
        for i in range(0, len(frames), 1000):
            async with client.pipeline(transaction=False) as pipe:
                for data in frames[i : i + 1000]:
                    pipe.xadd(k, {"data": data})
                await pipe.execute()
        out = _rate(len(frames), time.perf_counter() - t0)
        await client.delete(k)
        return out

    async def handrolled() -> dict[str, float]:
        client, k = holder["client"], key()
        t0 = time.perf_counter()
        for event in events[:slow]:
            await client.xadd(k, {"data": json.dumps(event, default=str)})
        out = _rate(slow, time.perf_counter() - t0)
        await client.delete(k)
        return out

    fs: dict[str, Any] = {}

    async def fs_setup() -> None:
        from faststream.redis import RedisBroker

        fs["broker"] = RedisBroker(REDIS_URL)
        await fs["broker"].connect()

    async def fs_once() -> dict[str, float]:
        broker, k = fs["broker"], key()
        t0 = time.perf_counter()
        for data in frames[:slow]:
            await broker.publish(data, stream=k)
        out = _rate(slow, time.perf_counter() - t0)
        await holder["client"].delete(k)
        return out

    async def fs_teardown() -> None:
        if "broker" in fs:
            await fs["broker"].stop()

    cases = [
        Case("raw redis-py XADD, awaited per event", awaited, {"events": slow}, setup),
        Case("raw redis-py XADD pipelined x1000", pipelined, {"events": len(frames)}, setup),
        Case(
            "hand-rolled json.dumps(default=str) + awaited XADD",
            handrolled,
            {"events": slow},
            setup,
        ),
        Case(
            "FastStream RedisBroker.publish(stream=)",
            fs_once,
            {"events": slow},
            fs_setup,
            fs_teardown,
        ),
    ]
    cases[-1].teardown = fs_teardown
    # one client for the four; closed after the last case (teardown runs per case, idempotent)
    cases[1].teardown = teardown
    for c in cases:
        c.labels["broker"] = "redis"
        _mark(c, "redis")
    try:
        import faststream.redis  # noqa: F401
    except ImportError as exc:
        cases[3].skipped = f"faststream[redis] not installed ({exc})"

    rb = shutil.which("redis-benchmark")
    n_rb = 30_000 if len(frames) < 10_000 else 100_000
    value = "x" * len(frames[0])

    async def ceiling() -> dict[str, float]:
        parts = urlsplit(REDIS_URL)
        db = (parts.path or "/0").strip("/") or "0"
        k = key()
        proc = await asyncio.create_subprocess_exec(
            rb or "redis-benchmark",
            "-h",
            parts.hostname or "127.0.0.1",
            "-p",
            str(parts.port or 6379),
            "--dbnum",
            db,
            "-q",
            "-n",
            str(n_rb),
            "-P",
            "64",
            "-c",
            "1",
            "XADD",
            k,
            "*",
            "data",
            value,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 120)
        finally:
            if proc.returncode is None:
                proc.kill()
        await holder["client"].delete(k)
        text = out.decode(errors="replace").replace("\r", "\n")
        rates = re.findall(r"([\d.]+) requests per second", text)
        if not rates:
            raise RuntimeError(
                f"cannot parse redis-benchmark output: {text[-200:]!r} {err[-200:]!r}"
            )
        return {"events_per_s": float(rates[-1])}

    c = Case(
        "redis-benchmark -P 64 -c 1 XADD (C client ceiling)",
        ceiling,
        {"broker": "redis", "events": n_rb},
        setup,
    )
    _mark(c, "redis")
    if rb is None:
        c.skipped = "redis-benchmark not on PATH"
    cases.append(c)
    return cases


def _rabbit_cases(frames: list[bytes], slow: int, queues: list[str]) -> list[Case]:
    holder: dict[str, Any] = {}
    name = f"bench-pub-raw-{uuid.uuid4().hex[:10]}"
    queues.append(name)

    async def setup() -> None:
        # (re)connect: other jobs on this shared machine may close our connections
        # (reconnect tests): a closed connection is opened again before the next repetition
        conn = holder.get("conn")
        if (
            conn is not None
            and not conn.is_closed
            and not holder["confirm"].is_closed
            and not holder["plain"].is_closed
        ):
            return
        import aio_pika

        holder["conn"] = conn = await aio_pika.connect(AMQP_URL)
        holder["plain"] = await conn.channel(publisher_confirms=False)
        holder["confirm"] = await conn.channel(publisher_confirms=True)
        await holder["plain"].declare_queue(
            name, durable=True, arguments={"x-queue-type": "stream"}
        )

    async def teardown() -> None:
        conn = holder.pop("conn", None)
        if conn is not None:
            await conn.close()

    def messages(n: int) -> list[Any]:
        import aio_pika

        return [
            aio_pika.Message(d, delivery_mode=aio_pika.DeliveryMode.PERSISTENT) for d in frames[:n]
        ]

    def make(channel: str, window: int) -> Any:
        async def once() -> dict[str, float]:
            await setup()
            ex = holder[channel].default_exchange
            msgs = messages(slow)
            t0 = time.perf_counter()
            if window <= 1:
                for m in msgs:
                    await ex.publish(m, name)
            else:
                for i in range(0, len(msgs), window):
                    await asyncio.gather(*(ex.publish(m, name) for m in msgs[i : i + window]))
            return _rate(slow, time.perf_counter() - t0)

        return once

    fs: dict[str, Any] = {}

    async def fs_setup() -> None:
        await setup()
        from faststream.rabbit import RabbitBroker

        fs["broker"] = RabbitBroker(AMQP_URL)
        await fs["broker"].connect()

    async def fs_once() -> dict[str, float]:
        broker = fs["broker"]
        t0 = time.perf_counter()
        for data in frames[:slow]:
            await broker.publish(data, queue=name, persist=True)
        return _rate(slow, time.perf_counter() - t0)

    async def fs_teardown() -> None:
        if "broker" in fs:
            await fs["broker"].stop()

    cases = [
        Case("raw aio-pika, no confirms", make("plain", 1), {"events": slow}, setup),
        Case(
            "raw aio-pika, confirm awaited per message", make("confirm", 1), {"events": slow}, setup
        ),
        Case(
            "raw aio-pika, confirms gathered x100",
            make("confirm", 100),
            {"events": slow},
            setup,
            teardown,
        ),
        Case(
            "FastStream RabbitBroker.publish(queue=)",
            fs_once,
            {"events": slow},
            fs_setup,
            fs_teardown,
        ),
    ]
    for c in cases:
        c.labels["broker"] = "rabbitmq"
        why = unavailable("rabbitmq")
        if why and why[0] == "error":  # raw baselines need the broker, not the transport
            c.error = why[1]
    try:
        import faststream.rabbit  # noqa: F401
    except ImportError as exc:
        cases[3].skipped = f"faststream[rabbit] not installed ({exc})"
    return cases


async def _run(quick: bool) -> list[Row]:
    n, slow, repeats = (3_000, 800, 3) if quick else (30_000, 4_000, 5)
    events = token_events(n)
    frames = _frames(events)
    namespaces: dict[str, str] = {}
    prefix = fresh("pub-raw")
    queues: list[str] = []
    redis_cases = [
        _eventbus_case("redis", events, namespaces),
        *_redis_cases(events, frames, slow, prefix),
    ]
    rabbit_cases = [
        _eventbus_case("rabbitmq", events, namespaces),
        *_rabbit_cases(frames, slow, queues),
    ]
    memory = _eventbus_case("memory", events, namespaces)
    cases = [memory, *redis_cases, *rabbit_cases]
    try:
        await interleaved(cases, repeats, timeout=300, warmup=not quick)
    finally:
        for broker, ns in namespaces.items():
            await cleanup(broker, ns)
        await cleanup("redis", prefix)
        await cleanup("rabbitmq", "", queues)
    rows = [case_row(c) for c in cases]
    by_name = {r["case"]: r for r in rows}
    for broker, (baseline, factor) in TARGETS.items():
        row, base = by_name.get(f"eventbus → {broker}"), by_name.get(baseline)
        if row and base and "events_per_s" in row and "events_per_s" in base:
            row["vs"] = baseline
            row["speedup"] = row["events_per_s"] / base["events_per_s"]
            row["target"] = f"≥{factor:g}x {baseline}"
            row["met"] = row["speedup"] >= factor
    for r in rows:
        if r.get("events_per_s") and by_name.get(f"eventbus → {r.get('broker')}", {}).get(
            "events_per_s"
        ):
            r["eventbus_x"] = (
                by_name[f"eventbus → {r['broker']}"]["events_per_s"] / r["events_per_s"]
            )
    return rows


def run(quick: bool = False) -> list[Row]:
    return asyncio.run(_run(quick))


def table(results: list[Row]) -> str:
    headers = [
        "broker",
        "publisher",
        "events/rep",
        "events/s, median (min\u2013max)",
        "µs/event",
        "eventbus is x",
        "target",
        "note",
    ]
    lines = []
    for r in results:
        target = ""
        if "met" in r:
            target = (
                f"{r['target']}: {'**met**' if r['met'] else '**missed**'} ({r['speedup']:.2f}x)"
            )
        eps = r.get("events_per_s")
        lines.append(
            [
                r.get("broker", ""),
                r.get("case", ""),
                fmt(r.get("events")),
                spread(r, "events_per_s", 0),
                fmt(1e6 / eps, 1) if eps else "",
                fmt(r.get("eventbus_x"), 2) if not r.get("case", "").startswith("eventbus") else "",
                target,
                note(r),
            ]
        )
    return md_table(headers, lines)
