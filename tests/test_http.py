"""The HTTP gateway (eventbus[http]) with real parts only: uvicorn on a free port of
127.0.0.1, httpx / httpx-sse clients, the real LangGraph SDK client, a WebSocket client,
raw sockets for the slow and the misbehaving clients.

The oracle for what a stream carries is LangChain's own local ``astream_events`` (the
publisher's tee of the same run), put through ``eventbus.to_jsonable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import msgspec
import pytest
from conftest import broker_url
from httpx_sse import aconnect_sse
from langchain_core.runnables import RunnableGenerator, RunnableLambda
from runnables import CASES

import eventbus
from eventbus._http import Gateway

pytestmark = pytest.mark.anyio

WAIT = 60  # seconds any single wait in these tests may take before the test fails


@contextlib.asynccontextmanager
async def serving(gateway: Gateway) -> AsyncIterator[str]:
    """The gateway on uvicorn, on a free port of 127.0.0.1; yields its base URL."""
    ports: list[int] = []
    listening = asyncio.Event()

    def ready(port: int) -> None:
        ports.append(port)
        listening.set()

    task = asyncio.create_task(gateway.serve(host="127.0.0.1", port=0, ready=ready))
    try:
        with anyio.fail_after(WAIT):
            await listening.wait()
        yield f"http://127.0.0.1:{ports[0]}"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def tokens(n: int, size: int = 8) -> Any:
    """A runnable streaming ``n`` chunks of ``size`` characters (one event each)."""

    async def gen(_: AsyncIterator[Any]) -> AsyncIterator[str]:
        for i in range(n):
            yield f"{i:06d}".ljust(size, "x")

    return RunnableGenerator(gen, name="tokens")


def held(release: asyncio.Event) -> Any:
    """A run that stays open until ``release`` is set."""

    async def wait(x: Any) -> Any:
        await release.wait()
        return x

    return RunnableLambda(wait, name="held")


async def publish(
    url: str, namespace: str, runnable: Any, value: Any, **kw: Any
) -> tuple[str, list[dict[str, Any]]]:
    """Run and publish; (run id, the local events' JSON form)."""
    run_id = str(uuid.uuid4())
    async with eventbus.Publisher(url, namespace) as pub:
        with anyio.fail_after(WAIT):
            local = [
                e
                async for e in pub.astream_events(runnable, value, config={"run_id": run_id}, **kw)
            ]
    return run_id, [eventbus.to_jsonable(e) for e in local]


async def read_sse(
    client: httpx.AsyncClient,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    limit: int | None = None,
) -> list[tuple[str, str, Any]]:
    """(event, id, data) of a stream, up to ``limit`` messages (then the connection is
    dropped, as a cut would)."""
    out: list[tuple[str, str, Any]] = []
    with anyio.fail_after(WAIT):
        async with aconnect_sse(client, "GET", path, headers=dict(headers or {})) as source:
            assert source.response.status_code == 200, await source.response.aread()
            async for sse in source.aiter_sse():
                out.append((sse.event, sse.id, json.loads(sse.data) if sse.data else None))
                if limit is not None and len(out) >= limit:
                    break
    return out


# -- the core SSE stream, over every transport -----------------------------------------------


@pytest.mark.parametrize("case", ["langgraph_graph", "tool_in_chain"])
async def test_sse_carries_every_event_in_the_json_form(
    url: str, namespace: str, case: str
) -> None:
    runnable, value, kwargs = CASES[case]()
    gateway = Gateway(url, namespace)
    async with serving(gateway) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        run_id = str(uuid.uuid4())
        # one client is there before the run starts (it asks to wait), one comes after
        early = asyncio.create_task(read_sse(client, f"/runs/{run_id}/events?wait={WAIT}"))
        await gateway.wait_for(lambda s: s.follows >= 1, WAIT)
        async with eventbus.Publisher(url, namespace) as pub:
            with anyio.fail_after(WAIT):
                local = [
                    eventbus.to_jsonable(e)
                    async for e in pub.astream_events(
                        runnable, value, config={"run_id": run_id}, **kwargs
                    )
                ]
        late = await read_sse(client, f"/runs/{run_id}/events")
        for got in (await early, late):
            assert [kind for kind, _, _ in got] == ["message"] * len(local) + ["end"]
            assert [data for _, _, data in got[:-1]] == local
            seqs = [int(i.partition(":")[0]) for _, i, _ in got[:-1]]
            assert seqs == list(range(1, len(local) + 1))
    await gateway.aclose()


async def test_sse_headers_filters_and_error_events(namespace: str) -> None:
    url = broker_url("memory")
    gateway = Gateway(url, namespace, include_traceback=True)

    async def explode(x: Any) -> Any:
        raise ValueError("the fake provider is down")

    async with serving(gateway) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        run_id, local = await publish(url, namespace, CASES["tool_in_chain"]()[0], 4)
        with anyio.fail_after(WAIT):
            response = await client.get(f"/runs/{run_id}/events")
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-length" not in response.headers
        assert response.text.startswith("retry: 1000\nid: 1:")

        def run_type(event: dict[str, Any]) -> str:
            return str(event["event"][3:].rsplit("_", 1)[0])

        only = await read_sse(client, f"/runs/{run_id}/events?include_types=tool,chat_model")
        assert [d["event"] for k, _, d in only if k == "message"] == [
            e["event"] for e in local if run_type(e) in ("tool", "chat_model")
        ]
        assert any(k == "message" for k, _, _ in only)
        excluded = await read_sse(
            client, f"/runs/{run_id}/events?exclude_types=tool&exclude_types=parser"
        )
        assert [d["event"] for k, _, d in excluded if k == "message"] == [
            e["event"] for e in local if run_type(e) not in ("tool", "parser")
        ]
        assert excluded[-1][0] == "end"

        failed, _ = await publish_failing(url, namespace, explode)
        got = await read_sse(client, f"/runs/{failed}/events")
        kind, _, data = got[-1]
        assert kind == "error"
        with anyio.fail_after(WAIT):
            raw = (await client.get(f"/runs/{failed}/events")).text
        last_block = raw.strip().split("\n\n")[-1]
        assert last_block.startswith("event: error\n")  # no id: a reconnect gets it again
        assert data["type"] == "RemoteRunError" and data["class"] == "ValueError"
        assert data["message"] == "the fake provider is down"
        assert "Traceback" in data["traceback"]  # configured: include_traceback=True
    await gateway.aclose()


async def publish_failing(url: str, namespace: str, fn: Any) -> tuple[str, None]:
    run_id = str(uuid.uuid4())
    async with eventbus.Publisher(url, namespace) as pub:
        with contextlib.suppress(ValueError), anyio.fail_after(WAIT):
            await pub.run(RunnableLambda(fn, name="explode"), {}, config={"run_id": run_id})
    return run_id, None


async def test_error_events_leave_out_the_traceback_by_default(namespace: str) -> None:
    url = broker_url("memory")
    gateway = Gateway(url, namespace)

    async def explode(x: Any) -> Any:
        raise ValueError("secret-path")

    async with serving(gateway) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        run_id, _ = await publish_failing(url, namespace, explode)
        kind, _, data = (await read_sse(client, f"/runs/{run_id}/events"))[-1]
    assert kind == "error" and data["class"] == "ValueError"
    assert "traceback" not in data
    await gateway.aclose()


# -- resume ---------------------------------------------------------------------------------


async def test_resume_after_cuts_at_random_points(url: str, namespace: str) -> None:
    rng = random.Random(1301)
    gateway = Gateway(url, namespace)
    async with serving(gateway) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        run_id, local = await publish(url, namespace, tokens(300), None)
        got: list[tuple[str, str, Any]] = []
        cuts = 0
        last: str | None = None
        while not got or got[-1][0] != "end":
            limit = rng.randint(1, 40)
            if last is None:
                part = await read_sse(client, f"/runs/{run_id}/events", limit=limit)
            elif cuts % 2:  # the header, as EventSource sends it
                part = await read_sse(
                    client, f"/runs/{run_id}/events", headers={"Last-Event-ID": last}, limit=limit
                )
            else:  # the query parameter, for clients that cannot set headers
                part = await read_sse(
                    client, f"/runs/{run_id}/events?last_event_id={last}", limit=limit
                )
            got.extend(part)
            ids = [i for _, i, _ in part if i]
            last = ids[-1] if ids else last
            cuts += 1
        assert cuts > 5
        # every event exactly once, in order, then the end
        assert [d for k, _, d in got if k == "message"] == local
        assert [k for k, _, _ in got].count("end") == 1
    await gateway.aclose()


# -- many clients, one slow -----------------------------------------------------------------


async def test_many_clients_and_one_slow_client(namespace: str) -> None:
    url = broker_url("memory")
    # big events and small socket buffers: a client that stops reading blocks its writes soon
    gateway = Gateway(
        url, namespace, client_buffer=20, slow_client_timeout=0.5, socket_send_buffer=32768
    )
    async with (
        serving(gateway) as base,
        httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=200)) as client,
    ):
        run_id, local = await publish(url, namespace, tokens(250, size=4096), None)
        path = f"/runs/{run_id}/events"
        host, port = base.removeprefix("http://").split(":")
        # the slow client: a tiny receive buffer, and it stops reading after the headers
        slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow.setblocking(False)
        loop = asyncio.get_running_loop()
        with anyio.fail_after(WAIT):
            await loop.sock_connect(slow, (host, int(port)))
            await loop.sock_sendall(
                slow,
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode(),
            )
            head = await loop.sock_recv(slow, 1024)
        assert head.startswith(b"HTTP/1.1 200")
        # meanwhile, 100 clients read the whole run, and the publisher goes on publishing
        readers = [asyncio.create_task(read_sse(client, path)) for _ in range(100)]
        next_run, next_local = await publish(url, namespace, tokens(50), None)
        results = await asyncio.gather(*readers)
        for got in results:
            assert [d for k, _, d in got if k == "message"] == local
            assert got[-1][0] == "end"
        # the slow client is cut off; when it reads again it finds what it was sent,
        # then the reason, and resumes from the last id it saw
        await gateway.wait_for(lambda s: s.follows == 0, WAIT)
        raw = bytearray(head)
        with anyio.fail_after(WAIT):
            while True:
                chunk = await loop.sock_recv(slow, 1 << 20)
                if not chunk:
                    break
                raw += chunk
        slow.close()
        text = raw.decode()
        assert "event: slow" in text and "reconnect with Last-Event-ID" in text
        assert gateway.stats.slow == 1
        ids = [line[4:] for line in text.splitlines() if line.startswith("id: ")]
        datas = [
            json.loads(line[6:])
            for line in text.split("event: slow")[0].splitlines()
            if line.startswith("data: ")
        ]
        assert 0 < len(ids) < len(local)
        rest = await read_sse(client, path, headers={"Last-Event-ID": ids[-1]})
        assert datas + [d for k, _, d in rest if k == "message"] == local
        assert rest[-1][0] == "end"
        # and the worker was never held up by it
        assert [d for k, _, d in await read_sse(client, f"/runs/{next_run}/events")][:-1] == (
            next_local
        )
    await gateway.aclose()


