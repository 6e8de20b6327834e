"""The ``eventbus`` command line: ``demo``, ``tail``, ``runs``, ``replay``, ``trace``.

Parsing is argparse; rendering for a person is rich (the ``cli`` extra), imported only
when something is rendered so that the JSON outputs and ``import eventbus`` work without
it. Exit codes: 0 ok; 1 the run failed, was cancelled, lost its worker or lost events;
2 bad input (URL, run id, unknown run), broker unreachable, or a missing extra; 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

import anyio
import msgspec

from . import _langchain
from ._codec import to_wire
from ._exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    EventbusError,
    InvalidResumeToken,
    RemoteRunError,
    RunCancelledError,
    RunError,
    RunNotFoundError,
    SequenceGapError,
    TransportError,
    WorkerLostError,
)
from ._publisher import Publisher
from ._subscriber import Message, Subscriber
from .transports import redact_url

if TYPE_CHECKING:
    from rich.console import Console

    from ._cli_render import RunView
    from ._demo import DemoRun

__all__ = ["aggregate_runs", "broker_hint", "build_trace", "main"]

DEFAULT_URL = "redis://localhost:6379/0"
DEMO_NAMESPACE = "demo"
AUDIT_GROUP = "demo-audit"
StreamEvent = dict[str, Any]

_json = msgspec.json.Encoder()


class CliError(Exception):
    """A clear message for the user and an exit code (no traceback)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# -- helpers -------------------------------------------------------------------------------


def _console(stderr: bool = False) -> Console:
    try:
        from rich.console import Console
    except ImportError:
        raise CliError(
            "rendering for a terminal needs rich: pip install 'eventbus[cli]' (or pass --json)"
        ) from None
    # soft_wrap: run ids and paths stay on one line (tests and people copy them); a pipe
    # gets a wide page rather than rich's 80 columns, so that tables keep their run ids
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty():
        with contextlib.suppress(ValueError):
            width = max(160, int(os.environ.get("COLUMNS", "0")))
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def _err(message: str) -> None:
    print(f"eventbus: {message}", file=sys.stderr, flush=True)


def _safe(text: str, url: str) -> str:
    """``text`` with the URL's password masked, wherever it appears."""
    text = text.replace(url, redact_url(url))
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    return text


def broker_hint(url: str, exc: BaseException) -> str:
    """One paragraph on what to do when the broker cannot be reached."""
    return _safe(
        f"cannot reach the broker at {redact_url(url)} ({exc}). Start the brokers: "
        "`docker compose up -d` in the eventbus repository (its docker-compose.yml runs "
        "Redis and RabbitMQ), or `make brokers` on Debian as root; or point --url / "
        "EVENTBUS_URL at a broker you have (redis://host:6379/0, "
        "amqp://user:password@host:5672/); or try the demo in one process with "
        "`eventbus demo --url memory://`.",
        url,
    )


def _write_json(obj: Any) -> None:
    out = sys.stdout.buffer
    out.write(_json.encode(obj))
    out.write(b"\n")
    out.flush()  # a tail is read live, line by line


def _human(args: argparse.Namespace) -> bool:
    """Render for a person: not --json, and stdout is a terminal."""
    return not getattr(args, "json", False) and sys.stdout.isatty()


