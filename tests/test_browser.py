"""The gateway's page in a real headless Chromium (Debian's ``chromium``, driven over the
DevTools protocol): it follows a run with ``EventSource``; the test cuts every connection
mid-run (a TCP proxy between the browser and the gateway), the page reconnects by itself
with ``Last-Event-ID``, and shows every token once and in order. A screenshot is saved
to ``$EVENTBUS_TEST_ARTIFACTS`` (default ``.artifacts/`` in the repository)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import broker_url
from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import RunnableLambda
from test_http import serving

import eventbus
from eventbus._http import Gateway

pytestmark = pytest.mark.anyio

WAIT = 60
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
ARTIFACTS = Path(
    os.environ.get("EVENTBUS_TEST_ARTIFACTS") or Path(__file__).parent.parent / ".artifacts"
)
TOKENS = [f"tok{i:03d} " for i in range(60)]


class GatedChat(BaseChatModel):
    """Streams TOKENS; halfway it waits for the test (the connection is cut meanwhile)."""

    gate: Any = None

    @property
    def _llm_type(self) -> str:
        return "gated"

    def _generate(self, messages: list[BaseMessage], *a: Any, **k: Any) -> ChatResult:
        raise NotImplementedError

    async def _astream(
        self, messages: list[BaseMessage], *a: Any, **k: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for i, token in enumerate(TOKENS):
            if i == len(TOKENS) // 2:
                await self.gate.wait()
            yield ChatGenerationChunk(message=AIMessageChunk(content=token))


class Proxy:
    """A TCP proxy that can cut every connection it carries."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, log: bool) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    if log:
                        self.requests.append(data)
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(OSError):
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))

    def cut(self) -> None:
        for writer in self.writers:
            with contextlib.suppress(OSError):
                writer.transport.abort()
        self.writers.clear()


class Browser:
    """Headless Chromium over the DevTools protocol (a WebSocket)."""

    def __init__(self) -> None:
        self.profile = tempfile.mkdtemp(prefix="eventbus-chromium-")
        self.proc = subprocess.Popen(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--remote-debugging-port=0",
                f"--user-data-dir={self.profile}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ws: Any = None
        self.ids = 0

    async def start(self) -> None:
        from websockets.asyncio.client import connect

        assert self.proc.stderr is not None
        while True:
            line = await asyncio.to_thread(self.proc.stderr.readline)
            assert line, "chromium exited before it listened"
            if "DevTools listening on" in line:
                break
        port = int(line.split("ws://")[1].split("/")[0].split(":")[1])
        async with httpx.AsyncClient() as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        page = next(t for t in targets if t["type"] == "page")
        self.ws = await connect(page["webSocketDebuggerUrl"], max_size=None)

    async def call(self, method: str, **params: Any) -> Any:
        self.ids += 1
        await self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            message = json.loads(await self.ws.recv())
            if message.get("id") == self.ids:
                assert "error" not in message, message
                return message["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def until(self, condition: str) -> None:
        """Wait (in the page, bounded by the caller) until the JS ``condition`` holds."""
        await self.evaluate(
            "new Promise((resolve) => { const t = setInterval(() => { "
            f"if ({condition}) {{ clearInterval(t); resolve(true); }} }}, 20); }})"
        )

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        self.proc.terminate()
        await asyncio.to_thread(self.proc.wait, 30)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self.profile, ignore_errors=True)


def _save(name: str, data: bytes) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / name).write_bytes(data)


async def test_page_shows_every_token_once_across_a_cut(namespace: str) -> None:
    if not HAVE_CHROMIUM:
        message = "needs Debian's chromium package (bash .ci/chromium.sh)"
        if os.environ.get("EVENTBUS_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    url = broker_url("memory")
    gateway = Gateway(url, namespace, page=True, retry_ms=200)
    gate = asyncio.Event()
    model = GatedChat(gate=gate)

    async def work(x: Any) -> Any:
        await adispatch_custom_event("progress", {"type": "progress", "current": 1, "total": 2})
        message = await model.ainvoke(x)
        await adispatch_custom_event("progress", {"type": "progress", "current": 2, "total": 2})
        return message.content

    run_id = str(uuid.uuid4())
    browser = Browser()
    async with serving(gateway) as base, eventbus.Publisher(url, namespace) as pub:
        port = int(base.rsplit(":", 1)[1])
        proxy = Proxy(port)
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        proxied = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        running = asyncio.create_task(
            pub.run(RunnableLambda(work, name="work"), "go", config={"run_id": run_id})
        )
        try:
            with anyio.fail_after(WAIT):
                await browser.start()
                await browser.call("Page.navigate", url=f"{proxied}/?run={run_id}")
                half = len(TOKENS) // 2
                await browser.until(
                    f"window.eventbusState && eventbusState.tokens.length >= {half}"
                )
                proxy.cut()  # every connection, mid-run
                await browser.until("eventbusState.status === 'reconnecting'")
                gate.set()  # the second half is published while the page is away
                await running
                await browser.until("eventbusState.status === 'end'")
                state = await browser.evaluate("eventbusState")
                text = await browser.evaluate("document.getElementById('tokens').textContent")
                bars = await browser.evaluate("document.getElementById('progress').textContent")
                shot = await browser.call("Page.captureScreenshot", format="png")
        finally:
            gate.set()
            await browser.close()
            server.close()
            proxy.cut()
            with contextlib.suppress(Exception):
                await running
    _save("browser-follow.png", base64.b64decode(shot["data"]))
    assert state["tokens"] == TOKENS  # every token once, in order
    assert text == "".join(TOKENS)
    assert state["connections"] >= 2  # it did reconnect
    seqs = [int(i.partition(":")[0]) for i in state["ids"]]
    assert seqs == list(range(1, len(seqs) + 1))  # no event twice, none missing
    assert "progress: 2/2" in bars
    resumed = [r for r in proxy.requests if b"/events" in r and b"last-event-id:" in r.lower()]
    assert resumed, "the reconnection did not send Last-Event-ID"
    await gateway.aclose()