async def test_client_disconnect_stops_its_subscription(url: str, namespace: str) -> None:
    gateway = Gateway(url, namespace, ping_interval=0.2)
    release = asyncio.Event()
    run_id = str(uuid.uuid4())
    async with (
        serving(gateway) as base,
        httpx.AsyncClient(base_url=base, timeout=WAIT) as client,
        eventbus.Publisher(url, namespace) as pub,
    ):
        running = asyncio.create_task(pub.run(held(release), 1, config={"run_id": run_id}))
        # three clients, cut one by one
        streams = []
        for _ in range(3):
            cm = aconnect_sse(client, "GET", f"/runs/{run_id}/events?wait={WAIT}")
            with anyio.fail_after(WAIT):
                source = await cm.__aenter__()
                sse = source.aiter_sse()  # kept: dropping it would close the response
                first = await sse.__anext__()
            assert first.event == "message"
            streams.append((cm, sse))
        # three clients, one broker follow
        await gateway.wait_for(lambda s: s.follows == 1 and s.clients == 3, WAIT)
        for n, (cm, sse) in enumerate(streams):
            await sse.aclose()
            await cm.__aexit__(None, None, None)
            await gateway.wait_for(lambda s, n=n: s.clients == 2 - n, 1.0)
            # the follow stays while a client is left, and goes within a second of the last
            await gateway.wait_for(lambda s, n=n: s.follows == (1 if n < 2 else 0), 1.0)
        release.set()
        with anyio.fail_after(WAIT):
            await running
    await gateway.aclose()


