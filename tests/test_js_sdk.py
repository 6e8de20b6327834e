"""The gateway with the JavaScript LangGraph SDK (``@langchain/langgraph-sdk``, pinned in
``tests/js/package-lock.json``, installed by ``make js`` / ``.ci/node.sh``):
``client.runs.joinStream(threadId, runId, {streamMode, lastEventId})``, unchanged, in a
real ``node`` process (``tests/js/join_stream.mjs``), against a real uvicorn server.

What the SDK yields is compared with LangChain's own local stream of the same run (the
publisher's tee), put through ``eventbus.to_jsonable``. Without node or the installed
package the tests skip, and fail under ``EVENTBUS_REQUIRE_NODE=1`` (``.ci/run``).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import broker_url
from graphs import GRAPHS
from langchain_core.runnables import RunnableGenerator
from runnables import CASES
from test_browser import Proxy
from test_http import serving

import eventbus
from eventbus._http import Gateway

pytestmark = pytest.mark.anyio

WAIT = 60
JS = Path(__file__).resolve().parent / "js"
SCRIPT = JS / "join_stream.mjs"
MODES = ("values", "updates", "custom", "messages", "debug")


def _node() -> str:
    """The node executable, with the SDK installed; else skip (fail in CI)."""
    node = shutil.which("node")
    sdk = JS / "node_modules" / "@langchain" / "langgraph-sdk" / "package.json"
    missing = None
    if node is None:
        missing = "needs node (bash .ci/node.sh)"
    elif not sdk.exists():
        missing = "needs the JavaScript SDK installed: make js"
    if missing is not None:
        if os.environ.get("EVENTBUS_REQUIRE_NODE") == "1":
            pytest.fail(f"{missing} (EVENTBUS_REQUIRE_NODE=1: not skipped)")
        pytest.skip(missing)
    assert node is not None
    return node


def sdk_version() -> str:
    package = JS / "node_modules" / "@langchain" / "langgraph-sdk" / "package.json"
    return str(json.loads(package.read_text())["version"])


class Joined:
    """A ``node join_stream.mjs`` process: its parts as they are printed."""

    def __init__(self, node: str, **args: Any) -> None:
        self.node = node
        self.args = args
        self.parts: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Joined:
        self.proc = await asyncio.create_subprocess_exec(
            self.node,
            str(SCRIPT),
            json.dumps(self.args),
            cwd=JS,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 26,  # a run's end event carries its whole output
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()

    async def next(self) -> dict[str, Any] | None:
        """The next part, or None once the SDK's iterator has ended."""
        assert self.proc is not None and self.proc.stdout is not None
        with anyio.fail_after(WAIT):
            line = await self.proc.stdout.readline()
        if not line:
            assert self.proc.stderr is not None
            error = (await self.proc.stderr.read()).decode()
            raise AssertionError(f"node ended without finishing: {error}")
        record = json.loads(line)
        if record.get("done"):
            return None
        self.parts.append(record)
        return dict(record)

    async def all(self) -> list[dict[str, Any]]:
        while await self.next() is not None:
            pass
        assert self.proc is not None
        with anyio.fail_after(WAIT):
            assert await self.proc.wait() == 0
        return self.parts


async def join(node: str, **args: Any) -> list[dict[str, Any]]:
    async with Joined(node, **args) as joined:
        return await joined.all()


async def publish_graph(
    url: str, namespace: str, case: Any, **kwargs: Any
) -> tuple[str, list[dict[str, Any]]]:
    graph, value, case_kwargs = case()
    run_id = str(uuid.uuid4())
    async with eventbus.Publisher(url, namespace) as pub:
        with anyio.fail_after(WAIT):
            local = [
                e
                async for e in pub.astream_events(
                    graph, value, config={"run_id": run_id}, **{**case_kwargs, **kwargs}
                )
            ]
    return run_id, local


def root_chunks(run_id: str, local: list[dict[str, Any]]) -> list[Any]:
    return [
        e["data"]["chunk"]
        for e in local
        if e["run_id"] == run_id and e["event"] == "on_chain_stream"
    ]


