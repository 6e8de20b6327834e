"""Publish throughput of pre-built events from one process.

    python -m benchmarks publish [--quick]

The events are realistic ``on_chat_model_stream`` dicts (an ``AIMessageChunk`` and
LangGraph metadata, ~860 bytes as an eventbus frame of one event). eventbus is driven
through the publisher's own path without LangChain in front (``benchmarks._common.emit_all``:
``Publisher._emit_event`` per event, yielding to the loop every 32 events, as a producer
with events at hand does, then the run's End and a wait until everything is on the
broker), so the figures are eventbus' encode + buffer + batch + send, not LangChain's
event machinery. A burst packs many events per broker entry (the "events/entry" column);
the **paced** rows emit the same events at 200 events/s (an LLM's token rate: what a
real run publishes), where each entry holds a handful.

Baselines, interleaved with eventbus repetition by repetition; every baseline **encodes
its events inside the timed loop** unless its name says "pre-encoded":

* Redis, the target's baseline: **raw packed**: eventbus' own encoder (the same
  type-exact records) packing the same number of events per stream entry as eventbus did
  in its last repetition, the same commands (XADD to the run stream and XADD MAXLEN ~ to
  the namespace stream per entry), sent as redis-py packed commands on one connection,
  pipelined (one round trip per ~1,000 events, the next batch encoded while the previous
  replies come back). This is eventbus minus eventbus: the same work by hand.
* Redis, what users write: the **hand-rolled** publisher, msgspec msgpack with a
  ``model_dump`` hook (not type-exact) and one event per entry, pipelined through
  redis-py's ``Pipeline`` every 256 events; FastStream's documented batch path
  (``publish(..., stream=, pipeline=)``, executed every 256) with the same encoder; raw
  redis-py ``XADD`` of pre-encoded bytes awaited one by one, and pipelined x1000 (the
  previous target baseline, kept for the before/after comparison); the server's ceiling
  from ``redis-benchmark -P 64 XADD`` (C client, no Python).
* RabbitMQ, the target's baseline: **raw packed**: eventbus' encoder and the same events
  per message as eventbus, published with aio-pika with publisher confirms in flight (a
  window of 500 unconfirmed messages) to a topic exchange that routes each into two
  stream queues, as eventbus' exchange routes a frame into the run's stream and the
  namespace log.
* RabbitMQ, per message: raw aio-pika with confirms in flight (window 500), one event per
  message, encoded with eventbus' encoder and pre-encoded; a confirm awaited per message
  (the previous target baseline); FastStream's ``RabbitBroker.publish`` run concurrently
  (window 500: it has no batch publish for RabbitMQ) with the msgspec + ``model_dump``
  encoder.

"eventbus is x" is eventbus' rate over the row's, per repetition (eventbus and the
baseline run in the same interleaved pass of each repetition): the median of those ratios, and their
(min-max). A target is **met** only when the worst repetition meets it.

Slow per-message baselines publish fewer events per repetition than eventbus does (a rate
is a rate); the row says how many.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import statistics
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
    per_rep_ratios,
    spread,
    token_events,
    unavailable,
)

RAW_PACKED_REDIS = "raw packed: eventbus encoder, same events/entry, packed commands pipelined"
RAW_PACKED_RABBIT = (
    "raw packed: eventbus encoder, same events/message, into 2 stream queues, "
    "confirms in flight x500"
)
TARGETS = {
    "redis": (RAW_PACKED_REDIS, 2.0),
    "rabbitmq": (RAW_PACKED_RABBIT, 5.0),
}
# the baselines the targets were judged on before (kept for the before/after comparison)
OLD_TARGETS = {
    "redis": "raw redis-py XADD pipelined x1000, pre-encoded",
    "rabbitmq": "raw aio-pika, confirm awaited per message, pre-encoded",
}
PACED_RATE = 200.0  # events/s of the paced runs: an LLM streaming tokens


def model_dump_encoder() -> Any:
    """What a careful hand-rolled publisher uses: msgspec msgpack, pydantic models through
    ``model_dump`` (types are lost on the way: a dict comes back, not the model)."""
    import msgspec

    def hook(obj: Any) -> Any:
        dump = getattr(obj, "model_dump", None)
        if dump is not None:
            return dump()
        if isinstance(obj, str):  # str subclasses (LangChain's TextAccessor)
            return str(obj)
        raise NotImplementedError(type(obj).__name__)

    return msgspec.msgpack.Encoder(enc_hook=hook)


class _Packer:
    """eventbus' own encoder, packing ``per_entry`` events per frame, as a raw publisher
    that wanted eventbus' wire format would."""

    def __init__(self) -> None:
        from eventbus._wire import Event, RecordEncoder

        self._enc = RecordEncoder("msgpack")
        self._event = Event
        self.per_entry = 250  # until eventbus has reported its own
        self.seq = 0

    def frames(self, events: list[dict[str, Any]]) -> list[bytes]:
        enc, out, k = self._enc, [], max(1, round(self.per_entry))
        for i in range(0, len(events), k):
            records = []
            for e in events[i : i + k]:
                self.seq += 1
                records.append(enc.encode_record(self._event(self.seq, 0.0, enc.to_tree(e))))
            out.append(enc.encode_envelope("ns", "run", "p", records))
        return out


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