async def test_idle_stream_gets_pings(namespace: str) -> None:
    url = broker_url("memory")
    gateway = Gateway(url, namespace, ping_interval=0.05)
    release = asyncio.Event()
    run_id = str(uuid.uuid4())
    async with (
        serving(gateway) as base,
        httpx.AsyncClient(base_url=base, timeout=WAIT) as client,
        eventbus.Publisher(url, namespace) as pub,
    ):
        running = asyncio.create_task(pub.run(held(release), 1, config={"run_id": run_id}))
        text = ""
        with anyio.fail_after(WAIT):
            async with client.stream("GET", f"/runs/{run_id}/events?wait={WAIT}") as response:
                async for chunk in response.aiter_text():
                    text += chunk
                    if text.count(": ping") >= 2 and not release.is_set():
                        release.set()  # now let the run end
                    if "event: end" in text:
                        break
        await running
    assert text.count(": ping") >= 2
    assert text.index(": ping") < text.index("event: end")
    await gateway.aclose()


# -- bad input ------------------------------------------------------------------------------


async def test_bad_input(namespace: str) -> None:
    url = broker_url("memory")
    calls: list[str] = []

    def authorize(request: Any, run_id: str) -> bool:
        calls.append(run_id)
        return request.headers.get("authorization") == "Bearer ok"

    gateway = Gateway(url, namespace, start_timeout=0.3, authorize=authorize)
    ok = {"Authorization": "Bearer ok"}
    async with (
        serving(gateway) as base,
        httpx.AsyncClient(base_url=base, headers=ok, timeout=WAIT) as client,
    ):
        run_id, _ = await publish(url, namespace, tokens(3), None)
        with anyio.fail_after(WAIT):
            unknown = await client.get(f"/runs/{uuid.uuid4()}/events")
            assert unknown.status_code == 404
            assert "nothing published within 0.3s" in unknown.json()["error"]
            for odd in ("not-a-uuid", "..%2F..%2Fetc", "%00", "r%C3%BCn", "x" * 300):
                response = await client.get(f"/runs/{odd}/events")
                assert response.status_code == 404, odd
                # (an encoded slash makes it another path: no route, 404 too)
                assert response.json()["error"] in ("not a run id (a UUID)", "not found")
            for bad in ("garbage", "12", ":0", "x:1", "1:"):
                response = await client.get(
                    f"/runs/{run_id}/events", headers={"Last-Event-ID": bad}
                )
                assert response.status_code == 400, bad
                assert "malformed Last-Event-ID" in response.json()["error"]
            response = await client.get(f"/runs/{run_id}/events?last_event_id=nope")
            assert response.status_code == 400
            denied = await client.get(
                f"/runs/{run_id}/events", headers={"Authorization": "Bearer no"}
            )
            assert denied.status_code == 403
            assert (await client.get("/healthz")).json()["status"] == "ok"
            status = (await client.get(f"/runs/{run_id}")).json()
            assert (status["run_id"], status["status"]) == (run_id, "success")
            runs = (await client.get("/runs")).json()["runs"]
            assert [r["run_id"] for r in runs] == [run_id]
            assert runs[0]["status"] == "ended"
    assert run_id in calls
    await gateway.aclose()