def _run_key(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise CliError(f"{value!r} is not a run id (a UUID such as {uuid.uuid4()})") from None


def _check_url(url: str) -> None:
    if url.startswith("memory://"):
        raise CliError(
            "memory:// is in-process: a separate `eventbus` process sees none of its runs. "
            "Use redis:// or amqp:// (or `eventbus demo --url memory://`, which runs "
            "everything in one process)."
        )


def _subscriber(args: argparse.Namespace, *, start_timeout: float | None = None) -> Subscriber:
    _check_url(args.url)
    return Subscriber(
        args.url,
        args.namespace,
        idle_timeout=args.idle if args.idle > 0 else None,
        start_timeout=start_timeout,
    )


async def _drop_group(sub: Subscriber, group: str) -> None:
    """Best effort: remove an ephemeral consumer group, so that every `tail`/`runs` call
    does not leave one behind on the broker."""
    with contextlib.suppress(Exception), anyio.fail_after(5):
        await sub.delete_group(group)


def _wait_arg(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


# -- following one run ---------------------------------------------------------------------


async def _show_run(
    args: argparse.Namespace,
    run_id: str,
    items: AsyncIterator[tuple[str | None, StreamEvent]],
) -> int:
    """Print a followed run: rendered for a person, or one JSON object per line."""
    if not _human(args):
        try:
            async for item_id, event in items:
                wire = to_wire(event)
                _write_json({"id": item_id, "event": wire} if getattr(args, "ids", False) else wire)
        except RunError as exc:
            _err(str(exc))
            return 1
        return 0
    from ._cli_render import RunView

    with RunView(_console()) as view:
        try:
            async for _item_id, event in items:
                view.handle(event)
        except RemoteRunError as exc:
            view.failed(str(exc), exc.traceback)
            return 1
        except RunError as exc:
            view.failed(str(exc))
            return 1
        view.ended(run_id, f"  ({view.events} events)")
    return 0


async def _tail(args: argparse.Namespace) -> int:
    if args.run_id is None:
        return await _tail_namespace(args)
    run_id = _run_key(args.run_id)
    async with _subscriber(args, start_timeout=_wait_arg(args.wait)) as sub:
        # connected: from here on, a run that starts is followed from its first event (a
        # script can start the run once it reads this line)
        _err(f"following run {run_id} in namespace {args.namespace!r}")

        async def items() -> AsyncIterator[tuple[str | None, StreamEvent]]:
            async with contextlib.aclosing(
                sub.astream_events(run_id, include_types=args.types or None)
            ) as events:
                async for event in events:
                    yield None, event

        return await _show_run(args, run_id, items())


async def _tail_namespace(args: argparse.Namespace) -> int:
    ephemeral = args.group is None
    group = args.group or f"eventbus-tail-{uuid.uuid4().hex[:12]}"
    filters: dict[str, _langchain.EventFilter] = {}
    view: RunView | None = None
    async with contextlib.AsyncExitStack() as stack:
        if _human(args):
            from ._cli_render import RunView

            view = stack.enter_context(RunView(_console()))
            start = "from now on" if args.start == "new" else "from the first retained record"
            view.note(
                f"following namespace {args.namespace!r} on {redact_url(args.url)} through "
                f"group {group!r}, {start}; Ctrl-C to stop"
            )
        sub = await stack.enter_async_context(_subscriber(args))
        try:
            current: str | None = None
            consumer = f"cli-{os.getpid()}"
            async with contextlib.aclosing(
                sub.consume(group, consumer, start=args.start)
            ) as messages:
                async for msg in messages:
                    event = msg.event
                    if event is not None and args.types:
                        keep = filters.setdefault(
                            msg.run_id, _langchain.EventFilter(include_types=args.types)
                        )
                        event = keep(event)
                        if event is None:
                            await msg.ack()
                            continue
                    if view is None:
                        _write_json(_message_json(msg, event))
                    else:
                        if msg.run_id != current:
                            current = msg.run_id
                            view.note(f"── run {msg.run_id}", style="bold blue")
                        _render_message(view, msg, event)
                    await msg.ack()
        finally:
            if ephemeral:
                await _drop_group(sub, group)
    return 0


def _message_json(msg: Message, event: StreamEvent | None) -> dict[str, Any]:
    out: dict[str, Any] = {"run_id": msg.run_id, "seq": msg.seq, "kind": msg.kind}
    if event is not None:
        out["event"] = to_wire(event)
    if msg.error is not None:
        out["error"] = str(msg.error)
    return out


def _render_message(view: RunView, msg: Message, event: StreamEvent | None) -> None:
    if event is not None:
        view.handle(event)
    elif msg.kind == "end":
        view.ended(msg.run_id)
    elif isinstance(msg.error, RemoteRunError):
        view.failed(str(msg.error), msg.error.traceback)
    else:
        view.failed(str(msg.error))


async def _replay(args: argparse.Namespace) -> int:
    run_id = _run_key(args.run_id)
    async with _subscriber(args, start_timeout=_wait_arg(args.wait)) as sub:

        async def items() -> AsyncIterator[tuple[str | None, StreamEvent]]:
            async with contextlib.aclosing(sub.follow(run_id, after=args.after)) as follow:
                async for item in follow:
                    yield item.id, item.event

        return await _show_run(args, run_id, items())


# -- trace -----------------------------------------------------------------------------------


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


async def _trace(args: argparse.Namespace) -> int:
    run_id = _run_key(args.run_id)
    items: list[tuple[float, StreamEvent]] = []
    status, error = "done", None
    async with _subscriber(args, start_timeout=_wait_arg(args.wait)) as sub:
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
    trace = build_trace(run_id, items, status, error)
    if args.json:
        _write_json(trace)
    else:
        from ._cli_render import trace_tree

        _console().print(trace_tree(trace))
    if error is not None:
        _err(error)
        return 1
    return 0


# -- runs ------------------------------------------------------------------------------------


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


async def _read_group(
    sub: Subscriber, group: str, *, first_wait: float, settle: float, limit: int
) -> list[tuple[str, str, int, float, StreamEvent | None, str | None]]:
    """Read a new group from the first retained record until it has been quiet for
    ``settle`` seconds (``first_wait`` for the first record) or ``limit`` records."""
    out: list[tuple[str, str, int, float, StreamEvent | None, str | None]] = []
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


async def _runs(args: argparse.Namespace) -> int:
    group = f"eventbus-runs-{uuid.uuid4().hex[:12]}"
    async with _subscriber(args) as sub:
        try:
            records = await _read_group(
                sub, group, first_wait=args.wait, settle=args.settle, limit=args.max_records
            )
        finally:
            await _drop_group(sub, group)
    runs = aggregate_runs(records, now=time.time(), idle=args.idle)[: args.limit]
    if args.json:
        for run in runs:
            _write_json(run)
        return 0
    from ._cli_render import runs_table

    console = _console()
    if not runs:
        console.print(f"no runs in namespace {args.namespace!r} on {redact_url(args.url)}")
        return 0
    title = (
        f"runs in namespace {args.namespace!r} on {redact_url(args.url)} "
        f"({len(records)} records read)"
    )
    console.print(runs_table(runs, title))
    return 0


# -- demo ------------------------------------------------------------------------------------


async def _check_broker(url: str, namespace: str) -> None:
    async with Publisher(url, namespace):
        pass


def _demo(args: argparse.Namespace) -> int:
    from ._demo import demo_runs

    console = _console()
    # bad URL (ConfigurationError) and unreachable broker (ConnectError) end here, in main
    asyncio.run(_check_broker(args.url, args.namespace))
    runs = demo_runs([str(_langchain.new_run_id()) for _ in range(2)])
    workdir = Path(tempfile.mkdtemp(prefix="eventbus-demo-"))
    audit_log = workdir / "audit.jsonl"
    where = f"{redact_url(args.url)}, namespace {args.namespace!r}"
    if args.url.startswith("memory://"):
        console.print(
            f"eventbus demo on {where}\n"
            "memory:// is in-process: the worker and both subscribers run as asyncio tasks "
            "of this one process (use redis:// or amqp:// to see them as separate processes)."
        )
        published, live, audit = asyncio.run(
            asyncio.wait_for(_demo_in_process(args, runs, audit_log, console), args.timeout)
        )
        codes = {"worker": 0, "live view": 0, "audit": 0}
    else:
        console.print(
            f"eventbus demo on {where}: a worker process publishes 2 runs (a LangGraph graph, "
            "then a LangChain chain); a live-view process follows them; an audit process "
            f"consumes them through consumer group {AUDIT_GROUP!r}.\n"
        )
        published, live, audit, codes = _demo_processes(args, runs, workdir, audit_log)
    ok = _demo_summary(console, runs, published, live, audit, codes, audit_log)
    return 0 if ok else 1


def _demo_processes(
    args: argparse.Namespace, runs: list[DemoRun], workdir: Path, audit_log: Path
) -> tuple[dict[str, int], dict[str, list[int]], dict[str, list[int]], dict[str, int]]:
    common = ["--url", args.url, "--namespace", args.namespace]
    run_ids = [r.run_id for r in runs]
    reports = {name: workdir / f"{name}.json" for name in ("worker", "live", "audit")}

    def spawn(command: str, *extra: str, quiet: bool = False) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, "-m", "eventbus", command, *common, *extra, *run_ids]
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL if quiet else None)

    sys.stdout.flush()  # the live view writes to the same stdout from now on
    # The subscribers start first, but nothing depends on it: following a run replays it
    # from its first event, and the audit group reads from the first retained record.
    audit = spawn(
        "_demo-audit", "--log", str(audit_log), "--report", str(reports["audit"]), quiet=True
    )
    live = spawn("_demo-live", "--report", str(reports["live"]))
    worker = spawn("_demo-worker", "--report", str(reports["worker"]), quiet=True)
    procs = {"worker": worker, "live view": live, "audit": audit}
    codes: dict[str, int] = {}
    pids = ", ".join(f"{name} {proc.pid}" for name, proc in procs.items())
    print(f"processes: {pids}", file=sys.stderr, flush=True)
    try:
        for name, proc in procs.items():
            try:
                codes[name] = proc.wait(timeout=args.timeout)
            except subprocess.TimeoutExpired:
                codes[name] = -1
            if codes[name] != 0 and name == "worker":
                # nothing more will be published: do not let the subscribers wait it out
                for other in (live, audit):
                    other.terminate()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)

    def load(path: Path) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], msgspec.json.decode(path.read_bytes()))
        except (OSError, msgspec.DecodeError):
            return {}

    return load(reports["worker"]), load(reports["live"]), load(reports["audit"]), codes


