"""The ``eventbus`` command line, through its real entry point (``python -m eventbus``) in
subprocesses, plus its terminal rendering on rich's recording console."""

from __future__ import annotations

import asyncio
import contextlib
import io
import queue
import re
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgspec
import pytest
from conftest import broker_url
from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.messages import AIMessageChunk
from langchain_core.runnables import RunnableLambda
from rich.console import Console

import eventbus
from eventbus._cli_render import RunView, runs_table, trace_tree
from eventbus._demo import ANSWER, CHAIN_ANSWER, chat_chain, research_graph
from eventbus._runs import RunTally, build_trace
from eventbus._wire import End, Event, encode_envelope
from eventbus.transports import OutFrame, open_transport

pytestmark = pytest.mark.timeout(60)

BROKERS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
]
TAIL = [sys.executable, "-m", "eventbus", "tail"]
UNKNOWN_RUN = "0192f0c6-8f0e-7a51-b1b2-00000000dead"
DEFAULT_PORTS = {"redis": 6379, "rabbitmq": 5672}


def cli(*args: str, timeout: float = 50) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "eventbus", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def publish(url: str, namespace: str, runnable: Any, inp: Any, **kwargs: Any) -> tuple[str, int]:
    """Publish one run; (its run id, events published). A failing run fails quietly."""
    run_id = str(uuid.uuid4())

    async def go() -> int:
        async with eventbus.Publisher(url, namespace) as pub:
            with contextlib.suppress(ValueError):
                await pub.run(runnable, inp, config={"run_id": run_id}, **kwargs)
            return pub.stats.events

    return run_id, asyncio.run(go())


def failing() -> Any:
    async def explode(inputs: dict[str, Any]) -> dict[str, Any]:
        await adispatch_custom_event("progress", {"type": "progress", "current": 1, "total": 2})
        raise ValueError("the fake provider is down")

    return RunnableLambda(explode, name="explode")


def json_lines(text: str) -> list[Any]:
    return [msgspec.json.decode(line) for line in text.splitlines() if line.strip()]


# -- demo -----------------------------------------------------------------------------------


def _check_demo_output(out: str) -> None:
    assert "demo OK" in out, out
    assert ANSWER in out  # the live view streamed the graph's tokens ...
    assert CHAIN_ANSWER in out  # ... and the chain's
    assert "5/5 note 5" in out  # get_stream_writer() progress, as bars
    assert "3/3 reading source 3" in out  # adispatch_custom_event progress
    published = [int(n) for n in re.findall(r"published (\d+) events", out)]
    live = [int(n) for n in re.findall(r"live view +received (\d+) events", out)]
    audit = [int(n) for n in re.findall(r"audit group +received (\d+) records", out)]
    assert len(published) == 2 and all(n > 20 for n in published)
    assert live == published  # every event, and the audit group also the end record
    assert audit == [n + 1 for n in published]
    assert out.count(": none lost") == 4
    log = Path(re.findall(r"audit log +(\S+) \((\d+) lines\)", out)[0][0])
    lines = json_lines(log.read_text())
    assert len(lines) == sum(audit)
    assert {line["kind"] for line in lines} == {"event", "end"}


def test_demo_in_one_process_with_memory() -> None:
    result = cli("demo", "--url", "memory://")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "memory:// is in-process" in result.stdout
    _check_demo_output(result.stdout)


@pytest.mark.parametrize("kind", BROKERS)
@pytest.mark.timeout(150)  # (four processes, then two commands)
def test_demo_across_processes(kind: str, namespace: str) -> None:
    result = cli("demo", "--url", broker_url(kind), "--namespace", namespace)
    assert result.returncode == 0, result.stdout + result.stderr
    _check_demo_output(result.stdout)
    # three distinct OS processes besides this one
    pids = re.findall(r"(worker|live view|audit) (\d+)", result.stderr)
    assert len({pid for _, pid in pids}) == 3, result.stderr
    assert "Traceback" not in result.stderr
    # and its runs are where `eventbus runs` looks, with no group left behind
    runs = cli("runs", "--url", broker_url(kind), "--namespace", namespace, "--json")
    assert len(json_lines(runs.stdout)) == 2, runs.stderr
    groups = cli("groups", "--url", broker_url(kind), "--namespace", namespace, "--json")
    assert json_lines(groups.stdout) == [], groups.stderr