async def test_js_sdk_join_stream_every_mode(url: str, namespace: str) -> None:
    node = _node()
    gateway = Gateway(url, namespace)
    run_id, local = await publish_graph(
        url, namespace, CASES["langgraph_graph"], stream_mode=list(MODES)
    )
    chunks = root_chunks(run_id, local)
    expected = {m: [eventbus.to_jsonable(c) for mode, c in chunks if mode == m] for m in MODES}
    assert all(expected.values())
    async with serving(gateway) as base:
        for modes in (["updates"], ["custom", "messages-tuple"], ["values", "debug"]):
            parts = await join(node, apiUrl=base, threadId="any-thread", runId=run_id,
                               streamMode=modes)  # fmt: skip
            assert parts[0] == {
                "event": "metadata",
                "data": {"run_id": run_id, "thread_id": "any-thread"},
                "id": None,
            }
            assert parts[-1]["event"] == "end"
            assert parts[-1]["data"] == {"run_id": run_id, "status": "success"}
            names = {"messages" if m == "messages-tuple" else m for m in modes}
            assert {p["event"] for p in parts} == {"metadata", "end", *names}
            for name in names:
                assert [p["data"] for p in parts if p["event"] == name] == expected[name], name
            # every part of an event carries its resume token
            assert all(p["id"] for p in parts[1:-1])

        # the v2 events, and a run joined without a thread (GET /runs/{run_id}/stream)
        events = await join(node, apiUrl=base, runId=run_id, streamMode="events")
        assert events[0]["event"] == "metadata" and events[0]["data"]["run_id"] == run_id
        assert [p["data"] for p in events[1:-1]] == [eventbus.to_jsonable(e) for e in local]
        assert {p["event"] for p in events[1:-1]} == {"events"}
        # LangGraph's default mode: values
        default = await join(node, apiUrl=base, threadId="t", runId=run_id)
        assert [p["data"] for p in default if p["event"] == "values"] == expected["values"]
    await gateway.aclose()


async def test_js_sdk_join_stream_subgraph_parts(url: str, namespace: str) -> None:
    node = _node()
    gateway = Gateway(url, namespace)
    run_id, local = await publish_graph(
        url, namespace, GRAPHS["subgraph_in_every_mode"], subgraphs=True
    )
    modes = ("values", "updates", "custom", "messages", "debug")
    # (namespace, mode, payload): the SDK's part names are "mode|ns1|ns2..."
    expected = [
        {"event": "|".join((mode, *ns)), "data": eventbus.to_jsonable(payload)}
        for ns, mode, payload in root_chunks(run_id, local)
        if mode in modes
    ]
    assert any("|" in e["event"] for e in expected)  # the subgraph's own parts are there
    assert {e["event"].split("|")[0] for e in expected} == set(modes)
    async with serving(gateway) as base:
        parts = await join(
            node,
            apiUrl=base,
            threadId="t",
            runId=run_id,
            streamMode=["values", "updates", "custom", "messages-tuple", "debug"],
        )
    assert [{"event": p["event"], "data": p["data"]} for p in parts[1:-1]] == expected
    assert (parts[0]["event"], parts[-1]["event"]) == ("metadata", "end")
    await gateway.aclose()