async def _demo_in_process(
    args: argparse.Namespace, runs: list[DemoRun], audit_log: Path, console: Console
) -> tuple[dict[str, int], dict[str, list[int]], dict[str, list[int]]]:
    from ._demo import run_worker

    run_ids = [r.run_id for r in runs]
    async with Subscriber(args.url, args.namespace, start_timeout=30) as sub:
        live_task = asyncio.create_task(_live_view(sub, runs, console))
        audit_task = asyncio.create_task(_audit(sub, run_ids, audit_log))
        await run_worker(args.url, args.namespace, runs)
        live, audit = await asyncio.gather(live_task, audit_task)
    return {r.run_id: r.events for r in runs}, live, audit


async def _live_view(
    sub: Subscriber, runs: list[DemoRun], console: Console
) -> dict[str, list[int]]:
    """Follow each run in turn (a follower replays from the first event, so following the
    second run after the first ended loses nothing), rendered like ``eventbus tail``."""
    from ._cli_render import RunView

    seqs: dict[str, list[int]] = {}
    for run in runs:
        got = seqs[run.run_id] = []
        console.print(f"── live view: run {run.run_id} ({run.kind})", style="bold blue")
        with RunView(console) as view:
            try:
                async with contextlib.aclosing(sub.follow(run.run_id)) as follow:
                    async for item in follow:
                        got.append(int(item.id.split(":", 1)[0]))
                        view.handle(item.event)
            except RunError as exc:
                view.failed(str(exc))
                continue
            view.ended(run.run_id, f"  ({len(got)} events)")
    return seqs