async def test_cors(namespace: str) -> None:
    url = broker_url("memory")
    gateway = Gateway(url, namespace, cors_origins=["https://app.example"])
    async with serving(gateway) as base, httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
        run_id, _ = await publish(url, namespace, tokens(3), None)
        with anyio.fail_after(WAIT):
            preflight = await client.options(
                f"/runs/{run_id}/events",
                headers={
                    "Origin": "https://app.example",
                    "Access-Control-Request-Method": "GET",
                    "Access-Control-Request-Headers": "last-event-id",
                },
            )
            assert preflight.status_code == 200
            assert preflight.headers["access-control-allow-origin"] == "https://app.example"
            assert "last-event-id" in preflight.headers["access-control-allow-headers"].lower()
            response = await client.get(
                f"/runs/{run_id}/events", headers={"Origin": "https://app.example"}
            )
            assert response.headers["access-control-allow-origin"] == "https://app.example"
            other = await client.get(f"/runs/{run_id}/events", headers={"Origin": "https://evil"})
            assert "access-control-allow-origin" not in other.headers
    await gateway.aclose()


async def test_gateway_mounts_in_fastapi_style_apps(namespace: str) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    url = broker_url("memory")
    gateway = Gateway(url, namespace)
    host_app = Starlette(routes=[Mount("/eventbus", app=gateway.app)])
    run_id, local = await publish(url, namespace, tokens(5), None)
    # a mounted app gets no lifespan of its own: the gateway connects on first use
    transport = httpx.ASGITransport(app=host_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        got = await read_sse(client, f"/eventbus/runs/{run_id}/events")
    assert [d for k, _, d in got if k == "message"] == local
    await gateway.aclose()


# -- LangGraph SDK --------------------------------------------------------------------------


async def test_langgraph_sdk_join_stream(url: str, namespace: str) -> None:
    from langgraph_sdk import get_client

    gateway = Gateway(url, namespace)
    runnable, value, _ = CASES["langgraph_graph"]()
    async with serving(gateway) as base:
        run_id = str(uuid.uuid4())
        async with eventbus.Publisher(url, namespace) as pub:
            with anyio.fail_after(WAIT):
                local = [
                    e
                    async for e in pub.astream_events(
                        runnable,
                        value,
                        config={"run_id": run_id},
                        stream_mode=["values", "updates", "custom", "messages", "debug"],
                    )
                ]
        chunks = [
            e["data"]["chunk"]
            for e in local
            if e["run_id"] == run_id and e["event"] == "on_chain_stream"
        ]
        expected = {
            mode: [eventbus.to_jsonable(c) for m, c in chunks if m == mode]
            for mode in ("values", "updates", "custom", "messages", "debug")
        }
        assert all(expected.values())
        client = get_client(url=base)
        try:
            for modes in (["updates"], ["custom", "messages-tuple"], ["values", "debug"]):
                with anyio.fail_after(WAIT):
                    joined = client.runs.join_stream("any-thread", run_id, stream_mode=modes)
                    parts = [p async for p in joined]
                assert parts[0].event == "metadata" and parts[0].data["run_id"] == run_id
                assert parts[-1].event == "end"
                for mode in modes:
                    name = "messages" if mode == "messages-tuple" else mode
                    assert [p.data for p in parts if p.event == name] == expected[name], mode
                names = {"messages" if m == "messages-tuple" else m for m in modes}
                assert {p.event for p in parts} == {"metadata", "end", *names}

            with anyio.fail_after(WAIT):
                events = [
                    p
                    async for p in client.runs.join_stream(
                        "any-thread", run_id, stream_mode="events"
                    )
                ]
            assert [p.data for p in events if p.event == "events"] == [
                eventbus.to_jsonable(e) for e in local
            ]
            # resume: everything after an id, and no metadata part again
            middle = events[len(events) // 2]
            with anyio.fail_after(WAIT):
                rest = [
                    p
                    async for p in client.runs.join_stream(
                        "any-thread", run_id, stream_mode="events", last_event_id=middle.id
                    )
                ]
            assert [p.data for p in rest] == [p.data for p in events[len(events) // 2 + 1 :]]
        finally:
            await client.aclose()
    await gateway.aclose()


async def test_langgraph_sdk_slow_client_is_dropped_and_resumes_by_itself(namespace: str) -> None:
    """A Python SDK client that stops reading on a finished run is dropped, and the SDK
    reconnects with Last-Event-ID by itself (a clean close would end it: the run is no
    longer running): every event once."""
    from langgraph_sdk import get_client

    url = broker_url("memory")
    gateway = Gateway(
        url, namespace, client_buffer=20, slow_client_timeout=0.3, socket_send_buffer=32768
    )
    run_id, local = await publish(url, namespace, tokens(400, size=4096), None)
    async with serving(gateway) as base:
        client = get_client(url=base)
        parts = []
        try:
            with anyio.fail_after(WAIT):
                async for part in client.runs.join_stream("t", run_id, stream_mode="events"):
                    parts.append(part)
                    if len(parts) == 3:
                        await gateway.wait_for(lambda s: s.slow == 1, WAIT)
        finally:
            await client.aclose()
    assert [p.data for p in parts if p.event == "events"] == local
    assert parts[-1].event == "end"
    await gateway.aclose()


@pytest.mark.parametrize("allow", [True, False], ids=["allow_cancel", "read_only"])
async def test_langgraph_sdk_cancel_on_disconnect(url: str, namespace: str, allow: bool) -> None:
    """A join client that asked for ``cancel_on_disconnect`` and leaves mid-run cancels
    the run when the gateway allows it (the worker's call raises RunCancelledError with
    the reason); a read-only gateway (the default) lets the run go on."""
    from langchain_core.callbacks.manager import adispatch_custom_event
    from langgraph_sdk import get_client

    release = asyncio.Event()

    async def ticks(x: Any) -> Any:
        for i in range(100_000):
            await adispatch_custom_event("tick", {"i": i})
            if release.is_set():
                break
            await asyncio.sleep(0.01)  # pacing a stream of events, not synchronising
        return x

    gateway = Gateway(url, namespace, allow_cancel=allow)
    run_id = str(uuid.uuid4())
    async with eventbus.Publisher(url, namespace) as pub, serving(gateway) as base:
        runnable = RunnableLambda(ticks, name="ticks")
        task = asyncio.create_task(pub.run(runnable, 7, config={"run_id": run_id}))
        client = get_client(url=base)
        seen = 0
        try:
            with anyio.fail_after(WAIT):
                async for part in client.runs.join_stream(
                    "t", run_id, stream_mode="events", cancel_on_disconnect=True
                ):
                    seen += part.event == "events"
                    if seen == 3:
                        break  # the client leaves mid-run
        finally:
            await client.aclose()
        assert seen == 3
        if allow:
            with pytest.raises(eventbus.RunCancelledError) as raised:
                await asyncio.wait_for(task, WAIT)
            assert raised.value.reason == "client disconnected"
            await gateway.wait_for(lambda s: s.cancels == 1, WAIT)
        else:
            # the client's going is seen (and would have asked for the cancel) first
            await gateway.wait_for(lambda s: s.clients == 0, WAIT)
            assert not gateway._cancels and gateway.stats.cancels == 0
            release.set()
            assert await asyncio.wait_for(task, WAIT) == 7
    await gateway.aclose()


# -- WebSocket ------------------------------------------------------------------------------


async def test_websocket_stream_resume_and_garbage(namespace: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    url = broker_url("memory")
    gateway = Gateway(url, namespace)
    async with serving(gateway) as base:
        run_id, local = await publish(url, namespace, tokens(30), None)
        ws_url = base.replace("http://", "ws://") + f"/runs/{run_id}/ws"

        async def receive_all(hello: Any) -> tuple[list[dict[str, Any]], int | None]:
            out: list[dict[str, Any]] = []
            with anyio.fail_after(WAIT):
                async with connect(ws_url) as ws:
                    await ws.send(hello if isinstance(hello, str) else json.dumps(hello))
                    with contextlib.suppress(ConnectionClosed):
                        async for message in ws:
                            out.append(msgspec.json.decode(message))
                    return out, ws.close_code

        got, code = await receive_all({})
        assert code == 1000
        assert [m["data"] for m in got if m["event"] == "message"] == local
        assert got[-1]["event"] == "end"
        resumed, _ = await receive_all({"last_event_id": got[9]["id"]})
        assert resumed == got[10:]
        filtered, _ = await receive_all({"include_names": ["tokens"], "exclude_tags": []})
        assert [m["data"] for m in filtered if m["event"] == "message"] == local

        for garbage in ("not json", "[1, 2]", '{"last_event_id": 5}', '{"last_event_id": "x"}',
                        '{"include_types": "tokens"}', "\x00\xff"):  # fmt: skip
            messages, code = await receive_all(garbage)
            assert code == 1008, garbage
            assert messages[-1]["event"] == "error"
            assert messages[-1]["data"]["type"] == "BadRequest"
        with anyio.fail_after(WAIT):
            async with connect(ws_url) as ws:
                await ws.send(b"\x00\x01binary")
                with contextlib.suppress(ConnectionClosed):
                    async for _ in ws:
                        pass
            assert ws.close_code == 1008
    assert gateway.stats.clients == 0
    await gateway.aclose()


async def test_websocket_slow_client_is_told_and_resumes_exactly(namespace: str) -> None:
    """A WebSocket client that stops reading: its buffer is bounded, it is disconnected
    with a ``slow`` message and close code 1013 it reads when it reads again, and resumes
    by the last id it got, exactly; the other clients and the worker go on meanwhile."""
    from websockets.asyncio.client import connect
    from websockets.client import ClientProtocol
    from websockets.frames import Close
    from websockets.uri import parse_uri

    url = broker_url("memory")
    gateway = Gateway(
        url, namespace, client_buffer=20, slow_client_timeout=0.5, socket_send_buffer=32768,
        send_timeout=WAIT,
    )  # fmt: skip
    async with serving(gateway) as base:
        run_id, local = await publish(url, namespace, tokens(250, size=4096), None)
        ws_url = base.replace("http://", "ws://") + f"/runs/{run_id}/ws"
        host, port = base.removeprefix("http://").split(":")
        loop = asyncio.get_running_loop()
        # the slow client: a raw socket with a tiny receive buffer, the WebSocket protocol
        # without I/O (websockets' sans-I/O client); it says hello, then stops reading
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        proto = ClientProtocol(parse_uri(ws_url))
        proto.send_request(proto.connect())
        with anyio.fail_after(WAIT):
            await loop.sock_connect(sock, (host, int(port)))
            await loop.sock_sendall(sock, b"".join(proto.data_to_send()))
            while proto.handshake_exc is None and not proto.events_received():
                proto.receive_data(await loop.sock_recv(sock, 1024))
        assert proto.handshake_exc is None
        proto.send_text(b"{}")
        await loop.sock_sendall(sock, b"".join(proto.data_to_send()))
        # it is cut off while it does not read; a fast client reads the whole run meanwhile
        await gateway.wait_for(lambda s: s.slow == 1, WAIT)
        async with connect(ws_url) as fast:
            await fast.send("{}")
            with anyio.fail_after(WAIT):
                quick = [msgspec.json.decode(m) async for m in fast]
        assert [m["data"] for m in quick if m["event"] == "message"] == local
        # now it reads: what was on its way, then the reason, then the close
        messages: list[Any] = []
        close: Close | None = None
        with anyio.fail_after(WAIT):
            while close is None:
                data = await loop.sock_recv(sock, 1 << 20)
                if not data:
                    break
                proto.receive_data(data)
                for frame in proto.events_received():
                    if frame.opcode.name == "TEXT":
                        messages.append(msgspec.json.decode(frame.data))
                    elif frame.opcode.name == "CLOSE":
                        close = Close.parse(frame.data)
                await loop.sock_sendall(sock, b"".join(proto.data_to_send()))
        sock.close()
        assert close is not None and close.code == 1013, close
        assert "last_event_id" in close.reason
        assert messages[-1]["event"] == "slow"
        assert messages[-1]["data"]["type"] == "SlowClient"
        assert "last_event_id" in messages[-1]["data"]["message"]
        got = messages[:-1]
        assert {m["event"] for m in got} == {"message"}
        # bounded: it got a part of the run, not all of it
        assert 0 < len(got) < len(local)
        async with connect(ws_url) as ws:
            await ws.send(json.dumps({"last_event_id": got[-1]["id"]}))
            with anyio.fail_after(WAIT):
                rest = [msgspec.json.decode(m) async for m in ws]
            assert ws.close_code == 1000
        assert [m["data"] for m in got + rest[:-1]] == local
        assert rest[-1]["event"] == "end"
        assert gateway.stats.slow == 1
    await gateway.aclose()


# -- the command line -----------------------------------------------------------------------


@pytest.mark.redis
async def test_eventbus_serve_command(namespace: str) -> None:
    url = broker_url("redis")
    run_id, local = await publish(url, namespace, tokens(20), None)
    proc = subprocess.Popen(  # noqa: ASYNC220 - the test owns this process
        [sys.executable, "-m", "eventbus", "serve", "--url", url, "-n", namespace, "--port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        with anyio.fail_after(WAIT):
            line = await asyncio.to_thread(proc.stderr.readline)
        assert "eventbus gateway: http://127.0.0.1:" in line, line
        base = line.split()[2].rstrip("/")
        async with httpx.AsyncClient(base_url=base, timeout=WAIT) as client:
            got = await read_sse(client, f"/runs/{run_id}/events")
        assert [d for k, _, d in got if k == "message"] == local
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()


async def test_langgraph_sdk_join_stream_with_subgraphs(namespace: str) -> None:
    from graphs import GRAPHS
    from langgraph_sdk import get_client

    url = broker_url("memory")
    gateway = Gateway(url, namespace)
    graph, value, kwargs = GRAPHS["subgraph_in_every_mode"]()
    run_id = str(uuid.uuid4())
    async with eventbus.Publisher(url, namespace) as pub:
        with anyio.fail_after(WAIT):
            local = [
                e
                async for e in pub.astream_events(
                    graph, value, config={"run_id": run_id}, subgraphs=True, **kwargs
                )
            ]
    chunks = [
        e["data"]["chunk"]
        for e in local
        if e["run_id"] == run_id and e["event"] == "on_chain_stream"
    ]
    # (namespace, mode, payload): the SDK's part names are "mode|ns1|ns2..."
    expected = [
        ("|".join((mode, *ns)), eventbus.to_jsonable(payload))
        for ns, mode, payload in chunks
        if mode in ("updates", "custom", "messages")
    ]
    assert any("|" in name for name, _ in expected)  # the subgraph's own parts are there
    async with serving(gateway) as base:
        client = get_client(url=base)
        try:
            with anyio.fail_after(WAIT):
                joined = client.runs.join_stream(
                    "t", run_id, stream_mode=["updates", "custom", "messages-tuple"]
                )
                parts = [(p.event, p.data) async for p in joined]
        finally:
            await client.aclose()
    assert parts[1:-1] == expected
    await gateway.aclose()