# -- tail / replay / trace / runs ---------------------------------------------------------------


@pytest.mark.parametrize("kind", BROKERS)
def test_tail_json_prints_records_in_the_json_form(kind: str, namespace: str) -> None:
    url = broker_url(kind)
    run_id, published = publish(url, namespace, chat_chain(pause=0), {"q": "ants?"})
    result = cli("tail", run_id, "--url", url, "--namespace", namespace, "--json")
    assert result.returncode == 0, result.stderr
    records = json_lines(result.stdout)
    # every event, then the end record: one shape, the namespace tail's
    assert [r["kind"] for r in records] == ["event"] * published + ["end"]
    assert [r["seq"] for r in records] == list(range(1, published + 2))
    assert {r["run_id"] for r in records} == {run_id}
    events = [r["event"] for r in records[:-1]]
    assert events[0]["event"] == "on_chain_start" and events[0]["run_id"] == run_id
    chunks = [e["data"]["chunk"] for e in events if e["event"] == "on_chat_model_stream"]
    assert {c["type"] for c in chunks} == {"AIMessageChunk"}  # LangChain's own dict shape
    assert "".join(c["content"] for c in chunks) == CHAIN_ANSWER
    assert all(r["id"].startswith(f"{r['seq']}:") for r in records[:-1])

    only = cli("tail", run_id, "--url", url, "-n", namespace, "--types", "chat_model")
    assert only.returncode == 0, only.stderr  # not a TTY: JSON without --json
    kinds = {r["event"]["event"] for r in json_lines(only.stdout) if r["kind"] == "event"}
    assert kinds == {"on_chat_model_start", "on_chat_model_stream", "on_chat_model_end"}