async def _audit(sub: Subscriber, run_ids: list[str], log: Path) -> dict[str, list[int]]:
    """Consume the namespace through the audit group until every demo run has ended,
    appending each record of the demo's runs to a JSON-lines log. Records of other runs
    (an earlier demo's, left unacked) are acked and skipped."""
    seqs: dict[str, list[int]] = {rid: [] for rid in run_ids}
    open_runs = set(run_ids)
    consumer = f"audit-{os.getpid()}"
    with log.open("ab") as out:
        async with contextlib.aclosing(sub.consume(AUDIT_GROUP, consumer, start="first")) as msgs:
            async for msg in msgs:
                if msg.run_id in seqs:
                    seqs[msg.run_id].append(msg.seq)
                    line = _message_json(msg, msg.event)
                    line["ts"] = msg.ts
                    out.write(_json.encode(line) + b"\n")
                    if msg.kind != "event":
                        open_runs.discard(msg.run_id)
                await msg.ack()
                if not open_runs:
                    break
    return seqs


def _check_seqs(seqs: list[int], expected: int) -> tuple[bool, str]:
    distinct = sorted(set(seqs))
    dupes = len(seqs) - len(distinct)
    if distinct == list(range(1, expected + 1)):
        note = f", {dupes} redelivered" if dupes else ""
        return True, f"seq 1-{expected} complete{note}"
    missing = sorted(set(range(1, expected + 1)) - set(distinct))
    return False, f"missing seq {missing[:10]}{'…' if len(missing) > 10 else ''}"


