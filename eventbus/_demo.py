"""The runnables ``eventbus demo`` runs, and its worker.

They live in the package (not in ``examples/``) so that the demo works from an installed
wheel. A fake streaming chat model stands in for a provider: no API key, no network.
The harness of ``eventbus demo`` is here too: :func:`demo`, and :func:`demo_worker`,
:func:`demo_live` and :func:`demo_audit`, which run in the processes it starts. Two runs are
published, to show both ways LangChain code reports progress:

* ``graph``: a LangGraph graph whose ``gather`` node reports progress with
  ``get_stream_writer()`` and calls a tool, and whose ``write`` node streams tokens;
* ``chain``: prompt | chat model | parser behind a ``RunnableLambda`` that reports
  progress with ``adispatch_custom_event("progress", ...)``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

import anyio
import msgspec
from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import tool

from . import _langchain
from ._cli_base import console as _console
from ._cli_follow import _message_json
from ._exceptions import RunError
from ._publisher import Publisher
from ._subscriber import Subscriber
from .transports import redact_url

if TYPE_CHECKING:
    from rich.console import Console

_json_encode = msgspec.json.Encoder().encode

__all__ = [
    "ANSWER",
    "AUDIT_GROUP",
    "DemoRun",
    "chat_chain",
    "demo",
    "demo_audit",
    "demo_live",
    "demo_runs",
    "demo_worker",
    "research_graph",
    "run_worker",
]

AUDIT_GROUP = "demo-audit"

RunKind = Literal["graph", "chain"]

ANSWER = (
    "Bees communicate through a waggle dance that encodes the direction and distance "
    "of flowers relative to the sun."
)
CHAIN_ANSWER = "Ants leave pheromone trails that their nest mates follow to food."

# A short pause between progress steps, so that a person watching `eventbus demo` in a
# terminal sees the bars move; it is not used for any synchronisation.
STEP_PAUSE = 0.08


@tool
def search_notes(topic: str) -> str:
    """Look up field notes on a topic."""
    return f"3 field notes on {topic}"


class GraphState(TypedDict):
    topic: str
    notes: list[str]
    answer: str


def research_graph(steps: int = 5, pause: float = STEP_PAUSE) -> Any:
    """A LangGraph graph: progress through ``get_stream_writer()``, a tool call, tokens."""
    from langgraph.config import get_stream_writer
    from langgraph.graph import END, START, StateGraph

    model = GenericFakeChatModel(messages=iter([AIMessage(content=ANSWER)]), name="writer-model")

    async def gather(state: GraphState, config: RunnableConfig) -> dict[str, Any]:
        writer = get_stream_writer()
        found = await search_notes.ainvoke({"topic": state["topic"]}, config)
        notes = [found]
        for i in range(1, steps + 1):
            notes.append(f"note {i} on {state['topic']}")
            writer({"type": "progress", "current": i, "total": steps, "status": f"note {i}"})
            await asyncio.sleep(pause)
        return {"notes": notes}

    async def write(state: GraphState, config: RunnableConfig) -> dict[str, Any]:
        # config passed on explicitly: Python 3.10 has no contextvars in asyncio tasks'
        # callbacks for LangChain to find the parent run by itself
        message = await model.ainvoke(f"Write about {state['topic']} from {state['notes']}", config)
        return {"answer": message.content}

    graph = StateGraph(GraphState)
    graph.add_node("gather", gather)
    graph.add_node("write", write)
    graph.add_edge(START, "gather")
    graph.add_edge("gather", "write")
    graph.add_edge("write", END)
    return graph.compile(name="research_graph")


def chat_chain(
    answer: str = CHAIN_ANSWER, steps: int = 3, pause: float = STEP_PAUSE
) -> Runnable[Any, str]:
    """prompt | streaming chat model | parser, with custom progress events before it."""
    model = GenericFakeChatModel(messages=iter([AIMessage(content=answer)]), name="chat-model")
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{q}")])

    async def research(inputs: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        for i in range(1, steps + 1):
            await adispatch_custom_event(
                "progress",
                {
                    "type": "progress",
                    "current": i,
                    "total": steps,
                    "status": f"reading source {i}",
                },
                config=config,
            )
            await asyncio.sleep(pause)
        return inputs

    return (
        RunnableLambda(research, name="research") | prompt | model | StrOutputParser()
    ).with_config(run_name="ask_chain")


@dataclass
class DemoRun:
    """One run the demo worker publishes, and what publishing it produced."""

    run_id: str
    kind: RunKind
    events: int = 0  # events published for this run
    output: Any = None


def demo_runs(run_ids: list[str]) -> list[DemoRun]:
    """The demo's runs, in the order the worker runs them (graph first, then chain)."""
    kinds: list[RunKind] = ["graph", "chain"]
    return [DemoRun(run_id, kind) for run_id, kind in zip(run_ids, kinds, strict=True)]


async def run_worker(url: str, namespace: str, runs: list[DemoRun]) -> None:
    """Publish every demo run, one after the other, recording what was published."""
    async with Publisher(url, namespace) as pub:
        for run in runs:
            before = pub.stats.events
            if run.kind == "graph":
                run.output = await pub.run(
                    research_graph(),
                    {"topic": "bees", "notes": [], "answer": ""},
                    config={"run_id": uuid.UUID(run.run_id)},
                    stream_mode=["updates", "custom"],
                )
            else:
                run.output = await pub.run(
                    chat_chain(),
                    {"q": "How do ants find food?"},
                    config={"run_id": uuid.UUID(run.run_id)},
                )
            run.events = pub.stats.events - before


# -- the demo harness ---------------------------------------------------------------------


async def _check_broker(url: str, namespace: str) -> None:
    async with Publisher(url, namespace):
        pass


def demo(args: argparse.Namespace) -> int:
    """``eventbus demo``: a worker, a live view and an audit group; 0 when nothing was lost."""
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
                    out.write(_json_encode(line) + b"\n")
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


def demo_worker(args: argparse.Namespace) -> int:
    runs = demo_runs(args.run_ids)
    asyncio.run(run_worker(args.url, args.namespace, runs))
    Path(args.report).write_bytes(_json_encode({r.run_id: r.events for r in runs}))
    return 0


def demo_live(args: argparse.Namespace) -> int:
    async def go() -> dict[str, list[int]]:
        async with Subscriber(args.url, args.namespace, start_timeout=args.timeout) as sub:
            with anyio.fail_after(args.timeout):
                return await _live_view(sub, demo_runs(args.run_ids), _console())

    Path(args.report).write_bytes(_json_encode(asyncio.run(go())))
    return 0


def demo_audit(args: argparse.Namespace) -> int:
    async def go() -> dict[str, list[int]]:
        async with Subscriber(args.url, args.namespace) as sub:
            try:
                with anyio.fail_after(args.timeout):
                    return await _audit(sub, args.run_ids, Path(args.log))
            finally:
                # the demo's group goes with the demo: left behind in a namespace others
                # use, it would hold (RabbitMQ: queue) every later frame for good
                with contextlib.suppress(Exception), anyio.fail_after(10):
                    await sub.delete_group(AUDIT_GROUP)

    Path(args.report).write_bytes(_json_encode(asyncio.run(go())))
    return 0
