"""Shared helpers of the benchmark scenarios: brokers, statistics, tables, fake models.

Conventions every scenario follows:

* a *case* is one thing measured (eventbus to Redis, raw XADD, ...); repetitions of all
  cases of a scenario are **interleaved** (rep 1 of every case, then rep 2, ...), in a
  rotating order, so that a noisy neighbour on the shared machine hits them all alike;
* a row reports the **median** over repetitions and the **spread** (min-max);
* a case that fails (broker down, a bug) becomes a row with ``error`` set and the suite
  goes on; a case that cannot run here (RabbitMQ transport not importable, a tool not
  on PATH) becomes a row with ``skipped`` set;
* everything created on a broker is under a fresh name and deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import socket
import statistics
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

REDIS_URL = os.environ.get("EVENTBUS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
AMQP_URL = os.environ.get("EVENTBUS_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
URLS = {"memory": "memory://bench", "redis": REDIS_URL, "rabbitmq": AMQP_URL}

Row = dict[str, Any]


# -- brokers ---------------------------------------------------------------------------


def reachable(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme == "memory":
        return True
    port = parts.port or {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671}.get(
        parts.scheme, 0
    )
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def unavailable(broker: str) -> tuple[str, str] | None:
    """Why ``broker`` cannot be benchmarked here: ("skipped" | "error", message), or None.

    A transport that is not importable (the RabbitMQ transport is being finished) is a
    skip; a broker that does not answer is an error (it should be there).
    """
    if broker == "memory":
        return None
    module = {"redis": "eventbus.transports.redis", "rabbitmq": "eventbus.transports.rabbitmq"}
    try:
        importlib.import_module(module[broker])
    except Exception as exc:
        return "skipped", f"{broker} transport not importable yet ({type(exc).__name__}: {exc})"
    if not reachable(URLS[broker]):
        return "error", f"{broker} broker not reachable at {URLS[broker]}"
    return None


def fresh(prefix: str) -> str:
    """A unique namespace / key part for one run of a scenario."""
    return f"bench-{prefix}-{uuid.uuid4().hex[:10]}"


async def redis_cleanup(namespace_or_prefix: str, url: str = REDIS_URL) -> None:
    """Delete every Redis key of the namespace (eventbus keys and our raw keys)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        for pattern in (f"eventbus:{{{namespace_or_prefix}*", f"*{namespace_or_prefix}*"):
            batch: list[bytes] = []
            async for key in client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 500:
                    await client.delete(*batch)
                    batch = []
            if batch:
                await client.delete(*batch)
    finally:
        await client.aclose()


async def rabbit_cleanup(namespace: str, queues: Sequence[str] = (), url: str = AMQP_URL) -> None:
    """Delete the namespace's eventbus topology and the raw queues named."""
    if namespace:
        with contextlib.suppress(Exception):
            from eventbus.transports.rabbitmq import RabbitMQTransport

            t = RabbitMQTransport(url, namespace)
            try:
                await asyncio.wait_for(t.delete_namespace(), 30)
            finally:
                await t.aclose()
    if queues:
        import aio_pika

        conn = await asyncio.wait_for(aio_pika.connect(url), 10)
        try:
            channel = await conn.channel()
            for name in queues:
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name, if_unused=False, if_empty=False)
            # an exchange of the same name as a queue (a raw baseline's topology), if any
            for name in queues:
                with contextlib.suppress(Exception):
                    scratch = await conn.channel()
                    await scratch.exchange_delete(name)
                    await scratch.close()
        finally:
            await conn.close()


async def cleanup(broker: str, namespace: str, raw: Sequence[str] = ()) -> None:
    with contextlib.suppress(Exception):
        if broker == "redis":
            await asyncio.wait_for(redis_cleanup(namespace), 60)
            for key in raw:
                await asyncio.wait_for(redis_cleanup(key), 60)
        elif broker == "rabbitmq":
            await asyncio.wait_for(rabbit_cleanup(namespace, raw), 60)


# -- statistics ------------------------------------------------------------------------


