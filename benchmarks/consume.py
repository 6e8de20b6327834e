"""Consume throughput: events/s rebuilt into StreamEvent dicts (with LangChain objects).

    python -m benchmarks consume [--quick]

One run of N realistic token events is published once per broker (through the
publisher, so frames are packed as in production). Then, interleaved repetition by
repetition:

* ``Subscriber.follow`` replays the run from its first event to its end;
* ``Subscriber.consume`` with a fresh consumer group (``start="first"``), one consumer,
  acking every message, until the run's end record;
* raw baselines that **decode and rebuild** every event, as eventbus does (the "x raw"
  column, per repetition: median (min-max)): Redis ``XREAD COUNT 1000`` of eventbus' own
  run stream (the same packed entries) and ``XREADGROUP COUNT 1000`` + ``XACK`` of its
  namespace stream, each entry decoded with eventbus' ``decode_envelope`` (the
  subscriber's decoder: every ``AIMessageChunk`` rebuilt); the hand-rolled reader of one
  event per entry, msgspec decode and ``AIMessageChunk(**chunk)``; RabbitMQ: aio-pika
  consuming a stream queue (follower) and a quorum queue (group) of the same packed
  frames (250 events each), manual ack, each frame decoded with ``decode_envelope``;
* the raw readers of one event per message that decode **nothing** (the previous
  baselines, "no decoding"): the broker + client ceiling, kept for comparison.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
import uuid
from collections.abc import Callable
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
    per_rep_ratios,
    spread,
    token_events,
    unavailable,
)
from .publish import _frames, _Packer


def _eventbus_cases(
    broker: str, events: list[dict[str, Any]], namespaces: dict[str, str], holder: dict[str, Any]
) -> list[Case]:
    from eventbus import Publisher, Subscriber

    ns = fresh("con")
    namespaces[broker] = ns
    url = URLS[broker] if broker != "memory" else f"memory://{ns}"
    holder["ns"] = ns
    n = len(events)

    async def setup() -> None:
        if "sub" in holder:
            return
        async with Publisher(url, namespace=ns) as pub:
            holder["run"] = await emit_all(pub, events)
        holder["sub"] = await Subscriber(
            url, namespace=ns, idle_timeout=30, start_timeout=30
        ).connect()

    holder["setup"] = setup  # the raw readers of eventbus' own streams need the run first

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


# per entry of a reader loop: the number of events its fields hold; None counts one per
# entry without looking (the no-decoding baselines)
_PerEntry = Callable[[dict[bytes, bytes]], int] | None


def _counted(page: list[Any], per_entry: _PerEntry) -> int:
    if per_entry is None:
        return len(page)
    return sum(per_entry(fields) for _id, fields in page)


def _rate(count: int, n: int, t0: float) -> dict[str, float]:
    elapsed = time.perf_counter() - t0
    if count != n:
        raise RuntimeError(f"read {count} of {n} events")
    return {"events_per_s": n / elapsed}


async def _xread_all(client: Any, key: str, n: int, per_entry: _PerEntry) -> dict[str, float]:
    """The raw follower: XREAD COUNT 1000 from the stream's start until ``n`` events."""
    last, count = "0-0", 0
    t0 = time.perf_counter()
    for _ in range(n):  # bounded: at least one entry per round
        reply = await client.xread({key: last}, count=1000)
        if not reply:
            break
        page = reply[0][1]
        count += _counted(page, per_entry)
        last = page[-1][0]
        if count >= n:
            break
    return _rate(count, n, t0)


async def _xreadgroup_all(client: Any, key: str, n: int, per_entry: _PerEntry) -> dict[str, float]:
    """The raw group consumer: a fresh group, XREADGROUP COUNT 1000 + XACK until ``n``."""
    g = f"g{uuid.uuid4().hex[:8]}"
    await client.xgroup_create(key, g, id="0")
    count = 0
    t0 = time.perf_counter()
    try:
        for _ in range(n):
            reply = await client.xreadgroup(g, "c1", {key: ">"}, count=1000)
            if not reply:
                break
            page = reply[0][1]
            count += _counted(page, per_entry)
            await client.xack(key, g, *[i for i, _f in page])
            if count >= n:
                break
        return _rate(count, n, t0)  # timed before the group is destroyed
    finally:
        await client.xgroup_destroy(key, g)


