"""Consume throughput: events/s rebuilt into StreamEvent dicts (with LangChain objects).

    python -m benchmarks consume [--quick]

One run of N realistic token events is published once per broker (through the
publisher, so frames are packed as in production). Then, interleaved repetition by
repetition:

* ``Subscriber.follow`` replays the run from its first event to its end;
* ``Subscriber.consume`` with a fresh consumer group (``start="first"``), one consumer,
  acking every message, until the run's end record;
* raw baselines holding one event per broker message, as a hand-rolled bridge does:
  Redis ``XREAD COUNT 1000`` (follower) and ``XREADGROUP COUNT 1000`` + ``XACK`` of each
  page (group); RabbitMQ: aio-pika consuming a stream queue from its first offset with a
  manual ack per message (follower) and a quorum queue, prefetch 100, ack per message
  (group). The raw baselines do **not** decode anything: they are the broker + client
  ceiling for one message per event; eventbus' figures include decoding and rebuilding
  every ``AIMessageChunk``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from typing import Any

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
from .publish import _frames


def _eventbus_cases(
    broker: str, events: list[dict[str, Any]], namespaces: dict[str, str]
) -> list[Case]:
    from eventbus import Publisher, Subscriber

    ns = fresh("con")
    namespaces[broker] = ns
    url = URLS[broker] if broker != "memory" else f"memory://{ns}"
    holder: dict[str, Any] = {}
    n = len(events)

    async def setup() -> None:
        if "sub" in holder:
            return
        async with Publisher(url, namespace=ns) as pub:
            holder["run"] = await emit_all(pub, events)
        holder["sub"] = await Subscriber(
            url, namespace=ns, idle_timeout=30, start_timeout=30
        ).connect()

    async def follow() -> dict[str, float]:
        count = 0
        t0 = time.perf_counter()
        async with contextlib.aclosing(holder["sub"].follow(holder["run"])) as items:
            async for item in items:
                count += 1
                assert item.event["data"]["chunk"].content
        elapsed = time.perf_counter() - t0
        if count != n:
            raise RuntimeError(f"followed {count} events, expected {n}")
        return {"events_per_s": n / elapsed}

    async def consume() -> dict[str, float]:
        count = 0
        group = f"g{uuid.uuid4().hex[:10]}"
        t0 = time.perf_counter()
        async with contextlib.aclosing(
            holder["sub"].consume(group, "c1", start="first", prefetch=100)
        ) as msgs:
            async for msg in msgs:
                await msg.ack()
                if msg.kind == "event":
                    count += 1
                elif msg.run_id == holder["run"]:
                    break
        elapsed = time.perf_counter() - t0
        if count != n:
            raise RuntimeError(f"consumed {count} events, expected {n}")
        return {"events_per_s": n / elapsed}

    async def teardown() -> None:
        sub = holder.pop("sub", None)
        if sub is not None:
            await sub.aclose()

    cases = [
        Case(
            f"eventbus Subscriber.follow ← {broker}",
            follow,
            {"broker": broker, "mode": "follower"},
            setup,
        ),
        Case(
            f"eventbus Subscriber.consume + ack ← {broker}",
            consume,
            {"broker": broker, "mode": "group"},
            setup,
            teardown,
        ),
    ]
    why = unavailable(broker)
    for c in cases:
        c.labels["events"] = n
        if why:
            setattr(c, why[0], why[1])
    return cases


def _redis_raw(frames: list[bytes], prefix: str) -> list[Case]:
    import redis.asyncio as aioredis

    holder: dict[str, Any] = {}
    key = f"{prefix}:stream"
    n = len(frames)

    async def setup() -> None:
        if "client" in holder:
            return
        holder["client"] = client = aioredis.Redis.from_url(REDIS_URL, protocol=2)
        for i in range(0, n, 1000):
            async with client.pipeline(transaction=False) as pipe:
                for data in frames[i : i + 1000]:
                    pipe.xadd(key, {"data": data})
                await pipe.execute()

    async def follow() -> dict[str, float]:
        client, last, count = holder["client"], "0-0", 0
        t0 = time.perf_counter()
        for _ in range(n):  # bounded: at least one entry per round
            reply = await client.xread({key: last}, count=1000)
            if not reply:
                break
            page = reply[0][1]
            count += len(page)
            last = page[-1][0]
            if count >= n:
                break
        elapsed = time.perf_counter() - t0
        if count != n:
            raise RuntimeError(f"read {count} of {n}")
        return {"events_per_s": n / elapsed}

    async def group() -> dict[str, float]:
        client, count = holder["client"], 0
        g = f"g{uuid.uuid4().hex[:8]}"
        await client.xgroup_create(key, g, id="0")
        t0 = time.perf_counter()
        for _ in range(n):
            reply = await client.xreadgroup(g, "c1", {key: ">"}, count=1000)
            if not reply:
                break
            ids = [i for i, _f in reply[0][1]]
            await client.xack(key, g, *ids)
            count += len(ids)
            if count >= n:
                break
        elapsed = time.perf_counter() - t0
        await client.xgroup_destroy(key, g)
        if count != n:
            raise RuntimeError(f"read {count} of {n}")
        return {"events_per_s": n / elapsed}

    async def teardown() -> None:
        client = holder.pop("client", None)
        if client is not None:
            await client.delete(key)
            await client.aclose()

    cases = [
        Case("raw XREAD COUNT 1000", follow, {"broker": "redis", "mode": "follower"}, setup),
        Case(
            "raw XREADGROUP COUNT 1000 + XACK",
            group,
            {"broker": "redis", "mode": "group"},
            setup,
            teardown,
        ),
    ]
    why = unavailable("redis")
    for c in cases:
        c.labels["events"] = n
        if why:
            setattr(c, why[0], why[1])
    return cases


def _rabbit_raw(frames: list[bytes], queues: list[str]) -> list[Case]:
    import aio_pika

    holder: dict[str, Any] = {}
    stream = f"bench-con-stream-{uuid.uuid4().hex[:10]}"
    quorum = f"bench-con-quorum-{uuid.uuid4().hex[:10]}"
    queues += [stream, quorum]
    n = len(frames)

    async def setup() -> None:
        conn = holder.get("conn")
        if conn is not None and not conn.is_closed:
            return  # (reopened when other jobs on the shared machine closed it)
        holder["conn"] = conn = await aio_pika.connect(AMQP_URL)
        ch = await conn.channel(publisher_confirms=True)
        await ch.declare_queue(stream, durable=True, arguments={"x-queue-type": "stream"})
        await ch.declare_queue(quorum, durable=True, arguments={"x-queue-type": "quorum"})
        for i in range(0, n, 200):
            await asyncio.gather(
                *(
                    ch.default_exchange.publish(aio_pika.Message(d), stream)
                    for d in frames[i : i + 200]
                )
            )
        await ch.close()

    async def drain(queue_name: str, prefetch: int, args: dict[str, Any] | None) -> float:
        await setup()
        conn = holder["conn"]
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=prefetch)
        queue = await ch.get_queue(queue_name, ensure=False)
        done = asyncio.get_running_loop().create_future()
        count = 0

        async def on_message(message: Any) -> None:
            nonlocal count
            await message.ack()
            count += 1
            if count >= n and not done.done():
                done.set_result(None)

        t0 = time.perf_counter()
        tag = await queue.consume(on_message, arguments=args)
        try:
            await asyncio.wait_for(done, 120)
        finally:
            elapsed = time.perf_counter() - t0
            with contextlib.suppress(Exception):
                await queue.cancel(tag)
            await ch.close()
        return n / elapsed

    async def follow() -> dict[str, float]:
        return {"events_per_s": await drain(stream, 1000, {"x-stream-offset": "first"})}

    async def fill_quorum() -> None:
        await setup()
        ch = await holder["conn"].channel(publisher_confirms=True)
        for i in range(0, n, 200):
            await asyncio.gather(
                *(
                    ch.default_exchange.publish(aio_pika.Message(d), quorum)
                    for d in frames[i : i + 200]
                )
            )
        await ch.close()

    async def group() -> dict[str, float]:
        await fill_quorum()  # not timed
        return {"events_per_s": await drain(quorum, 100, None)}

    async def teardown() -> None:
        conn = holder.pop("conn", None)
        if conn is not None:
            await conn.close()

    cases = [
        Case(
            "raw aio-pika stream queue, ack each (prefetch 1000)",
            follow,
            {"broker": "rabbitmq", "mode": "follower"},
            setup,
        ),
        Case(
            "raw aio-pika quorum queue, ack each (prefetch 100)",
            group,
            {"broker": "rabbitmq", "mode": "group"},
            setup,
            teardown,
        ),
    ]
    why = unavailable("rabbitmq")
    for c in cases:
        c.labels["events"] = n
        if why and why[0] == "error":
            c.error = why[1]
    return cases


async def _run(quick: bool) -> list[Row]:
    n, n_raw, repeats = (3_000, 2_000, 3) if quick else (30_000, 10_000, 5)
    events = token_events(n)
    frames = _frames(events[:n_raw])
    namespaces: dict[str, str] = {}
    prefix = fresh("con-raw")
    queues: list[str] = []
    cases = [
        *_eventbus_cases("redis", events, namespaces),
        *_redis_raw(frames, prefix),
        *_eventbus_cases("rabbitmq", events, namespaces),
        *_rabbit_raw(frames, queues),
    ]
    try:
        await interleaved(cases, repeats, timeout=300, warmup=not quick)
    finally:
        for broker, ns in namespaces.items():
            await cleanup(broker, ns)
        await cleanup("redis", prefix)
        await cleanup("rabbitmq", "", queues)
    rows = [case_row(c) for c in cases]
    for r in rows:
        for other in rows:
            if (
                other is not r
                and other.get("broker") == r.get("broker")
                and other.get("mode") == r.get("mode")
                and r["case"].startswith("eventbus")
                and not other["case"].startswith("eventbus")
                and r.get("events_per_s")
                and other.get("events_per_s")
            ):
                r["vs_raw"] = r["events_per_s"] / other["events_per_s"]
    return rows


def run(quick: bool = False) -> list[Row]:
    return asyncio.run(_run(quick))


def table(results: list[Row]) -> str:
    headers = [
        "broker",
        "mode",
        "consumer",
        "events/rep",
        "events/s, median (min\u2013max)",
        "µs/event",
        "x raw",
        "note",
    ]
    lines = []
    for r in results:
        eps = r.get("events_per_s")
        lines.append(
            [
                r.get("broker", ""),
                r.get("mode", ""),
                r.get("case", ""),
                fmt(r.get("events")),
                spread(r, "events_per_s", 0),
                fmt(1e6 / eps, 1) if eps else "",
                fmt(r.get("vs_raw"), 2),
                note(r),
            ]
        )
    return md_table(headers, lines)