def _eventbus_case(
    broker: str,
    events: list[dict[str, Any]],
    namespaces: dict[str, str],
    packer: _Packer | None = None,
    paced: float | None = None,
) -> Case:
    from eventbus import Publisher

    ns = fresh("pub")
    namespaces[f"{broker}{'-paced' if paced else ''}"] = ns
    url = URLS[broker] if broker != "memory" else f"memory://{ns}"
    holder: dict[str, Any] = {}

    async def setup() -> None:
        holder["pub"] = await Publisher(url, namespace=ns).connect()

    async def once() -> dict[str, float]:
        pub = holder["pub"]
        frames0 = pub.stats.frames
        t0 = time.perf_counter()
        if paced:
            await _emit_paced(pub, events, paced)
        else:
            await emit_all(pub, events, yield_every=32)
        out = _rate(len(events), time.perf_counter() - t0)
        # the End record shares the last frame: frames carry the events
        out["events_per_entry"] = len(events) / max(1, pub.stats.frames - frames0)
        if packer is not None:
            packer.per_entry = out["events_per_entry"]
        return out

    async def teardown() -> None:
        if "pub" in holder:
            await holder["pub"].aclose()

    name = f"eventbus → {broker}" + (f", paced at {paced:g} events/s" if paced else "")
    case = Case(name, once, {"broker": broker, "events": len(events)}, setup, teardown)
    return _mark(case, broker)


async def _emit_paced(pub: Any, events: list[dict[str, Any]], rate: float) -> None:
    """``emit_all`` at ``rate`` events/s, each event emitted at its intended time."""
    import uuid as _uuid

    run = pub._open_run(str(_uuid.uuid4()))
    start = time.perf_counter()
    for i, event in enumerate(events):
        delay = start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        pub._emit_event(run, event)
    await pub._finish(run, None)


