"""Run and trace aggregation: what ``eventbus runs`` and ``eventbus trace`` show, as plain
data, for the command line and any other front end (an HTTP gateway) alike.

* :func:`list_runs` reads a namespace through an ephemeral consumer group and aggregates
  its records per run (:func:`aggregate_runs`);
* :func:`trace_run` follows one run and builds its run tree (:func:`build_trace`).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import Any

import anyio

from ._exceptions import RemoteRunError, RunCancelledError, SequenceGapError, WorkerLostError
from ._subscriber import Subscriber

__all__ = [
    "aggregate_runs",
    "build_trace",
    "drop_group",
    "list_runs",
    "read_group",
    "trace_run",
]

StreamEvent = dict[str, Any]
Record = tuple[str, str, int, float, StreamEvent | None, str | None]


def build_trace(
    run_id: str,
    items: Sequence[tuple[float, StreamEvent]],
    status: str = "done",
    error: str | None = None,
) -> dict[str, Any]:
    """The run tree of a run's events ``(ts, event)``, as plain data.

    Each node: ``run_id``, ``name``, ``run_type`` (from ``on_<type>_start``),
    ``parent_id``, ``start``/``end`` (the worker's clock when the events were emitted),
    ``duration``, ``tokens`` (``on_chat_model_stream``/``on_llm_stream`` chunks),
    ``custom_events``, ``events``, ``error``, ``ended``, ``children``.
    """
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    tokens = 0
    for ts, event in items:
        kind = str(event.get("event", ""))
        rid = str(event.get("run_id", ""))
        parents = event.get("parent_ids") or []
        node = nodes.get(rid)
        if node is None:
            node = nodes[rid] = {
                "run_id": rid,
                "name": str(event.get("name", "")),
                "run_type": "?",
                "parent_id": str(parents[-1]) if parents else None,
                "start": ts,
                "end": None,
                "duration": None,
                "tokens": 0,
                "custom_events": 0,
                "events": 0,
                "error": None,
                "ended": False,
                "children": [],
            }
            parent = nodes.get(node["parent_id"]) if node["parent_id"] else None
            (parent["children"] if parent is not None else roots).append(node)
        node["events"] += 1
        if kind.startswith("on_") and kind.endswith("_start"):
            node["run_type"] = kind[3:-6]
            node["name"] = str(event.get("name", ""))
        elif kind in ("on_chat_model_stream", "on_llm_stream"):
            node["tokens"] += 1
            tokens += 1
        elif kind == "on_custom_event":
            node["custom_events"] += 1
        elif kind.endswith(("_end", "_error")):
            node["end"] = ts
            node["duration"] = max(0.0, ts - node["start"]) if ts and node["start"] else None
            node["ended"] = True
            if kind.endswith("_error"):
                data = event.get("data") or {}
                node["error"] = repr(data.get("error")) if isinstance(data, dict) else "error"
    started = items[0][0] if items else None
    ended = items[-1][0] if items else None
    return {
        "run_id": run_id,
        "status": status,
        "error": error,
        "events": len(items),
        "tokens": tokens,
        "started": started,
        "ended": ended,
        "duration": (ended - started) if started and ended else None,
        "tree": roots,
    }


async def trace_run(sub: Subscriber, run_id: str) -> dict[str, Any]:
    """Follow run ``run_id`` to its end and return its :func:`build_trace`; a run that
    failed, was cancelled, lost its worker or events gets that ``status`` and ``error``.

    Raises:
        RunNotFoundError: the run did not start within the subscriber's ``start_timeout``.
        TransportError: the broker could not be used.
    """
    items: list[tuple[float, StreamEvent]] = []
    status, error = "done", None
    try:
        async with contextlib.aclosing(sub.follow(run_id)) as follow:
            async for item in follow:
                items.append((item.ts, item.event))
    except RemoteRunError as exc:
        status, error = "failed", str(exc)
    except RunCancelledError as exc:
        status, error = "cancelled", str(exc)
    except WorkerLostError as exc:
        status, error = "lost", str(exc)
    except SequenceGapError as exc:
        status, error = "gap", str(exc)
    return build_trace(run_id, items, status, error)


def aggregate_runs(
    messages: Sequence[tuple[str, str, int, float, StreamEvent | None, str | None]],
    *,
    now: float,
    idle: float,
) -> list[dict[str, Any]]:
    """Per run, from group records ``(kind, run_id, seq, ts, event, error)`` in the order
    they were read: status, name, start, duration, event count. Newest first.

    ``abandoned``: no terminal record and the last record older than ``idle`` seconds.
    ``partial``: the first retained record is not the run's first (trimmed by retention).
    """
    runs: dict[str, dict[str, Any]] = {}
    seen: set[tuple[str, int]] = set()
    for kind, run_id, seq, ts, event, error in messages:
        if (run_id, seq) in seen:  # redelivered (at-least-once)
            continue
        seen.add((run_id, seq))
        run = runs.get(run_id)
        if run is None:
            run = runs[run_id] = {
                "run_id": run_id,
                "name": None,
                "status": "running",
                "started": ts,
                "last": ts,
                "duration": None,
                "events": 0,
                "partial": seq > 1,
                "error": None,
            }
        run["started"] = min(run["started"], ts)
        run["last"] = max(run["last"], ts)
        if kind == "event":
            run["events"] += 1
            if (
                run["name"] is None
                and event is not None
                and event.get("run_id") == run_id
                and str(event.get("event", "")).endswith("_start")
            ):
                run["name"] = event.get("name")
        else:
            run["status"] = {"end": "done", "error": "failed"}.get(kind, "cancelled")
            run["error"] = error
    for run in runs.values():
        if run["status"] == "running" and now - run["last"] > idle:
            run["status"] = "abandoned"
        run["duration"] = run["last"] - run["started"]
    return sorted(runs.values(), key=lambda r: r["started"], reverse=True)


async def read_group(
    sub: Subscriber, group: str, *, first_wait: float, settle: float, limit: int
) -> list[Record]:
    """Read a new group from the first retained record until it has been quiet for
    ``settle`` seconds (``first_wait`` for the first record) or ``limit`` records."""
    out: list[Record] = []
    messages = sub.consume(group, "cli", start="first")
    try:
        while len(out) < limit:
            try:
                with anyio.fail_after(first_wait if not out else settle):
                    msg = await messages.__anext__()
            except (TimeoutError, StopAsyncIteration):
                break
            out.append(
                (
                    msg.kind,
                    msg.run_id,
                    msg.seq,
                    msg.ts,
                    msg.event,
                    None if msg.error is None else str(msg.error),
                )
            )
            await msg.ack()
    finally:
        with contextlib.suppress(Exception):
            await messages.aclose()
    return out


async def drop_group(sub: Subscriber, group: str) -> None:
    """Best effort: remove an ephemeral consumer group, so that every read of a namespace
    does not leave one behind on the broker."""
    with contextlib.suppress(Exception), anyio.fail_after(5):
        await sub.delete_group(group)


async def list_runs(
    sub: Subscriber,
    *,
    first_wait: float,
    settle: float,
    max_records: int,
    idle: float,
    now: float | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The runs of the subscriber's namespace (newest first, see :func:`aggregate_runs`)
    and how many records were read, through an ephemeral group (see :func:`read_group`),
    deleted afterwards.

    Raises:
        TransportError: the broker could not be used.
    """
    group = f"eventbus-runs-{uuid.uuid4().hex[:12]}"
    try:
        records = await read_group(
            sub, group, first_wait=first_wait, settle=settle, limit=max_records
        )
    finally:
        await drop_group(sub, group)
    runs = aggregate_runs(records, now=time.time() if now is None else now, idle=idle)
    return runs, len(records)