@pytest.mark.parametrize("kind", BROKERS)
def test_tail_follows_a_run_that_starts_later(kind: str, namespace: str) -> None:
    url = broker_url(kind)
    run_id = str(uuid.uuid4())
    # tail first, and the run only once tail says it is connected and following: the run
    # has then certainly not started, so tail waits for it (start_timeout = --wait) and
    # follows it live to its end
    proc = subprocess.Popen(
        [*TAIL, run_id, "--url", url, "-n", namespace, "--wait", "40"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        ready = proc.stderr.readline()  # bounded by the test's timeout mark
        assert f"following run {run_id}" in ready, ready

        async def go() -> int:
            async with eventbus.Publisher(url, namespace) as pub:
                await pub.run(chat_chain(pause=0), {"q": "ants?"}, config={"run_id": run_id})
                return pub.stats.events

        published = asyncio.run(go())
        out, err = proc.communicate(timeout=40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    assert proc.returncode == 0, err
    records = json_lines(out)
    assert len(records) == published + 1  # and the end record
    assert records[-1]["kind"] == "end"
    chunks = [
        r["event"]["data"]["chunk"]
        for r in records
        if r["kind"] == "event" and r["event"]["event"] == "on_chat_model_stream"
    ]
    assert "".join(c["content"] for c in chunks) == CHAIN_ANSWER


def _publish_frames(url: str, namespace: str, run_id: str, records: list[list[Any]]) -> None:
    """Publish hand-written frames (one per list of records), as a worker would."""

    async def go() -> None:
        t = open_transport(url, namespace)
        await t.connect()
        try:
            frames = [encode_envelope("msgpack", namespace, run_id, "p", r) for r in records]
            await t.publish([OutFrame(run_id, f) for f in frames])
        finally:
            await t.aclose()

    asyncio.run(go())


def _event(run_id: str, n: int) -> dict[str, Any]:
    """The n-th event of a hand-written run: its start first, as in every real run."""
    kind, data = ("on_chain_start", {"input": n}) if n == 1 else ("on_chain_stream", {"chunk": n})
    return {"event": kind, "run_id": run_id, "name": "r", "tags": [], "metadata": {},
            "data": data, "parent_ids": []}  # fmt: skip


@pytest.mark.parametrize("kind", BROKERS)
def test_exit_codes_of_runs_that_did_not_end_normally(kind: str, namespace: str) -> None:
    url = broker_url(kind)
    common = ["--url", url, "-n", namespace, "--json"]

    # cancelled: the worker's consumer stopped iterating after the first event
    cancelled = str(uuid.uuid4())

    async def cancel() -> None:
        async with eventbus.Publisher(url, namespace) as pub:
            events = pub.astream_events(chat_chain(pause=0), {"q": "ants?"},
                                        config={"run_id": cancelled})  # fmt: skip
            async for _ in events:
                break
            await events.aclose()
            await pub.flush()

    asyncio.run(cancel())
    result = cli("tail", cancelled, *common)
    assert result.returncode == 1, result.stderr
    assert "was cancelled in the worker" in result.stderr
    records = json_lines(result.stdout)
    assert [r["event"]["event"] for r in records[:-1]] == ["on_chain_start"]
    assert records[-1]["kind"] == "cancelled"

    # worker lost: one event, then silence (no end, no heartbeat) for longer than --idle
    lost = str(uuid.uuid4())
    _publish_frames(url, namespace, lost, [[Event(1, 0.0, _event(lost, 1))]])
    result = cli("tail", lost, *common, "--idle", "1")
    assert result.returncode == 1, result.stderr
    assert "presumed dead" in result.stderr
    records = json_lines(result.stdout)
    assert [r["event"]["data"] for r in records[:-1]] == [{"input": 1}]
    assert records[-1]["kind"] == "lost"

    # sequence gap: events 2 and 3 are missing (trimmed by retention)
    gap = str(uuid.uuid4())
    first = [Event(1, 0.0, _event(gap, 1))]
    _publish_frames(url, namespace, gap, [first, [Event(4, 0.0, _event(gap, 4)), End(5, 0.0)]])
    for command in ("tail", "replay", "trace"):
        result = cli(command, gap, *common)
        assert result.returncode == 1, (command, result.stderr)
        assert "expected event #2 but the stream continues at #4" in result.stderr, command
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", BROKERS)
def test_wrong_credentials_exit_2_without_the_password(kind: str) -> None:
    parts = urlsplit(broker_url(kind))
    secret = f"wrong-{uuid.uuid4().hex[:8]}"
    user = parts.username or ("guest" if kind == "rabbitmq" else "")
    bad = urlunsplit(
        (
            parts.scheme,
            f"{user}:{secret}@{parts.hostname}:{parts.port or DEFAULT_PORTS[kind]}",
            parts.path,
            parts.query,
            "",
        )
    )
    for command in (["tail", UNKNOWN_RUN], ["runs"], ["replay", UNKNOWN_RUN]):
        result = cli(*command, "--url", bad)
        assert result.returncode == 2, (command, result.stderr)
        assert "check the user and password" in result.stderr, result.stderr
        assert secret not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize("kind", BROKERS)
def test_replay_json_and_resume_after_an_id(kind: str, namespace: str) -> None:
    url = broker_url(kind)
    run_id, published = publish(
        url,
        namespace,
        research_graph(pause=0),
        {"topic": "bees", "notes": [], "answer": ""},
        stream_mode=["updates", "custom"],
    )
    common = ["--url", url, "--namespace", namespace]
    full = cli("replay", run_id, *common, "--json")
    assert full.returncode == 0, full.stderr
    items = json_lines(full.stdout)
    assert [i["kind"] for i in items] == ["event"] * published + ["end"]
    events = [item["event"] for item in items[:-1]]
    tokens = "".join(
        e["data"]["chunk"]["content"] for e in events if e["event"] == "on_chat_model_stream"
    )
    assert tokens == ANSWER
    custom = [
        e["data"]["chunk"]
        for e in events
        if e["event"] == "on_chain_stream" and e["run_id"] == run_id
    ]
    # a (mode, chunk) tuple is an array in the JSON form
    assert ["custom", {"type": "progress", "current": 3, "total": 5, "status": "note 3"}] in custom

    rest = cli("replay", run_id, *common, "--json", "--after", items[9]["id"])
    assert rest.returncode == 0, rest.stderr
    assert json_lines(rest.stdout) == items[10:]


@pytest.mark.parametrize("kind", BROKERS)
def test_trace_json_is_the_run_tree(kind: str, namespace: str) -> None:
    url = broker_url(kind)
    run_id, published = publish(url, namespace, chat_chain(pause=0), {"q": "ants?"})
    result = cli("trace", run_id, "--url", url, "--namespace", namespace, "--json")
    assert result.returncode == 0, result.stderr
    trace = msgspec.json.decode(result.stdout)
    assert trace["status"] == "ended" and trace["events"] == published
    (root,) = trace["tree"]
    assert (root["run_id"], root["name"], root["run_type"]) == (run_id, "ask_chain", "chain")
    children = {c["name"]: c for c in root["children"]}
    assert children["chat-model"]["run_type"] == "chat_model"
    assert (
        children["chat-model"]["tokens"] == trace["tokens"] == len(CHAIN_ANSWER.split(" ")) * 2 - 1
    )
    assert children["research"]["custom_events"] == 3
    assert all(c["ended"] and c["duration"] >= 0 for c in root["children"])

    tree = cli("trace", run_id, "--url", url, "--namespace", namespace)
    assert tree.returncode == 0, tree.stderr
    assert "ask_chain" in tree.stdout and "chat-model" in tree.stdout
    assert f"{trace['tokens']} tokens" in tree.stdout


@pytest.mark.parametrize("kind", BROKERS)
def test_runs_lists_status_and_counts(kind: str, namespace: str) -> None:
    url = broker_url(kind)
    ok_id, ok_events = publish(url, namespace, chat_chain(pause=0), {"q": "ants?"})
    bad_id, bad_events = publish(url, namespace, failing(), {})
    common = ["--url", url, "--namespace", namespace]
    result = cli("runs", *common, "--json")
    assert result.returncode == 0, result.stderr
    runs = {r["run_id"]: r for r in json_lines(result.stdout)}
    assert set(runs) == {ok_id, bad_id}
    assert (runs[ok_id]["status"], runs[ok_id]["events"], runs[ok_id]["name"]) == (
        "ended",
        ok_events,
        "ask_chain",
    )
    assert (runs[bad_id]["status"], runs[bad_id]["events"]) == ("failed", bad_events)
    assert "the fake provider is down" in runs[bad_id]["error"]
    assert list(runs) == [bad_id, ok_id]  # newest first

    table = cli("runs", *common)
    assert table.returncode == 0, table.stderr
    assert ok_id in table.stdout and bad_id in table.stdout
    assert "ended" in table.stdout and "failed" in table.stdout


@pytest.mark.redis
def test_tail_exits_1_when_the_run_failed(namespace: str) -> None:
    url = broker_url("redis")
    run_id, _ = publish(url, namespace, failing(), {})
    result = cli("tail", run_id, "--url", url, "-n", namespace, "--json")
    assert result.returncode == 1
    assert "failed in the worker" in result.stderr
    assert "the fake provider is down" in result.stderr
    assert "Traceback" not in result.stderr
    # what the run emitted before it raised is all printed (a chain's error is no event)
    records = json_lines(result.stdout)
    assert [r["event"]["event"] for r in records[:-1]] == ["on_chain_start", "on_custom_event"]
    assert records[-1]["kind"] == "error"
    assert records[-1]["error"]["class"] == "ValueError"
    assert records[-1]["error"]["message"] == "the fake provider is down"

    traced = cli("trace", run_id, "--url", url, "-n", namespace, "--json")
    assert traced.returncode == 1
    assert msgspec.json.decode(traced.stdout)["status"] == "failed"


@pytest.mark.redis
def test_tail_whole_namespace_through_a_group(namespace: str) -> None:
    url = broker_url("redis")
    run_id, published = publish(url, namespace, chat_chain(pause=0), {"q": "ants?"})
    command = [*TAIL, "--json", "--url", url, "-n", namespace, "--group", "cli-test"]
    lines: queue.Queue[str] = queue.Queue()
    got: list[dict[str, Any]] = []
    # a durable group that starts at the first retained record: it gets the run published
    # above; a namespace tail never ends by itself, so it is stopped after the end record
    with subprocess.Popen(
        [*command, "--start", "first"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    ) as proc:
        stdout = proc.stdout
        assert stdout is not None
        reader = threading.Thread(target=lambda: [lines.put(x) for x in stdout], daemon=True)
        reader.start()
        try:
            while not got or got[-1]["kind"] == "event":
                got.append(msgspec.json.decode(lines.get(timeout=30)))
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            reader.join(timeout=10)
    assert [m["seq"] for m in got] == list(range(1, published + 2))
    assert {m["run_id"] for m in got} == {run_id}
    assert got[-1]["kind"] == "end"
    # the shape the per-run tail prints
    assert set(got[0]) == {"kind", "run_id", "seq", "id", "event"}
    assert got[0]["event"]["event"] == "on_chain_start"


# -- bad input ----------------------------------------------------------------------------------


def test_unknown_scheme_exits_2_with_the_scheme_error() -> None:
    for command in (["demo"], ["tail", UNKNOWN_RUN], ["runs"]):
        result = cli(*command, "--url", "kafka://x")
        assert result.returncode == 2, command
        assert "unknown URL scheme 'kafka'" in result.stderr
        assert "Traceback" not in result.stderr


def test_unreachable_broker_gives_the_hint_and_no_password() -> None:
    for command in (["demo"], ["runs"], ["trace", UNKNOWN_RUN]):
        result = cli(*command, "--url", "redis://:s3cret@127.0.0.1:1/0")
        assert result.returncode == 2, command
        assert "cannot reach the broker" in result.stderr
        assert "docker compose up -d" in result.stderr and "--url memory://" in result.stderr
        assert "Traceback" not in result.stderr
        assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.redis
def test_unknown_run_and_bad_run_id(namespace: str) -> None:
    url = broker_url("redis")
    result = cli("replay", UNKNOWN_RUN, "--url", url, "-n", namespace, "--wait", "0.5")
    assert result.returncode == 2
    assert "run not found" in result.stderr and UNKNOWN_RUN in result.stderr
    bad = cli("trace", "not-a-run", "--url", url)
    assert bad.returncode == 2
    assert "'not-a-run' is not a run id" in bad.stderr
    token = cli("replay", UNKNOWN_RUN, "--url", url, "--after", "nonsense")
    assert token.returncode == 2 and "resume token" in token.stderr


def test_memory_url_outside_the_demo_is_refused() -> None:
    result = cli("tail", UNKNOWN_RUN, "--url", "memory://")
    assert result.returncode == 2 and "memory:// is in-process" in result.stderr


def test_help_has_examples() -> None:
    top = cli("--help")
    assert top.returncode == 0 and "examples:" in top.stdout
    for command in ("demo", "tail", "runs", "replay", "trace"):
        result = cli(command, "--help")
        assert result.returncode == 0 and "examples:" in result.stdout, command
        assert f"eventbus {command}" in result.stdout
    assert "_demo-worker" not in top.stdout
    assert cli().returncode == 2


def test_import_eventbus_does_not_need_rich_and_a_missing_rich_says_what_to_install() -> None:
    code = (
        "import sys; sys.modules['rich'] = None; sys.modules['rich.console'] = None\n"
        "import eventbus, eventbus.__main__\n"
        "sys.exit(eventbus.__main__.main(['demo', '--url', 'memory://']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=50
    )
    assert result.returncode == 2
    assert "pip install 'eventbus[cli]'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


# -- rendering ----------------------------------------------------------------------------------


async def _local_events(runnable: Any, inp: Any, **kwargs: Any) -> list[dict[str, Any]]:
    return [e async for e in runnable.astream_events(inp, version="v2", **kwargs)]


@pytest.mark.parametrize("live", [False, True], ids=["lines", "live-area"])
def test_run_view_renders_tokens_progress_and_tools(live: bool) -> None:
    events = asyncio.run(
        _local_events(
            research_graph(pause=0),
            {"topic": "bees", "notes": [], "answer": ""},
            stream_mode=["updates", "custom"],
        )
    )
    events += asyncio.run(_local_events(chat_chain(pause=0), {"q": "ants?"}))
    console = Console(record=True, width=100, file=io.StringIO())
    with RunView(console, live=live) as view:
        for event in events:
            view.handle(event)
        view.ended(events[-1]["run_id"])
    text = console.export_text()
    flat = " ".join(text.split())  # (the streamed answers wrap at width 100)
    assert ANSWER in flat and CHAIN_ANSWER in flat
    assert 'tool search_notes({"topic":"bees"})' in text  # tool inputs as JSON
    assert "5/5" in text and "note 5" in text
    assert "3/3" in text and "reading source 3" in text
    assert "tool search_notes" in text and "3 field notes on bees" in text
    if not live:  # every update is a line of its own
        assert "3/5" in text and "note 3" in text
    # the tree: the model is indented under its node
    assert "\n    ▸ writer-model  chat_model" in text


@pytest.mark.parametrize("live", [False, True], ids=["lines", "live-area"])
def test_streamed_tokens_wrap_at_word_boundaries_at_their_indent(live: bool) -> None:
    words = [f"word{i:02d}" for i in range(40)] + ["x" * 50]
    console = Console(record=True, width=40, file=io.StringIO())
    with RunView(console, live=live) as view:
        model = {"run_id": "m", "name": "model", "parent_ids": ["r", "g"]}
        view.handle({**model, "event": "on_chat_model_start", "data": {}})
        for i, word in enumerate(words):
            chunk = AIMessageChunk(content=("" if i == 0 else " ") + word)
            view.handle({**model, "event": "on_chat_model_stream", "data": {"chunk": chunk}})
        view.handle({**model, "event": "on_chat_model_end", "data": {}})
    text = console.export_text()
    lines = [line for line in text.splitlines() if "word" in line]
    assert len(lines) > 5
    assert all(len(line) <= 40 and line.startswith("    word") for line in lines), lines
    assert " ".join(" ".join(lines).split()) == " ".join(words[:-1])  # no word cut
    # a word longer than a line is broken, not lost
    assert "".join(line.strip() for line in text.splitlines() if "xx" in line) == "x" * 50


def test_run_view_highlights_errors() -> None:
    console = Console(record=True, width=100, file=io.StringIO())
    view = RunView(console, live=False)
    view.handle(
        {
            "event": "on_tool_error",
            "name": "search",
            "run_id": "r2",
            "parent_ids": ["r1"],
            "data": {"error": ValueError("quota exceeded")},
        }
    )
    view.failed(
        "run r1 failed in the worker: ValueError: boom", "Traceback (most recent call last)"
    )
    text = console.export_text()
    assert "✗ search: ValueError('quota exceeded')" in text
    assert "failed in the worker" in text


def test_trace_and_runs_render() -> None:
    events = asyncio.run(_local_events(chat_chain(pause=0), {"q": "ants?"}))
    trace = build_trace(events[0]["run_id"], [(float(i), e) for i, e in enumerate(events)])
    console = Console(record=True, width=120, file=io.StringIO())
    console.print(trace_tree(trace))
    ended, silent = RunTally("a"), RunTally("b")
    ended.add(Event(1, 100.0, {**events[0], "run_id": "a"}))
    ended.add(End(2, 101.5))
    silent.add(Event(3, 50.0, {**events[0], "run_id": "x"}))
    runs = [t.info(now=200.0, idle=30.0).to_dict() for t in (ended, silent)]
    assert [(r["run_id"], r["name"], r["status"], r["partial"]) for r in runs] == [
        ("a", "ask_chain", "ended", False),
        ("b", None, "lost", True),
    ]
    console.print(runs_table(runs, "runs"))
    text = console.export_text()
    assert "ask_chain  chain" in text and "chat-model  chat_model" in text
    assert f"{trace['tokens']} tokens" in text and "3 custom events" in text
    assert "lost" in text and "1.50 s" in text