def _decoded(fields: dict[bytes, bytes]) -> int:
    return _decode_all(fields[b"data"])


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
        return await _xread_all(holder["client"], key, n, None)

    async def group() -> dict[str, float]:
        return await _xreadgroup_all(holder["client"], key, n, None)

    async def teardown() -> None:
        client = holder.pop("client", None)
        if client is not None:
            await client.delete(key)
            await client.aclose()

    cases = [
        Case(
            "raw XREAD COUNT 1000, 1 event/entry, no decoding",
            follow,
            {"broker": "redis", "mode": "follower"},
            setup,
        ),
        Case(
            "raw XREADGROUP COUNT 1000 + XACK, 1 event/entry, no decoding",
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


def _decode_all(data: bytes) -> int:
    """Decode one packed frame as the subscriber does; the number of events in it."""
    from eventbus._wire import Event, decode_envelope

    count = 0
    for record in decode_envelope(data, max_bytes=64 << 20).records:
        if type(record) is Event:
            count += 1
            assert record.event["data"]["chunk"].content
    return count


def _redis_decoding(
    events: list[dict[str, Any]], eventbus: dict[str, Any], prefix: str, n_raw: int
) -> list[Case]:
    import msgspec
    import redis.asyncio as aioredis
    from langchain_core.messages import AIMessageChunk

    from .publish import model_dump_encoder

    holder: dict[str, Any] = {}
    n = len(events)
    hand_key = f"{prefix}:hand"

    async def setup() -> None:
        if "client" in holder:
            return
        holder["client"] = client = aioredis.Redis.from_url(REDIS_URL, protocol=2)
        encode = model_dump_encoder().encode
        for i in range(0, n_raw, 1000):
            async with client.pipeline(transaction=False) as pipe:
                for e in events[i : min(i + 1000, n_raw)]:
                    pipe.xadd(hand_key, {"data": encode(e)})
                await pipe.execute()

    async def follow() -> dict[str, float]:
        await eventbus["setup"]()
        key = f"eventbus:{{{eventbus['ns']}:{eventbus['run']}}}:run"
        return await _xread_all(holder["client"], key, n, _decoded)

    async def group() -> dict[str, float]:
        await eventbus["setup"]()
        key = f"eventbus:{{{eventbus['ns']}}}:events"
        return await _xreadgroup_all(holder["client"], key, n, _decoded)

    decode = msgspec.msgpack.Decoder().decode

    def rebuilt(fields: dict[bytes, bytes]) -> int:
        event = decode(fields[b"data"])
        event["data"]["chunk"] = AIMessageChunk(**event["data"]["chunk"])
        return 1

    async def hand() -> dict[str, float]:
        return await _xread_all(holder["client"], hand_key, n_raw, rebuilt)

    async def teardown() -> None:
        client = holder.pop("client", None)
        if client is not None:
            await client.delete(hand_key)
            await client.aclose()

    cases = [
        Case(
            "raw XREAD COUNT 1000 of eventbus' run stream + decode_envelope",
            follow,
            {"broker": "redis", "mode": "follower", "events": n, "decodes": True},
            setup,
        ),
        Case(
            "hand-rolled XREAD COUNT 1000, 1 event/entry, msgspec + AIMessageChunk(**d)",
            hand,
            {"broker": "redis", "mode": "follower", "events": n_raw, "decodes": True},
            setup,
        ),
        Case(
            "raw XREADGROUP COUNT 1000 + XACK of eventbus' stream + decode_envelope",
            group,
            {"broker": "redis", "mode": "group", "events": n, "decodes": True},
            setup,
            teardown,
        ),
    ]
    why = unavailable("redis")
    for c in cases:
        if why:
            setattr(c, why[0], why[1])
    return cases


def _rabbit_raw(
    frames: list[bytes], packed: list[bytes], n_packed: int, queues: list[str]
) -> list[Case]:
    import aio_pika

    holder: dict[str, Any] = {}
    stream = f"bench-con-stream-{uuid.uuid4().hex[:10]}"
    quorum = f"bench-con-quorum-{uuid.uuid4().hex[:10]}"
    packed_stream = f"bench-con-packed-{uuid.uuid4().hex[:10]}"
    packed_quorum = f"bench-con-packed-quorum-{uuid.uuid4().hex[:10]}"
    queues += [stream, quorum, packed_stream, packed_quorum]
    n = len(frames)

    async def publish_all(ch: Any, queue: str, bodies: list[bytes]) -> None:
        for i in range(0, len(bodies), 200):  # confirms in flight: 200 at a time
            await asyncio.gather(
                *(
                    ch.default_exchange.publish(aio_pika.Message(d), queue)
                    for d in bodies[i : i + 200]
                )
            )

    async def setup() -> None:
        conn = holder.get("conn")
        if conn is not None and not conn.is_closed:
            return  # (reopened when other jobs on the shared machine closed it)
        holder["conn"] = conn = await aio_pika.connect(AMQP_URL)
        ch = await conn.channel(publisher_confirms=True)
        await ch.declare_queue(stream, durable=True, arguments={"x-queue-type": "stream"})
        await ch.declare_queue(quorum, durable=True, arguments={"x-queue-type": "quorum"})
        await ch.declare_queue(packed_quorum, durable=True, arguments={"x-queue-type": "quorum"})
        await ch.declare_queue(packed_stream, durable=True, arguments={"x-queue-type": "stream"})
        await publish_all(ch, stream, frames)
        await publish_all(ch, packed_stream, packed)
        await ch.close()

    async def drain(
        queue_name: str,
        prefetch: int,
        args: dict[str, Any] | None,
        decode: bool = False,
        expected: int = n,
    ) -> float:
        await setup()
        conn = holder["conn"]
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=prefetch)
        queue = await ch.get_queue(queue_name, ensure=False)
        done = asyncio.get_running_loop().create_future()
        count = 0

        async def on_message(message: Any) -> None:
            nonlocal count
            count += _decode_all(message.body) if decode else 1
            await message.ack()
            if count >= expected and not done.done():
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
        return expected / elapsed

    async def follow() -> dict[str, float]:
        return {"events_per_s": await drain(stream, 1000, {"x-stream-offset": "first"})}

    async def follow_decoding() -> dict[str, float]:
        rate = await drain(packed_stream, 10, {"x-stream-offset": "first"}, True, n_packed)
        return {"events_per_s": rate}

    async def fill_quorum() -> None:
        await setup()
        ch = await holder["conn"].channel(publisher_confirms=True)
        await publish_all(ch, quorum, frames)
        await ch.close()

    async def group() -> dict[str, float]:
        await fill_quorum()  # not timed
        return {"events_per_s": await drain(quorum, 100, None)}

    async def group_decoding() -> dict[str, float]:
        await setup()
        ch = await holder["conn"].channel(publisher_confirms=True)
        await publish_all(ch, packed_quorum, packed)  # not timed
        await ch.close()
        return {"events_per_s": await drain(packed_quorum, 10, None, True, n_packed)}

    async def teardown() -> None:
        conn = holder.pop("conn", None)
        if conn is not None:
            await conn.close()

    cases = [
        Case(
            "raw aio-pika stream queue of packed frames (x250) + decode_envelope, ack each",
            follow_decoding,
            {"broker": "rabbitmq", "mode": "follower", "events": n_packed, "decodes": True},
            setup,
        ),
        Case(
            "raw aio-pika quorum queue of packed frames (x250) + decode_envelope, ack each",
            group_decoding,
            {"broker": "rabbitmq", "mode": "group", "events": n_packed, "decodes": True},
            setup,
        ),
        Case(
            "raw aio-pika stream queue, 1 event/message, ack each, no decoding",
            follow,
            {"broker": "rabbitmq", "mode": "follower"},
            setup,
        ),
        Case(
            "raw aio-pika quorum queue, 1 event/message, ack each, no decoding",
            group,
            {"broker": "rabbitmq", "mode": "group"},
            setup,
            teardown,
        ),
    ]
    why = unavailable("rabbitmq")
    for c in cases:
        c.labels.setdefault("events", n)
        if why and why[0] == "error":
            c.error = why[1]
    return cases


async def _run(quick: bool) -> list[Row]:
    n, n_raw, repeats = (3_000, 2_000, 3) if quick else (30_000, 10_000, 5)
    events = token_events(n)
    frames = _frames(events[:n_raw])
    packer = _Packer()
    packed = packer.frames(events)
    namespaces: dict[str, str] = {}
    prefix = fresh("con-raw")
    queues: list[str] = []
    redis_eb: dict[str, Any] = {}
    cases = [
        *_eventbus_cases("redis", events, namespaces, redis_eb),
        *_redis_decoding(events, redis_eb, prefix, n_raw),
        *_redis_raw(frames, prefix),
        *_eventbus_cases("rabbitmq", events, namespaces, {}),
        *_rabbit_raw(frames, packed, len(events), queues),
    ]
    try:
        await interleaved(cases, repeats, timeout=300, warmup=not quick)
    finally:
        for broker, ns in namespaces.items():
            await cleanup(broker, ns)
        await cleanup("redis", prefix)
        await cleanup("rabbitmq", "", queues)
    rows = [case_row(c) for c in cases]
    for r, c in zip(rows, cases, strict=True):
        if not c.name.startswith("eventbus"):
            continue
        same = [
            (o, oc)
            for o, oc in zip(rows, cases, strict=True)
            if oc.name.startswith("raw")
            and o.get("broker") == r.get("broker")
            and o.get("mode") == r.get("mode")
        ]
        for o, oc in same:
            key = "vs_raw" if o.get("decodes") else "vs_raw_nodecode"
            ratios = per_rep_ratios(c, oc, "events_per_s")
            if ratios and key not in r:
                r[key] = statistics.median(ratios)
                r[f"{key}_min"], r[f"{key}_max"] = min(ratios), max(ratios)
                r[f"{key}_of"] = oc.name
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
        "x raw that decodes, per rep: median (min\u2013max)",
        "x raw, no decoding (old baseline)",
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
                spread(r, "vs_raw", 2),
                fmt(r.get("vs_raw_nodecode"), 2),
                note(r),
            ]
        )
    return md_table(headers, lines)