def _redis_cases(
    events: list[dict[str, Any]], frames: list[bytes], slow: int, prefix: str, packer: _Packer
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

    async def packed() -> dict[str, float]:
        client, run_key, events_key = holder["client"], key(), key()
        conn = client.connection_pool.make_connection()
        await conn.connect()
        per_round_trip = max(1, round(1000 / max(1.0, packer.per_entry)))  # frames
        entries = 0
        try:
            t0 = time.perf_counter()
            outstanding = 0
            step = per_round_trip * max(1, round(packer.per_entry))
            for i in range(0, len(events), step):
                commands: list[tuple[Any, ...]] = []
                for data in packer.frames(events[i : i + step]):
                    commands.append(("XADD", run_key, "*", "data", data))
                    commands.append(
                        ("XADD", events_key, "MAXLEN", "~", "100000", "*", "data", data)
                    )
                entries += len(commands) // 2
                await conn.send_packed_command(conn.pack_commands(commands), check_health=False)
                # the previous batch's replies, read while this batch travels
                for _ in range(outstanding):
                    await conn.read_response()
                outstanding = len(commands)
            for _ in range(outstanding):
                await conn.read_response()
            out = _rate(len(events), time.perf_counter() - t0)
        finally:
            await conn.disconnect()
        out["events_per_entry"] = len(events) / entries
        await client.delete(run_key, events_key)
        return out

    async def handrolled() -> dict[str, float]:
        client, k = holder["client"], key()
        encode = model_dump_encoder().encode
        t0 = time.perf_counter()
        for i in range(0, len(events), 256):
            async with client.pipeline(transaction=False) as pipe:
                for event in events[i : i + 256]:
                    pipe.xadd(k, {"data": encode(event)})
                await pipe.execute()
        out = _rate(len(events), time.perf_counter() - t0)
        await client.delete(k)
        return out

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

    fs: dict[str, Any] = {}

    async def fs_setup() -> None:
        from faststream.redis import RedisBroker

        fs["broker"] = RedisBroker(REDIS_URL)
        await fs["broker"].connect()

    async def fs_once() -> dict[str, float]:
        # FastStream's documented batch path: publish(..., pipeline=pipe), then execute
        broker, k = fs["broker"], key()
        encode = model_dump_encoder().encode
        t0 = time.perf_counter()
        for i in range(0, len(events), 256):
            async with broker._connection.pipeline(transaction=False) as pipe:
                for event in events[i : i + 256]:
                    await broker.publish(encode(event), stream=k, pipeline=pipe)
                await pipe.execute()
        out = _rate(len(events), time.perf_counter() - t0)
        await holder["client"].delete(k)
        return out

    async def fs_teardown() -> None:
        if "broker" in fs:
            await fs["broker"].stop()

    cases = [
        Case(RAW_PACKED_REDIS, packed, {"events": len(events)}, setup),
        Case(
            "hand-rolled msgspec + model_dump, 1 event/entry, redis-py Pipeline x256",
            handrolled,
            {"events": len(events), "events_per_entry": 1},
            setup,
        ),
        Case(
            "FastStream publish(stream=, pipeline=) x256, msgspec + model_dump",
            fs_once,
            {"events": len(events), "events_per_entry": 1},
            fs_setup,
            fs_teardown,
        ),
        Case(
            "raw redis-py XADD, awaited per event, pre-encoded",
            awaited,
            {"events": slow, "events_per_entry": 1},
            setup,
        ),
        Case(
            OLD_TARGETS["redis"],
            pipelined,
            {"events": len(frames), "events_per_entry": 1},
            setup,
        ),
    ]
    # one client for all; closed after the last case (teardown runs per case, idempotent)
    cases[-1].teardown = teardown
    for c in cases:
        c.labels["broker"] = "redis"
        _mark(c, "redis")
    try:
        import faststream.redis  # noqa: F401
    except ImportError as exc:
        cases[2].skipped = f"faststream[redis] not installed ({exc})"

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
        "redis-benchmark -P 64 -c 1 XADD (C client ceiling, pre-encoded)",
        ceiling,
        {"broker": "redis", "events": n_rb, "events_per_entry": 1},
        setup,
    )
    _mark(c, "redis")
    if rb is None:
        c.skipped = "redis-benchmark not on PATH"
    cases.append(c)
    return cases