@pytest.mark.parametrize("modes", [["events"], ["updates", "custom", "messages-tuple"]])
async def test_js_sdk_resumes_by_last_event_id(url: str, namespace: str, modes: list[str]) -> None:
    """Cut at random points; each new join passes the last id the SDK gave as
    ``lastEventId``: every part exactly once, in order, one ``end``."""
    node = _node()
    gateway = Gateway(url, namespace)
    run_id, _ = await publish_graph(url, namespace, CASES["langgraph_graph"])
    rng = random.Random(run_id)
    async with serving(gateway) as base:
        whole = await join(node, apiUrl=base, threadId="t", runId=run_id, streamMode=modes)
        assert len(whole) > 10
        got: list[dict[str, Any]] = []
        last: str | None = None
        cuts = 0
        while not got or got[-1]["event"] != "end":
            # (the first join goes past the metadata part, which has no id to resume from)
            limit = rng.randint(1 if last else 2, 4)
            args: dict[str, Any] = {"apiUrl": base, "threadId": "t", "runId": run_id,
                                    "streamMode": modes, "limit": limit}  # fmt: skip
            if last is not None:
                args["lastEventId"] = last
            part = await join(node, **args)
            assert part, "a resumed join yielded nothing"
            # a resumed stream does not open with metadata again
            assert (part[0]["event"] == "metadata") == (last is None)
            got.extend(part)
            last = part[-1]["id"] or last
            cuts += 1
    assert cuts > 3, cuts

    def comparable(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        # the end part has no id: of its own (the SDK gives it the last id it saw)
        return [p if p["event"] != "end" else {**p, "id": None} for p in parts]

    assert comparable(got) == comparable(whole)
    assert [p["event"] for p in got].count("end") == 1
    await gateway.aclose()


def gated_tokens(n: int, gate: asyncio.Event) -> Any:
    """A graph-less run streaming ``n`` tokens, the second half after ``gate``."""

    async def gen(_: AsyncIterator[Any]) -> AsyncIterator[str]:
        for i in range(n):
            if i == n // 2:
                await gate.wait()
            yield f"token-{i}"

    return RunnableGenerator(gen, name="tokens")


async def test_js_sdk_reconnects_by_itself_after_a_cut(namespace: str) -> None:
    """The SDK's own retry: the connection is cut mid-run (a proxy), the SDK asks the
    run's status (running), reconnects to the ``Location`` with ``Last-Event-ID`` and
    yields every event once."""
    node = _node()
    url = broker_url("memory")
    gateway = Gateway(url, namespace)
    gate = asyncio.Event()
    run_id = str(uuid.uuid4())
    async with serving(gateway) as base, eventbus.Publisher(url, namespace) as pub:
        proxy = Proxy(int(base.rsplit(":", 1)[1]))
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        proxied = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

        async def publish() -> list[dict[str, Any]]:
            return [
                eventbus.to_jsonable(e)
                async for e in pub.astream_events(
                    gated_tokens(40, gate), None, config={"run_id": run_id}
                )
            ]

        running = asyncio.create_task(publish())
        try:
            async with Joined(node, apiUrl=proxied, threadId="t", runId=run_id,
                              streamMode="events") as joined:  # fmt: skip
                # up to the gate: the metadata part, then events up to the 20th token
                while True:
                    part = await joined.next()
                    assert part is not None
                    if part["event"] == "events" and part["data"]["data"].get("chunk") == (
                        "token-19"
                    ):
                        break
                proxy.cut()
                gate.set()
                parts = await joined.all()
            with anyio.fail_after(WAIT):
                local = await running
        finally:
            gate.set()
            server.close()
            await server.wait_closed()
    assert [p["data"] for p in parts if p["event"] == "events"] == local
    assert parts[-1]["event"] == "end"
    # the reconnection went through the proxy again, with the id
    assert any(b"last-event-id" in r.lower() for r in proxy.requests)
    await gateway.aclose()


async def test_js_sdk_slow_client_is_dropped_and_resumes_by_itself(namespace: str) -> None:
    """A JS SDK client that stops reading on a finished run: the gateway drops it (its
    buffer stays full), and the SDK reconnects with ``Last-Event-ID`` by itself (after a
    clean close it would not: the run is no longer running) and gets every event once."""
    from test_http import publish, tokens

    node = _node()
    url = broker_url("memory")
    gateway = Gateway(
        url, namespace, client_buffer=20, slow_client_timeout=0.3, socket_send_buffer=32768
    )
    run_id, local = await publish(url, namespace, tokens(400, size=4096), None)
    async with (
        serving(gateway) as base,
        Joined(node, apiUrl=base, threadId="t", runId=run_id, streamMode="events",
               pauseAfter=3) as joined,
    ):  # fmt: skip
        for _ in range(3):
            assert await joined.next() is not None
        # it reads nothing now, until it has been cut off
        await gateway.wait_for(lambda s: s.slow == 1, WAIT)
        assert joined.proc is not None and joined.proc.stdin is not None
        joined.proc.stdin.write(b"go on\n")
        await joined.proc.stdin.drain()
        joined.proc.stdin.close()
        parts = await joined.all()
    assert [p["data"] for p in parts if p["event"] == "events"] == local
    assert [p["event"] for p in parts].count("metadata") == 1
    assert parts[-1]["event"] == "end"
    await gateway.aclose()


def test_the_pinned_sdk_is_what_runs() -> None:
    _node()
    lock = json.loads((JS / "package-lock.json").read_text())
    pinned = lock["packages"]["node_modules/@langchain/langgraph-sdk"]["version"]
    assert (
        sdk_version()
        == pinned
        == json.loads((JS / "package.json").read_text())["dependencies"]["@langchain/langgraph-sdk"]
    )