def _demo_summary(
    console: Console,
    runs: list[DemoRun],
    published: dict[str, int],
    live: dict[str, list[int]],
    audit: dict[str, list[int]],
    codes: dict[str, int],
    audit_log: Path,
) -> bool:
    ok = all(code == 0 for code in codes.values())
    console.print()
    console.print("summary (fan-out: every consumer must have every record)", style="bold")
    for run in runs:
        n = published.get(run.run_id)
        if not isinstance(n, int):
            console.print(f"  run {run.run_id} ({run.kind}): not published", style="red")
            ok = False
            continue
        console.print(
            f"  run {run.run_id} ({run.kind}): published {n} events (seq 1-{n}) + end (seq {n + 1})"
        )
        live_ok, live_note = _check_seqs(live.get(run.run_id, []), n)
        audit_ok, audit_note = _check_seqs(audit.get(run.run_id, []), n + 1)
        mark = {True: "[green]none lost[/]", False: "[bold red]LOST EVENTS[/]"}
        console.print(
            f"    live view    received {len(live.get(run.run_id, []))} events, {live_note}: "
            f"{mark[live_ok]}"
        )
        console.print(
            f"    audit group  received {len(audit.get(run.run_id, []))} records, {audit_note}: "
            f"{mark[audit_ok]}"
        )
        ok = ok and live_ok and audit_ok
    lines = 0
    with contextlib.suppress(OSError):
        lines = len(audit_log.read_bytes().splitlines())
    console.print(f"  audit log    {audit_log} ({lines} lines)", soft_wrap=True)
    if any(code != 0 for code in codes.values()):
        console.print(
            "  exit codes   " + ", ".join(f"{k}={v}" for k, v in codes.items()), style="red"
        )
    console.print(
        "demo OK: every published event reached both consumers, in order, none lost"
        if ok
        else "demo FAILED: see above",
        style="bold green" if ok else "bold red",
    )
    return ok


# the demo's hidden subcommands (each runs in its own process)


def _demo_worker(args: argparse.Namespace) -> int:
    from ._demo import demo_runs, run_worker

    runs = demo_runs(args.run_ids)
    asyncio.run(run_worker(args.url, args.namespace, runs))
    Path(args.report).write_bytes(_json.encode({r.run_id: r.events for r in runs}))
    return 0


def _demo_live(args: argparse.Namespace) -> int:
    from ._demo import demo_runs

    async def go() -> dict[str, list[int]]:
        async with Subscriber(args.url, args.namespace, start_timeout=args.timeout) as sub:
            with anyio.fail_after(args.timeout):
                return await _live_view(sub, demo_runs(args.run_ids), _console())

    Path(args.report).write_bytes(_json.encode(asyncio.run(go())))
    return 0


def _demo_audit(args: argparse.Namespace) -> int:
    async def go() -> dict[str, list[int]]:
        async with Subscriber(args.url, args.namespace) as sub:
            with anyio.fail_after(args.timeout):
                return await _audit(sub, args.run_ids, Path(args.log))

    Path(args.report).write_bytes(_json.encode(asyncio.run(go())))
    return 0


# -- parsing -----------------------------------------------------------------------------------

_EPILOG_MAIN = """\
commands:
  demo     the main job in one command: a worker process publishes a LangGraph graph and a
           LangChain chain, a live view and an audit consumer group receive every event
  tail     follow one run live (or the whole namespace through a consumer group)
  runs     recent runs of the namespace, with status, start, duration, event count
  replay   print a run again from the broker
  trace    the run tree of a run: names, types, durations, tokens, errors

examples:
  eventbus demo                                 # needs Redis on localhost (or --url)
  eventbus demo --url memory://                 # no broker: everything in one process
  eventbus tail 0192f0c6-8f0e-7a51-b1b2-000000000001
  eventbus runs --namespace myapp

environment: EVENTBUS_URL (default redis://localhost:6379/0), EVENTBUS_NAMESPACE
(default "default"). Exit codes: 0 ok, 1 the run failed / was cancelled / lost its worker,
2 bad input or broker unreachable, 130 interrupted.
"""