def _rabbit_cases(
    events: list[dict[str, Any]],
    frames: list[bytes],
    slow: int,
    queues: list[str],
    packer: _Packer,
) -> list[Case]:
    holder: dict[str, Any] = {}
    name = f"bench-pub-raw-{uuid.uuid4().hex[:10]}"
    queues += [name, f"{name}-run", f"{name}-log"]
    window = 500

    async def setup() -> None:
        # (re)connect: other jobs on this shared machine may close our connections
        # (reconnect tests): a closed connection is opened again before the next repetition
        conn = holder.get("conn")
        if conn is not None and not conn.is_closed and not holder["confirm"].is_closed:
            return
        import aio_pika

        holder["conn"] = conn = await aio_pika.connect(AMQP_URL)
        holder["confirm"] = channel = await conn.channel(publisher_confirms=True)
        stream = {"x-queue-type": "stream"}
        await channel.declare_queue(name, durable=True, arguments=stream)
        # eventbus' topology for one run: a topic exchange routing each frame into the
        # run's stream queue and the namespace log stream
        holder["exchange"] = exchange = await channel.declare_exchange(
            name, aio_pika.ExchangeType.TOPIC, durable=True
        )
        for queue_name in (f"{name}-run", f"{name}-log"):
            queue = await channel.declare_queue(queue_name, durable=True, arguments=stream)
            await queue.bind(exchange, "f.#")

    async def teardown() -> None:
        conn = holder.pop("conn", None)
        if conn is not None:
            await conn.close()

    def message(data: bytes) -> Any:
        import aio_pika

        return aio_pika.Message(data, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)

    async def in_flight(bodies: Any, n: int, routed: bool = False) -> dict[str, float]:
        """Publish what ``bodies`` yields (encoding, if any, happens as it is iterated)
        with up to ``window`` confirms outstanding; the rate of ``n`` events. ``routed``:
        through the topic exchange into two stream queues, as eventbus does."""
        await setup()
        ex = holder["exchange"] if routed else holder["confirm"].default_exchange
        key = "f.run" if routed else name
        slots = asyncio.Semaphore(window)
        tasks: list[asyncio.Task[Any]] = []

        async def one(data: bytes) -> None:
            try:
                await ex.publish(message(data), key)
            finally:
                slots.release()

        t0 = time.perf_counter()
        for data in bodies:
            await slots.acquire()
            tasks.append(asyncio.create_task(one(data)))
        await asyncio.gather(*tasks)
        return _rate(n, time.perf_counter() - t0)

    single = _Packer()
    single.per_entry = 1

    async def window_pre_encoded() -> dict[str, float]:
        return await in_flight(iter(frames), len(frames))

    async def window_encoded() -> dict[str, float]:
        return await in_flight((single.frames([e])[0] for e in events), len(events))

    async def window_packed() -> dict[str, float]:
        k = max(1, round(packer.per_entry))
        bodies = (packer.frames(events[i : i + k])[0] for i in range(0, len(events), k))
        out = await in_flight(bodies, len(events), routed=True)
        out["events_per_entry"] = float(k)
        return out

    async def awaited() -> dict[str, float]:
        await setup()
        ex = holder["confirm"].default_exchange
        t0 = time.perf_counter()
        for data in frames[:slow]:
            await ex.publish(message(data), name)
        return _rate(slow, time.perf_counter() - t0)

    fs: dict[str, Any] = {}

    async def fs_setup() -> None:
        await setup()
        from faststream.rabbit import RabbitBroker

        fs["broker"] = RabbitBroker(AMQP_URL)
        await fs["broker"].connect()

    async def fs_once() -> dict[str, float]:
        # FastStream has no batch publish for RabbitMQ: concurrent publishes, a window
        broker = fs["broker"]
        encode = model_dump_encoder().encode
        slots = asyncio.Semaphore(window)
        tasks: list[asyncio.Task[Any]] = []

        async def one(data: bytes) -> None:
            try:
                await broker.publish(data, queue=name, persist=True)
            finally:
                slots.release()

        t0 = time.perf_counter()
        for event in events:
            data = encode(event)
            await slots.acquire()
            tasks.append(asyncio.create_task(one(data)))
        await asyncio.gather(*tasks)
        return _rate(len(events), time.perf_counter() - t0)

    async def fs_teardown() -> None:
        if "broker" in fs:
            await fs["broker"].stop()

    one_each = {"events_per_entry": 1}
    cases = [
        Case(
            "raw aio-pika, confirms in flight x500, encoded",
            window_encoded,
            {"events": len(events), **one_each},
            setup,
        ),
        Case(RAW_PACKED_RABBIT, window_packed, {"events": len(events)}, setup),
        Case(
            "raw aio-pika, confirms in flight x500, pre-encoded",
            window_pre_encoded,
            {"events": len(frames), **one_each},
            setup,
        ),
        Case(OLD_TARGETS["rabbitmq"], awaited, {"events": slow, **one_each}, setup, teardown),
        Case(
            "FastStream RabbitBroker.publish, concurrent x500, msgspec + model_dump",
            fs_once,
            {"events": len(events), **one_each},
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
        cases[4].skipped = f"faststream[rabbit] not installed ({exc})"
    return cases


async def _run(quick: bool) -> list[Row]:
    n, slow, repeats = (3_000, 800, 3) if quick else (30_000, 4_000, 5)
    n_paced = 200 if quick else 1_000
    events = token_events(n)
    frames = _frames(events)
    namespaces: dict[str, str] = {}
    prefix = fresh("pub-raw")
    queues: list[str] = []
    redis_packer, rabbit_packer = _Packer(), _Packer()
    redis_cases = [
        _eventbus_case("redis", events, namespaces, redis_packer),
        *_redis_cases(events, frames, slow, prefix, redis_packer),
    ]
    rabbit_cases = [
        _eventbus_case("rabbitmq", events, namespaces, rabbit_packer),
        *_rabbit_cases(events, frames, slow, queues, rabbit_packer),
    ]
    memory = _eventbus_case("memory", events, namespaces)
    cases = [memory, *redis_cases, *rabbit_cases]
    paced = [
        _eventbus_case(b, events[:n_paced], namespaces, paced=PACED_RATE)
        for b in ("redis", "rabbitmq")
    ]
    try:
        await interleaved(cases, repeats, timeout=300, warmup=not quick)
        # the paced runs last seconds each and are compared with nothing: one pass each
        await interleaved(paced, 1, timeout=300, warmup=False)
    finally:
        for key, ns in namespaces.items():
            await cleanup(key.split("-")[0], ns)
        await cleanup("redis", prefix)
        await cleanup("rabbitmq", "", queues)
    rows = [case_row(c) for c in [*cases, *paced]]
    by_case = {c.name: c for c in cases}
    by_name = {r["case"]: r for r in rows}
    for r, c in zip(rows, [*cases, *paced], strict=True):
        ours = by_case.get(f"eventbus → {r.get('broker')}")
        if ours is None or c is ours or c in paced:
            continue
        ratios = per_rep_ratios(ours, c, "events_per_s")
        if ratios:
            r["eventbus_x"] = statistics.median(ratios)
            r["eventbus_x_min"], r["eventbus_x_max"] = min(ratios), max(ratios)
    for broker, (baseline, factor) in TARGETS.items():
        row, base = by_name.get(f"eventbus → {broker}"), by_name.get(baseline)
        if row and base and "eventbus_x" in base:
            row["vs"] = baseline
            row["speedup"] = base["eventbus_x"]
            row["speedup_min"] = base["eventbus_x_min"]
            row["target"] = f"≥{factor:g}x {baseline}"
            row["met"] = base["eventbus_x_min"] >= factor
        old = by_name.get(OLD_TARGETS[broker])
        if row and old and "eventbus_x" in old:
            row["old_baseline"] = OLD_TARGETS[broker]
            row["old_speedup"] = old["eventbus_x"]
    return rows


def run(quick: bool = False) -> list[Row]:
    return asyncio.run(_run(quick))


def table(results: list[Row]) -> str:
    headers = [
        "broker",
        "publisher",
        "events/rep",
        "events/entry",
        "events/s, median (min\u2013max)",
        "µs/event",
        "eventbus is x, per rep: median (min\u2013max)",
        "target (judged on the worst repetition)",
        "note",
    ]
    lines = []
    for r in results:
        target = ""
        if "met" in r:
            target = (
                f"{r['target']}: {'**met**' if r['met'] else '**missed**'} "
                f"(worst {r['speedup_min']:.2f}x, median {r['speedup']:.2f}x)"
            )
            if "old_speedup" in r:
                target += (
                    f"; against the old baseline ({r['old_baseline']}): {r['old_speedup']:.2f}x"
                )
        eps = r.get("events_per_s")
        lines.append(
            [
                r.get("broker", ""),
                r.get("case", ""),
                fmt(r.get("events")),
                spread(r, "events_per_entry", 1) or fmt(r.get("events_per_entry")),
                spread(r, "events_per_s", 0),
                fmt(1e6 / eps, 1) if eps else "",
                spread(r, "eventbus_x", 2),
                target,
                note(r),
            ]
        )
    return md_table(headers, lines)