def summary(samples: Sequence[float]) -> dict[str, float]:
    """median, min, max of the repetitions (the spread is min-max)."""
    xs = [x for x in samples if x is not None]
    if not xs:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "n": 0}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def percentile(sorted_xs: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted samples, nearest rank."""
    if not sorted_xs:
        return float("nan")
    k = min(len(sorted_xs) - 1, max(0, round(q * (len(sorted_xs) - 1))))
    return sorted_xs[k]


def per_rep_ratios(a: Case, b: Case, key: str) -> list[float]:
    """``a``'s sample over ``b``'s, repetition by repetition (both ran in each repetition,
    back to back): what a target is judged on, not the ratio of the two medians. Empty
    when either case lost repetitions (an error): then they are not aligned."""
    xs, ys = a.samples.get(key, []), b.samples.get(key, [])
    if not xs or len(xs) != len(ys) or a.error or b.error:
        return []
    return [x / y for x, y in zip(xs, ys, strict=True) if y]


@dataclass
class Case:
    """One measured thing: ``once()`` runs one repetition and returns its sample(s)."""

    name: str
    once: Callable[[], Awaitable[dict[str, float]]]
    labels: dict[str, Any] = field(default_factory=dict)
    setup: Callable[[], Awaitable[None]] | None = None
    teardown: Callable[[], Awaitable[None]] | None = None
    skipped: str | None = None
    error: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)


def describe(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".replace("\n", " ").replace("|", "/")
    return text[:300]


async def interleaved(
    cases: Sequence[Case], repeats: int, *, timeout: float, warmup: bool = True
) -> None:
    """Run every case ``repeats`` times, interleaved (rotating order), each repetition
    bounded by ``timeout`` seconds; a failing case is marked and not run again."""
    for case in cases:
        if case.skipped or case.setup is None:
            continue
        try:
            await asyncio.wait_for(case.setup(), timeout)
        except Exception as exc:
            case.error = f"setup: {describe(exc)}"
    try:
        for rep in range(-1 if warmup else 0, repeats):
            order = list(cases)
            if rep > 0:
                k = rep % len(order)
                order = order[k:] + order[:k]
            for case in order:
                if case.skipped or case.error:
                    continue
                try:
                    sample = await asyncio.wait_for(case.once(), timeout)
                except Exception as exc:
                    case.error = describe(exc)
                    traceback.print_exc()
                    continue
                if rep >= 0:  # rep -1 is the warm-up
                    for key, value in sample.items():
                        case.samples.setdefault(key, []).append(value)
    finally:
        for case in cases:
            if case.teardown is not None and not case.skipped:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(case.teardown(), timeout)


def case_row(case: Case) -> Row:
    """The row of a case: its labels, and per sample key: median, min, max."""
    row: Row = {"case": case.name, **case.labels}
    if case.skipped:
        row["skipped"] = case.skipped
        return row
    if case.error:
        row["error"] = case.error
    for key, xs in case.samples.items():
        s = summary(xs)
        row[key] = s["median"]
        row[f"{key}_min"] = s["min"]
        row[f"{key}_max"] = s["max"]
        row["repeats"] = s["n"]
    return row


@contextlib.contextmanager
def timed() -> Iterator[dict[str, float]]:
    """Wall (perf_counter) and CPU (process_time) seconds of the block."""
    out: dict[str, float] = {}
    w0, c0 = time.perf_counter(), time.process_time()
    try:
        yield out
    finally:
        out["wall"] = time.perf_counter() - w0
        out["cpu"] = time.process_time() - c0


def run_async(coro: Awaitable[Any]) -> Any:
    return asyncio.run(coro)  # type: ignore[arg-type]


# -- tables ----------------------------------------------------------------------------


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if value != value:  # nan
            return "\u2013"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        return f"{value:.{digits}f}"
    return str(value)


def spread(row: Row, key: str, digits: int = 1) -> str:
    """``median (min-max)`` of a row's key, or '' when absent."""
    if key not in row:
        return ""
    med = fmt(row[key], digits)
    lo, hi = row.get(f"{key}_min"), row.get(f"{key}_max")
    if lo is None or hi is None or row.get("repeats", 1) < 2:
        return med
    return f"{med} ({fmt(lo, digits)}\u2013{fmt(hi, digits)})"


def note(row: Row) -> str:
    if row.get("skipped"):
        return f"skipped: {row['skipped']}"
    if row.get("error"):
        return f"**error**: {row['error']}"
    return str(row.get("note", ""))


def md_table(headers: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |"]
    out.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(headers))) + "|")
    for line in lines:
        out.append("| " + " | ".join(str(c) for c in line) + " |")
    return "\n".join(out)


# -- a fake chat model that streams natively -------------------------------------------


class NativeFakeChat(BaseChatModel):
    """Streams ``tokens`` AIMessageChunks from a native ``_astream`` (no thread hop, unlike
    GenericFakeChatModel): what a real async provider client looks like to LangChain."""

    tokens: int = 1000
    word: str = " bee"

    @property
    def _llm_type(self) -> str:
        return "native-fake-chat"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content=self.word * self.tokens))]
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        for _ in range(self.tokens):
            chunk = ChatGenerationChunk(message=AIMessageChunk(content=self.word))
            if run_manager is not None:
                await run_manager.on_llm_new_token(self.word, chunk=chunk)
            yield chunk


def streaming_chain(tokens: int) -> Any:
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate

    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{q}")])
    return prompt | NativeFakeChat(tokens=tokens) | StrOutputParser()