def _common(default_namespace: str | None) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("broker")
    url = os.environ.get("EVENTBUS_URL") or DEFAULT_URL
    # the help shows the redacted default: EVENTBUS_URL may hold a password
    group.add_argument(
        "--url",
        default=url,
        help=f"broker URL (env EVENTBUS_URL; now {redact_url(url)})",
    )
    namespace = default_namespace or os.environ.get("EVENTBUS_NAMESPACE") or "default"
    group.add_argument(
        "--namespace",
        "-n",
        default=namespace,
        help=f"namespace (default: {namespace}"
        + ("" if default_namespace else ", env EVENTBUS_NAMESPACE")
        + ")",
    )
    return parent


def _follow_options(parser: argparse.ArgumentParser, wait: float) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=wait,
        metavar="SECONDS",
        help=f"how long to wait for a run that has not started (default {wait:g}; 0: forever)",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a run silent this long (no event, no heartbeat) has lost its worker (default 30)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventbus",
        description="Stream LangChain / LangGraph astream_events across processes.",
        epilog=_EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"eventbus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common(None)
    raw = argparse.RawDescriptionHelpFormatter

    demo = sub.add_parser(
        "demo",
        parents=[_common(DEMO_NAMESPACE)],
        formatter_class=raw,
        help="the main job: a worker process publishes, a live view and an audit group receive",
        description="The main job in one command. A worker process runs a LangGraph graph "
        "(progress via get_stream_writer(), a tool call, streamed tokens) and a LangChain "
        "chain (progress via adispatch_custom_event, streamed tokens) with a fake streaming "
        "chat model and publishes every event; a live-view process renders the runs as "
        "they happen; an audit process consumes them through a consumer group into a "
        "JSON-lines file. A summary then compares what each consumer received with what "
        "was published.",
        epilog="examples:\n"
        "  eventbus demo                               # Redis on localhost\n"
        "  eventbus demo --url amqp://guest:guest@localhost:5672/\n"
        "  eventbus demo --url memory://               # no broker: one process, tasks\n",
    )
    demo.add_argument("--timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    demo.set_defaults(handler=_demo)

    tail = sub.add_parser(
        "tail",
        parents=[common],
        formatter_class=raw,
        help="follow one run live, or the whole namespace",
        description="Follow RUN_ID from its first event until it ends (it may not have "
        "started yet). Without RUN_ID, follow every run of the namespace through a "
        "consumer group (--group; default: a throw-away group that sees records from now "
        "on). In a terminal: tokens as text, progress bars, the run tree; with --json or "
        "when stdout is not a terminal: one JSON object per line (typed values as "
        '{"$t": ..., "v": ...} nodes, see docs/wire-format.md).',
        epilog="examples:\n"
        "  eventbus tail 0192f0c6-8f0e-7a51-b1b2-000000000001\n"
        "  eventbus tail 0192f0c6-8f0e-7a51-b1b2-000000000001 --types chat_model --json\n"
        "  eventbus tail --group dashboards             # every run, a durable group\n",
    )
    tail.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the root run id (a UUID)")
    tail.add_argument("--group", help="consumer group for following the whole namespace")
    tail.add_argument(
        "--start",
        choices=("new", "first"),
        default="new",
        help="where a new group begins (default: new records only)",
    )
    tail.add_argument(
        "--types",
        nargs="+",
        action="extend",
        metavar="TYPE",
        help="only these run types (chat_model, chain, tool, ...), as include_types",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    _follow_options(tail, 30.0)
    tail.set_defaults(handler=_asyncio(_tail))

    runs = sub.add_parser(
        "runs",
        parents=[common],
        formatter_class=raw,
        help="recent runs with status, start, duration, event count",
        description="Recent runs of the namespace: status (running, done, failed, "
        "cancelled, abandoned), start time, duration and event count. Read from the "
        "namespace's group stream through a throw-away consumer group, from the first "
        "record still retained until nothing arrives for --settle seconds: so it lists "
        "only what the broker still retains (Redis: maxlen frames; RabbitMQ: the log's "
        "retention) and a run whose first records were trimmed is marked partial. "
        "'abandoned': no end record and nothing for --idle seconds (heartbeats do not "
        "reach groups, so a run silent that long looks abandoned).",
        epilog="examples:\n  eventbus runs\n  eventbus runs --namespace myapp --json\n",
    )
    runs.add_argument("--json", action="store_true", help="one JSON object per run")
    runs.add_argument("--limit", type=int, default=20, help="show this many runs (default 20)")
    runs.add_argument(
        "--wait",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="wait this long for the first record (default 3)",
    )
    runs.add_argument(
        "--settle",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="stop reading after this long without a record (default 0.5)",
    )
    runs.add_argument(
        "--max-records",
        type=int,
        default=100_000,
        metavar="N",
        help="stop reading after N records (default 100000)",
    )
    runs.add_argument(
        "--idle",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="an unfinished run silent this long is abandoned (default 30)",
    )
    runs.set_defaults(handler=_asyncio(_runs))

    replay = sub.add_parser(
        "replay",
        parents=[common],
        formatter_class=raw,
        help="print a run again from the broker",
        description="Print RUN_ID again from its first event (or after --after, an id "
        "printed by --json --ids), as tail does.",
        epilog="examples:\n"
        "  eventbus replay 0192f0c6-8f0e-7a51-b1b2-000000000001\n"
        "  eventbus replay 0192f0c6-8f0e-7a51-b1b2-000000000001 --json --ids\n"
        "  eventbus replay 0192f0c6-8f0e-7a51-b1b2-000000000001 --after 12:1716299999123-0\n",
    )
    replay.add_argument("run_id", metavar="RUN_ID")
    replay.add_argument("--after", metavar="ID", help="resume after this event id")
    replay.add_argument("--json", action="store_true", help="one JSON object per line")
    replay.add_argument(
        "--ids", action="store_true", help='with --json: {"id": ..., "event": ...} per line'
    )
    _follow_options(replay, 5.0)
    replay.set_defaults(handler=_asyncio(_replay))

    trace = sub.add_parser(
        "trace",
        parents=[common],
        formatter_class=raw,
        help="the run tree: names, types, durations, tokens, errors",
        description="The run tree of RUN_ID, aggregated from its events: each runnable's "
        "name and type, duration (between its start and end events, on the worker's "
        "clock), streamed token chunks and errors. Waits for the run to end.",
        epilog="examples:\n"
        "  eventbus trace 0192f0c6-8f0e-7a51-b1b2-000000000001\n"
        "  eventbus trace 0192f0c6-8f0e-7a51-b1b2-000000000001 --json\n",
    )
    trace.add_argument("run_id", metavar="RUN_ID")
    trace.add_argument("--json", action="store_true", help="the tree as one JSON object")
    _follow_options(trace, 5.0)
    trace.set_defaults(handler=_asyncio(_trace))

    # hidden: the demo's processes
    for name, handler in (
        ("_demo-worker", _demo_worker),
        ("_demo-live", _demo_live),
        ("_demo-audit", _demo_audit),
    ):
        hidden = sub.add_parser(name, parents=[_common(DEMO_NAMESPACE)])
        hidden.add_argument("run_ids", nargs="+")
        hidden.add_argument("--report", required=True)
        hidden.add_argument("--log")
        hidden.add_argument("--timeout", type=float, default=120.0)
        hidden.set_defaults(handler=handler)
    return parser


def _asyncio(
    fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(fn(args))

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """The ``eventbus`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    url = str(getattr(args, "url", ""))
    # the CLI reports broker trouble itself, in one paragraph: aiormq would also log each
    # failed connection attempt to stderr
    for name in ("aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`eventbus tail --json | head`): not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CliError as exc:
        _err(_safe(str(exc), url))
        return exc.code
    except (ConfigurationError, InvalidResumeToken) as exc:
        _err(_safe(str(exc), url))
        return 2
    except ConnectError as exc:
        _err(broker_hint(url, exc))
        return 2
    except AuthenticationError as exc:
        _err(_safe(f"{exc} (check the user and password in --url / EVENTBUS_URL)", url))
        return 2
    except RunNotFoundError as exc:
        _err(_safe(f"run not found: {exc}", url))
        return 2
    except TimeoutError:
        _err("timed out")
        return 1
    except (RunError, SequenceGapError) as exc:
        _err(_safe(str(exc), url))
        return 1
    except TransportError as exc:
        _err(_safe(f"broker error: {exc}", url))
        return 2
    except EventbusError as exc:
        _err(_safe(str(exc), url))
        return 1
