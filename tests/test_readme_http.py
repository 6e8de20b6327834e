"""The README's HTTP examples, run as written (only the broker URL, the server's address and
the run id are put in): the FastAPI mount, the browser ``EventSource`` snippet (in headless
Chromium), ``join_stream`` with the Python and the JavaScript LangGraph SDK, and verifying
a webhook."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import broker_url
from runnables import CASES
from test_browser import CHROMIUM, HAVE_CHROMIUM, TOKENS, Browser, GatedChat
from test_http import publish, read_sse, serving, tokens
from test_js_sdk import JS, _node
from test_webhooks import SECRET
from test_webhooks import serving as serving_app

import eventbus
from eventbus._http import Gateway

pytestmark = pytest.mark.anyio

WAIT = 60
README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def block(lang: str, containing: str) -> str:
    """The one fenced ``lang`` block of the README that contains ``containing``."""
    found = [b for b in re.findall(rf"```{lang}\n(.*?)```", README, re.DOTALL) if containing in b]
    assert len(found) == 1, (lang, containing, len(found))
    return str(found[0])


def put(code: str, old: str, new: str) -> str:
    assert old in code, old
    return code.replace(old, new)


def uvicorn_serving(app: Any) -> contextlib.AbstractAsyncContextManager[str]:
    """Any ASGI app on uvicorn, its lifespan on."""
    return serving_app(app, lifespan="on")


async def test_fastapi_mount(namespace: str) -> None:
    url = broker_url("memory")
    code = put(
        block("python", 'app.mount("/eventbus"'),
        '"redis://localhost:6379/0", namespace="myapp"',
        f"{url!r}, namespace={namespace!r}",
    )
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    run_id, local = await publish(url, namespace, tokens(5), None)
    ok = {"Authorization": "Bearer s3cret"}
    async with (
        uvicorn_serving(scope["app"]) as base,
        httpx.AsyncClient(base_url=base, timeout=WAIT) as client,
    ):
        got = await read_sse(client, f"/eventbus/runs/{run_id}/events", headers=ok)
        assert [d for k, _, d in got if k == "message"] == local
        with anyio.fail_after(WAIT):
            denied = await client.get(f"/eventbus/runs/{run_id}/events")
            assert denied.status_code == 403
            cors = await client.get(
                f"/eventbus/runs/{run_id}/events",
                headers={**ok, "Origin": "https://app.example.com"},
            )
        assert cors.headers["access-control-allow-origin"] == "https://app.example.com"
    # the app's lifespan closed the gateway's broker connection
    assert scope["gateway"]._connected is False


async def test_python_sdk_join_stream(namespace: str) -> None:
    url = broker_url("memory")
    gateway = Gateway(url, namespace)
    run_id, _ = await publish(url, namespace, *CASES["langgraph_graph"]()[:2],
                              stream_mode=["updates", "custom", "messages"])  # fmt: skip
    async with serving(gateway) as base:
        code = put(block("python", "client.runs.join_stream("), "http://localhost:8000", base)
        # (the client it made is handed back, to be closed)
        code = "async def example(run_id, print):\n" + textwrap.indent(code, "    ")
        code += "    return client\n"
        scope: dict[str, Any] = {}
        exec(compile(code, "README.md", "exec"), scope)
        out = io.StringIO()
        with anyio.fail_after(WAIT):
            client = await scope["example"](run_id, lambda *a: print(*a, file=out))
        await client.aclose()
    events = [line.split(" ", 1)[0] for line in out.getvalue().splitlines()]
    assert events[0] == "metadata" and events[-1] == "end"
    assert {"updates", "messages"} <= set(events) <= {"metadata", "updates", "messages", "end"}
    await gateway.aclose()


async def test_js_sdk_join_stream(namespace: str) -> None:
    node = _node()
    url = broker_url("memory")
    gateway = Gateway(url, namespace)
    run_id, _ = await publish(url, namespace, *CASES["langgraph_graph"]()[:2],
                              stream_mode=["updates", "custom", "messages"])  # fmt: skip
    async with serving(gateway) as base:
        code = put(block("js", "client.runs.joinStream("), "http://localhost:8000", base)
        # an ES module next to tests/js/node_modules, which it imports from
        script = JS / f"readme-{uuid.uuid4().hex[:8]}.mjs"
        script.write_text(f"const runId = {json.dumps(run_id)};\n{code}")
        try:
            proc = await asyncio.create_subprocess_exec(
                node, str(script), cwd=JS, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            with anyio.fail_after(WAIT):
                stdout, stderr = await proc.communicate()
        finally:
            script.unlink()
    assert proc.returncode == 0, stderr.decode()
    lines = stdout.decode().splitlines()
    events = [line.split(" ", 1)[0] for line in lines]
    assert events[0] == "metadata" and events[-1] == "end"
    assert {"updates", "messages"} <= set(events) <= {"metadata", "updates", "messages", "end"}
    message = next(line for line in lines if line.startswith("messages "))
    chunk, metadata = json.loads(message.split(" ", 1)[1])  # [message, metadata], as LangGraph's
    assert chunk["type"] == "AIMessageChunk" and "langgraph_node" in metadata
    await gateway.aclose()


async def test_browser_event_source_snippet(namespace: str) -> None:
    if not HAVE_CHROMIUM:
        message = f"needs Debian's chromium package at {CHROMIUM} (bash .ci/chromium.sh)"
        if os.environ.get("EVENTBUS_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Mount, Route

    url = broker_url("memory")
    gateway = Gateway(url, namespace)
    run_id = str(uuid.uuid4())
    snippet = block("js", "new EventSource(")
    page = (
        '<pre id="output"></pre><script>\n'
        f'const runId = {json.dumps(run_id)}; const output = document.getElementById("output");\n'
        f"{snippet}</script>"
    )

    async def index(request: Any) -> HTMLResponse:
        return HTMLResponse(page)

    app = Starlette(routes=[Route("/", index), Mount("/eventbus", gateway.app)])
    gate = asyncio.Event()
    gate.set()
    model = GatedChat(gate=gate)
    browser = Browser()
    async with uvicorn_serving(app) as base, eventbus.Publisher(url, namespace) as pub:
        try:
            with anyio.fail_after(WAIT):
                await browser.start()
                # the page is there first: it waits (?wait=30) for the run to start
                await browser.call("Page.navigate", url=f"{base}/")
                await browser.until("typeof es !== 'undefined'")
                await pub.run(model, "go", config={"run_id": run_id})
                await browser.until("es.readyState === EventSource.CLOSED")  # the `end` event
                text = await browser.evaluate("output.textContent")
        finally:
            await browser.close()
    assert text == "".join(TOKENS)
    await gateway.aclose()


async def test_verifying_a_webhook(namespace: str) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from eventbus._webhooks import WebhookForwarder

    url = broker_url("memory")
    code = compile(block("python", "Webhook(WEBHOOK_SECRET).verify"), "README.md", "exec")
    handled: list[tuple[str, Any]] = []
    finished: list[tuple[str, str, Any]] = []
    refused = 0

    async def hook(request: Request) -> Response:
        nonlocal refused
        scope = {
            "WEBHOOK_SECRET": SECRET,
            "body": await request.body(),
            "headers": dict(request.headers),
            "handle": lambda run_id, event: handled.append((run_id, event)),
            "finished": lambda run_id, kind, error: finished.append((run_id, kind, error)),
        }
        if request.query_params.get("tamper"):
            scope["body"] += b" "
        try:
            exec(code, scope)
        except Exception:
            refused += 1
            return Response(status_code=400)
        return Response(status_code=204)

    run_id, local = await publish(url, namespace, tokens(4), None)
    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with uvicorn_serving(app) as base:
        forwarder = WebhookForwarder(url, namespace, group="readme", to=f"{base}/hook",
                                     secret=SECRET, start="first")  # fmt: skip
        tampered = WebhookForwarder(url, namespace, group="tampered", to=f"{base}/hook?tamper=1",
                                    secret=SECRET, start="first", max_attempts=1)  # fmt: skip
        tasks = [asyncio.create_task(f.run()) for f in (forwarder, tampered)]
        try:
            await forwarder.wait_for(lambda s: s.delivered == len(local) + 1, WAIT)
            await tampered.wait_for(lambda s: s.dead_letters == len(local) + 1, WAIT)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    assert [event for _, event in handled] == local
    assert finished == [(run_id, "end", None)]
    assert refused == len(local) + 1  # every tampered body raised
