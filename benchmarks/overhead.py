"""Worker overhead: what publishing costs a run, in wall time and CPU.

    python -m benchmarks overhead [--quick]

Workloads: ``prompt | NativeFakeChat | StrOutputParser`` streaming 1,000 and 10,000 tokens
(~3 events per token; quick: 1,000 only); what LangGraph apps run, a graph whose node
streams 2,000 tokens (quick: 500) from the same chat model and writes a progress update
through ``get_stream_writer()`` every 10 tokens, run with ``stream_mode=["messages",
"updates", "custom"]`` (two events per token: ``on_chat_model_stream`` and the root's
``on_chain_stream`` with ``("messages", (chunk, metadata))``); and a two-node graph whose
node writes progress updates only (run with ``stream_mode="custom"``).

Modes, interleaved repetition by repetition in one process:

* ``local astream_events`` (the baseline): iterate ``astream_events(version="v2")``;
* ``eventbus memory|redis|rabbitmq``: ``Publisher.run`` (connected once, as a worker is),
  which returns only when every event is on the broker;
* ``hand-rolled msgspec + XADD``: what a careful user writes, msgspec msgpack with a
  ``model_dump`` hook (not type-exact) and ``XADD`` through a redis-py pipeline executed
  every 256 events, inline.

The targets are judged on the worst repetition (each repetition's wall over the
baseline's of the same repetition), not on the ratio of the medians.

Wall is ``perf_counter``, CPU is ``process_time`` (the whole process: the run, the
publisher's writer task and the broker client). "added µs/event" is the median wall
(or CPU) difference to the baseline divided by the number of events.

"CPU ratio" is the median CPU over the baseline's median. "instructions/event" is what
callgrind counts for one run of the workload (500 tokens) per mode in a child process
(``benchmarks._callgrind``: the whole process, the broker client included, the broker
not), and its ratio to the local run's: stable where the CPU figures of this shared
machine are not (full runs only: a callgrind run takes minutes). "bytes/event": on the
baseline's row, each event's record as the publisher encodes it (mean over every event,
and over the ``*_stream`` events); on eventbus rows, the frames as sent (envelopes
included) per event.

Where the added time goes: ``python -m benchmarks._profile run`` (cProfile, per event).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import Any

from langchain_core.messages import HumanMessage

from eventbus._wire import RecordEncoder

from . import _callgrind
from ._common import (
    TOKEN_GRAPH_MODES,
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
    progress_graph,
    spread,
    streaming_chain,
    token_graph,
    unavailable,
)
from .publish import model_dump_encoder

TARGETS = {"redis": 5.0, "rabbitmq": 10.0}  # max added wall time, %


async def _workloads(quick: bool) -> list[tuple[str, Any, Any, dict[str, Any], int]]:
    """(name, runnable, input, astream kwargs, repeats)."""
    out: list[tuple[str, Any, Any, dict[str, Any], int]] = [
        ("chain 1k tokens", streaming_chain(1000), {"q": "hi"}, {}, 3 if quick else 7)
    ]
    if not quick:
        out.append(("chain 10k tokens", streaming_chain(10_000), {"q": "hi"}, {}, 4))
    tokens = 500 if quick else 2000
    out.append(
        (
            f"graph {tokens:,} tokens, messages+updates+custom",
            token_graph(tokens),
            {"messages": [HumanMessage("hi")], "done": False},
            {"stream_mode": TOKEN_GRAPH_MODES},
            3 if quick else 5,
        )
    )
    steps = 2000 if quick else 5000
    out.append(
        (
            f"graph {steps // 1000}k progress writes",
            progress_graph(steps),
            {"n": 0, "done": False},
            {"stream_mode": "custom"},
            3 if quick else 7,
        )
    )
    return out


async def _measure(workload: tuple[str, Any, Any, dict[str, Any], int], quick: bool) -> list[Row]:
    import redis.asyncio as aioredis

    from eventbus import Publisher

    name, runnable, inp, kwargs, repeats = workload
    # the number of events of one run (the same in every mode), and what each record is
    # on the wire (encoded when it happens, as the publisher does)
    encoder = RecordEncoder()
    events = 0
    record_bytes: list[int] = []
    stream_bytes: list[int] = []
    async for event in runnable.astream_events(inp, version="v2", **kwargs):
        events += 1
        size = len(encoder.encode_event(events, 0.0, encoder.to_tree(event)))
        record_bytes.append(size)
        if event["event"].endswith("_stream"):
            stream_bytes.append(size)

    cases: list[Case] = []

    async def local() -> dict[str, float]:
        w0, c0 = time.perf_counter(), time.process_time()
        async for _ in runnable.astream_events(inp, version="v2", **kwargs):
            pass
        return {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}

    cases.append(Case("local astream_events (baseline)", local, {"broker": "-"}))

    namespaces: dict[str, str] = {}
    holders: dict[str, dict[str, Any]] = {}
    # (broker, signed): signed frames on memory show the cost of signing alone
    for broker, signed in (
        ("memory", False),
        ("memory", True),
        ("redis", False),
        ("rabbitmq", False),
    ):
        ns = fresh("ovh")
        namespaces[broker + (" signed" if signed else "")] = ns
        why = unavailable(broker)
        url = URLS[broker] if broker != "memory" else f"memory://{ns}"
        holder: dict[str, Any] = {}
        keys = {"bench": "k" * 32} if signed else None

        def make(
            url: str = url, ns: str = ns, holder: dict[str, Any] = holder, keys: Any = keys
        ) -> Any:
            async def setup() -> None:
                holder["pub"] = await Publisher(url, namespace=ns, keys=keys).connect()

            async def once() -> dict[str, float]:
                pub = holder["pub"]
                w0, c0 = time.perf_counter(), time.process_time()
                await pub.run(runnable, inp, config={"run_id": uuid.uuid4()}, **kwargs)
                return {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}

            async def teardown() -> None:
                if "pub" in holder:
                    stats = holder["pub"].stats
                    # frames as sent (envelopes included), over every repetition
                    holder["wire_bytes_per_event"] = stats.bytes / max(1, stats.events)
                    await holder["pub"].aclose()

            return setup, once, teardown

        holders[broker + (" signed" if signed else "")] = holder
        eb_setup, eb_once, eb_teardown = make()
        label = f"{broker}, signed frames" if signed else broker
        case = Case(
            f"eventbus Publisher.run → {label}",
            eb_once,
            {"broker": broker, "signed": str(signed)},
            eb_setup,
            eb_teardown,
        )
        if why:
            setattr(case, why[0], why[1])
        cases.append(case)

    raw_key = fresh("ovh-raw")
    rholder: dict[str, Any] = {}

    async def raw_setup() -> None:
        rholder["client"] = aioredis.Redis.from_url(URLS["redis"], protocol=2)
        await rholder["client"].ping()

    async def raw_once() -> dict[str, float]:
        client = rholder["client"]
        key = f"{raw_key}:{uuid.uuid4().hex[:8]}"
        encode = model_dump_encoder().encode
        w0, c0 = time.perf_counter(), time.process_time()
        pipe = client.pipeline(transaction=False)
        async for event in runnable.astream_events(inp, version="v2", **kwargs):
            pipe.xadd(key, {"data": encode(event)})
            if len(pipe) >= 256:
                await pipe.execute()
        await pipe.execute()
        out = {"wall": time.perf_counter() - w0, "cpu": time.process_time() - c0}
        await client.delete(key)
        return out

    async def raw_teardown() -> None:
        if "client" in rholder:
            await rholder["client"].aclose()

    raw = Case(
        "hand-rolled msgspec + model_dump, XADD pipelined x256",
        raw_once,
        {"broker": "redis"},
        raw_setup,
        raw_teardown,
    )
    why = unavailable("redis")
    if why:
        setattr(raw, why[0], why[1])
    cases.append(raw)

    try:
        await interleaved(cases, repeats, timeout=300, warmup=not quick)
    finally:
        for broker, ns in namespaces.items():
            await cleanup(broker.split()[0], ns)
        await cleanup("redis", raw_key)

    rows = []
    base = cases[0].samples
    import statistics

    b_wall = statistics.median(base["wall"]) if base.get("wall") else None
    b_cpu = statistics.median(base["cpu"]) if base.get("cpu") else None
    for case in cases:
        row = case_row(case)
        row["workload"] = name
        row["events"] = events
        if case is cases[0]:
            row["record_bytes_per_event"] = sum(record_bytes) / max(1, len(record_bytes))
            if stream_bytes:
                row["stream_record_bytes"] = sum(stream_bytes) / len(stream_bytes)
        elif case.name.startswith("eventbus"):
            key = case.labels["broker"] + (" signed" if case.labels["signed"] == "True" else "")
            wire = holders.get(key, {}).get("wire_bytes_per_event")
            if wire is not None:
                row["wire_bytes_per_event"] = wire
        if case.samples.get("wall") and b_wall:
            wall = statistics.median(case.samples["wall"])
            cpu = statistics.median(case.samples["cpu"])
            row["us_per_event"] = wall / events * 1e6
            row["added_wall_us_per_event"] = (wall - b_wall) / events * 1e6
            row["added_cpu_us_per_event"] = (cpu - b_cpu) / events * 1e6 if b_cpu else None
            row["wall_ratio"] = wall / b_wall
            row["cpu_ratio"] = cpu / b_cpu if b_cpu else None
            # the spread of the ratio: each repetition against the baseline of the same rep
            ratios = [w / b for w, b in zip(case.samples["wall"], base["wall"], strict=False)]
            row["wall_ratio_min"], row["wall_ratio_max"] = min(ratios), max(ratios)
            target = TARGETS.get(case.labels.get("broker", ""))
            if target is not None and case.name.startswith("eventbus"):
                # judged on the worst repetition, not on the ratio of the medians
                added = (row["wall_ratio_max"] - 1) * 100
                row["target"] = f"≤{target:g}% added wall"
                row["met"] = added <= target
        for k in ("wall", "cpu"):
            for suffix in ("", "_min", "_max"):
                if k + suffix in row:
                    row[f"{k}_ms{suffix}"] = row.pop(k + suffix) * 1000
        rows.append(row)
    return rows


# (workload of _callgrind, tokens) per workload name prefix: the ones counted by callgrind,
# on 500 tokens (a run under callgrind is ~50 times slower; per-run costs stay small)
_COUNTED = {"chain 1k tokens": ("chain", 500), "graph 2,000 tokens": ("graph", 500)}


def _callgrind_rows(rows: list[Row], quick: bool) -> None:
    """Instructions per event (one run per mode under callgrind, in a child process) next
    to the ratios: the local baseline's row gets ``instr_per_event``, each eventbus row
    (unsigned) its own and ``instr_ratio``, the ratio to local."""
    why = _callgrind.why_not()
    if quick and not os.environ.get("EVENTBUS_BENCH_CALLGRIND"):
        why = "quick run: not counted"
    for prefix, (workload, tokens) in _COUNTED.items():
        mine = [r for r in rows if str(r.get("workload", "")).startswith(prefix)]
        if not mine:
            continue
        modes = ["local"] + [
            r["broker"]
            for r in mine
            if r.get("case", "").startswith("eventbus")
            and r.get("signed") == "False"
            and not r.get("skipped")
            and not r.get("error")
        ]
        counts: dict[str, Any] = {}
        error = why
        if error is None:
            try:
                counts = _callgrind.run(workload, tokens, modes)
            except Exception as exc:
                error = f"callgrind: {exc!r}"[:300]
        local = counts.get("local", {}).get("instructions_per_event")
        for r in mine:
            local_row = r.get("broker") == "-"
            if not local_row and not (
                r.get("case", "").startswith("eventbus") and r.get("signed") == "False"
            ):
                continue  # (signed frames and the hand-rolled baseline are not counted)
            if error is not None:
                r["callgrind"] = error
                continue
            mode = "local" if local_row else r.get("broker")
            if mode not in counts:
                continue
            c = counts[mode]
            r["instr_per_event"] = c.get("instructions_per_event")
            r["instr_hot"] = c.get("hot", {})
            if "events_per_batch" in c:
                r["instr_events_per_batch"] = c["events_per_batch"]
            if local and r["instr_per_event"] and mode != "local":
                r["instr_ratio"] = r["instr_per_event"] / local


async def _run(quick: bool) -> list[Row]:
    rows: list[Row] = []
    for workload in await _workloads(quick):
        try:
            rows += await _measure(workload, quick)
        except Exception as exc:  # the workload itself broke: one error row
            rows.append({"workload": workload[0], "case": "-", "error": repr(exc)[:300]})
    await asyncio.to_thread(_callgrind_rows, rows, quick)
    return rows


def run(quick: bool = False) -> list[Row]:
    return asyncio.run(_run(quick))


def table(results: list[Row]) -> str:
    headers = [
        "workload",
        "mode",
        "events",
        "wall ms, median (min\u2013max)",
        "CPU ms",
        "µs/event",
        "added wall µs/event",
        "added CPU µs/event",
        "wall ratio (min\u2013max)",
        "CPU ratio",
        "instructions/event (ratio)",
        "bytes/event",
        "target",
        "note",
    ]
    lines = []
    for r in results:
        target = ""
        if "met" in r:
            target = f"{r['target']}: {'**met**' if r['met'] else '**missed**'}"
        ratio = ""
        if "wall_ratio" in r:
            lo, hi = r["wall_ratio_min"], r["wall_ratio_max"]
            ratio = f"{r['wall_ratio']:.3f} ({lo:.2f}\u2013{hi:.2f})"
        lines.append(
            [
                r.get("workload", ""),
                r.get("case", ""),
                fmt(r.get("events")),
                spread(r, "wall_ms"),
                spread(r, "cpu_ms"),
                fmt(r.get("us_per_event")),
                fmt(r.get("added_wall_us_per_event")),
                fmt(r.get("added_cpu_us_per_event")),
                ratio,
                fmt(r.get("cpu_ratio"), 3),
                _instr(r),
                _bytes(r),
                target,
                note(r),
            ]
        )
    return md_table(headers, lines)


def _instr(r: Row) -> str:
    if r.get("instr_per_event") is None:
        return str(r.get("callgrind", ""))
    text = f"{r['instr_per_event'] / 1000:,.0f}k"
    if "instr_ratio" in r:
        text += f" ({r['instr_ratio']:.3f})"
    return text


def _bytes(r: Row) -> str:
    """Records as encoded (the baseline's row: every event, and its stream events), or
    the frames as sent per event (envelopes included)."""
    if "record_bytes_per_event" in r:
        text = f"records {r['record_bytes_per_event']:.0f}"
        if "stream_record_bytes" in r:
            text += f"; stream events {r['stream_record_bytes']:.0f}"
        return text
    if "wire_bytes_per_event" in r:
        return f"wire {r['wire_bytes_per_event']:.0f}"
    return ""
