"""Scale: one very long run, and many concurrent runs; memory and throughput over time.

    python -m benchmarks scale [--quick]

* **one long run**: 1,000,000 events (quick: 50,000) published as one run by one process
  (the publisher's own path with small token events, generated lazily; see
  ``benchmarks._common.emit_all``), followed live by ``Subscriber.follow`` in another;
* **many runs**: 1,000 concurrent ``Publisher.run`` of ``prompt | NativeFakeChat(30 tokens) |
  StrOutputParser`` (quick: 100) in one process, consumed by one consumer-group consumer
  (``Subscriber.consume``, acking everything) in another.

Each side is its own OS process (``benchmarks._scale_proc``) and reports its peak RSS
(``VmHWM``) and its RSS when connected and idle. Throughput is measured per tenth of
the events (decile): the table shows the first and the last decile, the slowest and the
fastest, and last/first (≈1 means no degradation over the run). A scale run is one long
run: its spread is across deciles, not across repetitions.

RabbitMQ keeps a stream queue, about two file descriptors, per retained run: 1,000
concurrent runs need a broker started with more than the Debian default of 1,024 (this run:
20,000; see docs/rabbitmq.md). Their group consumer's first decile is slow because the
broker is creating the 1,000 run streams meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from typing import Any

from ._common import URLS, Row, cleanup, describe, fmt, fresh, md_table, note, unavailable

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class _Proc:
    def __init__(self, *args: str) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        root = _ROOT
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks._scale_proc",
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            cwd=root,
        )

    async def expect(self, prefix: str, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        end = time.monotonic() + timeout
        while True:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.args[0]}: nothing like {prefix!r} within {timeout:g}s")
            line = await asyncio.wait_for(self.proc.stdout.readline(), left)
            if not line:
                raise RuntimeError(f"{self.args[0]} exited (code {await self.proc.wait()})")
            text = line.decode().strip()
            if text.startswith(prefix):
                return text

    def go(self) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")

    async def result(self, timeout: float) -> dict[str, Any]:
        text = await self.expect("result ", timeout)
        assert self.proc is not None
        await asyncio.wait_for(self.proc.wait(), 30)
        return json.loads(text[len("result ") :])

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()


def _at(marks: list[list[float]], count: float) -> float:
    """The time at which ``count`` events were reached (linear between marks)."""
    prev_t, prev_c = 0.0, 0
    for t, c in marks:
        if c >= count:
            if c == prev_c:
                return t
            return prev_t + (t - prev_t) * (count - prev_c) / (c - prev_c)
        prev_t, prev_c = t, c
    return marks[-1][0]


def deciles(marks: list[list[float]]) -> list[float]:
    total = marks[-1][1]
    if total <= 0:
        return []
    out = []
    for k in range(10):
        a, b = total * k / 10, total * (k + 1) / 10
        dt = _at(marks, b) - _at(marks, a)
        out.append((b - a) / dt if dt > 0 else float("nan"))
    return out


def _side(prefix: str, result: dict[str, Any]) -> Row:
    d = deciles(result["marks"])
    total_t = result["marks"][-1][0]
    row: Row = {
        f"{prefix}_events": result["events"],
        f"{prefix}_rate": result["events"] / total_t if total_t else None,
        f"{prefix}_peak_rss_mb": result["peak_rss_mb"],
        f"{prefix}_rss_ready_mb": result["rss_ready_mb"],
    }
    if d:
        row[f"{prefix}_first"], row[f"{prefix}_last"] = d[0], d[-1]
        row[f"{prefix}_min"], row[f"{prefix}_max"] = min(d), max(d)
        row[f"{prefix}_last_over_first"] = d[-1] / d[0] if d[0] else None
        row[f"{prefix}_deciles"] = d
    return row


async def _scenario(broker: str, workload: str, size: int) -> Row:
    row: Row = {"broker": broker, "case": workload, "size": size}
    why = unavailable(broker)
    if why:
        row[why[0]] = why[1]
        return row
    ns = fresh("scale")
    url = URLS[broker]
    run_id = str(uuid.uuid4())
    if workload == "one long run":
        consumer = _Proc("follow", url, ns, run_id, str(size))
        publisher = _Proc("publish-one", url, ns, run_id, str(size))
    else:
        consumer = _Proc("consume", url, ns, str(size))
        publisher = _Proc("publish-many", url, ns, str(size), "30")
    budget = 60 + size / 2000 if workload == "one long run" else 60 + size * 0.2
    try:
        await consumer.start()
        await publisher.start()
        await consumer.expect("ready", 60)
        await publisher.expect("ready", 60)
        consumer.go()
        await asyncio.sleep(0.3)
        t0 = time.perf_counter()
        publisher.go()
        pub = await publisher.result(budget)
        con = await consumer.result(budget)
        row["wall_s"] = time.perf_counter() - t0
        row.update(_side("pub", pub))
        row.update(_side("con", con))
        row["backpressure_waits"] = pub.get("backpressure_waits")
    except Exception as exc:
        row["error"] = describe(exc)
    finally:
        consumer.kill()
        publisher.kill()
        await cleanup(broker, ns)
    return row


async def _run(quick: bool) -> list[Row]:
    brokers = ["redis", "rabbitmq"]
    one, many = (50_000, 100) if quick else (1_000_000, 1_000)
    rows = []
    for broker in brokers:
        for workload, size in (("one long run", one), ("concurrent runs", many)):
            if quick and broker == "rabbitmq":
                continue  # keeps --quick under 2 minutes; the full run has it
            rows.append(await _scenario(broker, workload, size))
    return rows


def run(quick: bool = False) -> list[Row]:
    return asyncio.run(_run(quick))


def table(results: list[Row]) -> str:
    headers = [
        "broker",
        "workload",
        "size",
        "side",
        "events",
        "events/s overall",
        "first decile /s",
        "last decile /s",
        "slowest\u2013fastest decile",
        "last/first",
        "RSS idle MB",
        "peak RSS MB",
        "note",
    ]
    lines = []
    for r in results:
        size = f"{r['size']:,} events" if r.get("case") == "one long run" else f"{r['size']:,} runs"
        sides = [
            ("pub", "publisher"),
            ("con", "follower" if r.get("case") == "one long run" else "group consumer"),
        ]
        if "pub_events" not in r:
            lines.append(
                [
                    r.get("broker", ""),
                    r.get("case", ""),
                    size,
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    note(r),
                ]
            )
            continue
        for prefix, label in sides:
            lines.append(
                [
                    r["broker"],
                    r["case"],
                    size,
                    label,
                    fmt(r.get(f"{prefix}_events")),
                    fmt(r.get(f"{prefix}_rate"), 0),
                    fmt(r.get(f"{prefix}_first"), 0),
                    fmt(r.get(f"{prefix}_last"), 0),
                    f"{fmt(r.get(f'{prefix}_min'), 0)}\u2013{fmt(r.get(f'{prefix}_max'), 0)}",
                    fmt(r.get(f"{prefix}_last_over_first"), 2),
                    fmt(r.get(f"{prefix}_rss_ready_mb"), 0),
                    fmt(r.get(f"{prefix}_peak_rss_mb"), 0),
                    note(r),
                ]
            )
    return md_table(headers, lines)