def progress_graph(steps: int) -> Any:
    """A LangGraph graph of two nodes whose first writes ``steps`` progress updates
    through ``get_stream_writer()`` (run it with ``stream_mode="custom"``)."""
    from typing import TypedDict

    from langgraph.config import get_stream_writer

    class State(TypedDict):
        n: int
        done: bool

    async def index(state: State) -> dict[str, Any]:
        writer = get_stream_writer()
        for i in range(steps):
            writer({"type": "progress", "current": i + 1, "total": steps, "status": "indexing"})
            if i % 16 == 15:
                await asyncio.sleep(0)  # a real node awaits I/O now and then
        return {"n": steps}

    return _then_finish(State, "index", index)


def _then_finish(state: Any, name: str, node: Any) -> Any:
    """A compiled graph: START -> ``node`` -> a ``finish`` node that sets ``done`` -> END."""
    from langgraph.graph import END, START, StateGraph

    async def finish(state: Any) -> dict[str, Any]:
        return {"done": True}

    graph = StateGraph(state)
    graph.add_node(name, node)
    graph.add_node("finish", finish)
    graph.add_edge(START, name)
    graph.add_edge(name, "finish")
    graph.add_edge("finish", END)
    return graph.compile()


def token_graph(tokens: int, progress_every: int = 10) -> Any:
    """What LangGraph apps run: a graph whose ``agent`` node streams ``tokens`` tokens from a
    chat model (``NativeFakeChat``) and writes a progress update through
    ``get_stream_writer()`` every ``progress_every`` tokens, then a ``finish`` node. Run it
    with ``stream_mode=TOKEN_GRAPH_MODES``: each token is two events
    (``on_chat_model_stream`` and the root's ``on_chain_stream`` carrying
    ``("messages", (chunk, metadata))``), plus a custom event every ``progress_every``."""
    from typing import Annotated, TypedDict

    from langgraph.config import get_stream_writer
    from langgraph.graph.message import add_messages

    model = NativeFakeChat(tokens=tokens)

    # the functional form: its annotations are values (this module's are strings, which
    # LangGraph could not resolve for a class local to a function)
    State = TypedDict(  # type: ignore[misc]  # noqa: UP013
        "State", {"messages": Annotated[list[BaseMessage], add_messages], "done": bool}
    )

    async def agent(state: State) -> dict[str, Any]:
        writer = get_stream_writer()
        full: Any = None
        i = 0
        async for chunk in model.astream(state["messages"]):
            full = chunk if full is None else full + chunk
            i += 1
            if i % progress_every == 0:
                writer({"type": "progress", "tokens": i, "total": tokens})
        return {"messages": [full]}

    return _then_finish(State, "agent", agent)


TOKEN_GRAPH_MODES = ["messages", "updates", "custom"]


def machine_description() -> dict[str, Any]:
    """What this machine is (for BENCHMARKS.md and every result file)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/meminfo") as f:
        kb = int(f.readline().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB RAM"
    versions = {}
    for pkg in ("langchain-core", "langgraph", "msgspec", "redis", "aio-pika", "faststream"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    import eventbus._codec
    from eventbus._speedups import codec_is_compiled

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "codec": "compiled" if codec_is_compiled(eventbus._codec) else "pure Python",
        "packages": versions,
        "loadavg": [round(x, 2) for x in load],
    }


# -- driving a publisher with pre-built events -----------------------------------------


async def emit_all(
    pub: Any, events: Sequence[dict[str, Any]], run_id: str | None = None, yield_every: int = 1
) -> str:
    """Publish pre-built StreamEvent dicts as one run through the publisher's own path
    (``_emit_event``: encode, buffer, backpressure; the writer task batches and sends), then
    end the run (``_finish``: the End record, and wait until everything is on the broker).

    The loop yields to the event loop every ``yield_every`` events (1: as
    ``astream_events`` does, which the overhead scenario measures; the throughput scenario
    uses 32, a producer with events at hand, like the raw baselines that pipeline
    theirs), so that the writer runs concurrently. Returns the run id.
    """
    run = pub._open_run(run_id or str(uuid.uuid4()))
    limit = pub._max_buffer_bytes
    for i, event in enumerate(events):
        pub._emit_event(run, event)
        if pub._buffered > limit:
            await pub._backpressure()
        if i % yield_every == 0:
            await asyncio.sleep(0)
    await pub._finish(run, None)
    return str(run.run_id)


def token_events(n: int, small: bool = False) -> list[dict[str, Any]]:
    """``n`` realistic ``on_chat_model_stream`` events (LangGraph metadata, ~0.8 KB as
    msgpack), or ``small`` ones (no LangGraph metadata, ~0.3 KB)."""
    from .codec import token_event

    base = token_event()
    if small:
        base["metadata"] = {"ls_provider": "openai", "ls_model_name": "gpt-4o-mini"}
    out = []
    for i in range(n):
        ev = dict(base)
        ev["data"] = {"chunk": AIMessageChunk(content=f" tok{i}", id=base["data"]["chunk"].id)}
        out.append(ev)
    return out
