"""A broker that goes away while a worker publishes: ``run()`` and ``flush()`` raise
``PublishError`` once the transport's ``publish_timeout`` is spent.

The broker itself is shared (other tests, other test runs), so it is never stopped: the
publisher reaches it through a TCP proxy owned by the test, and the test cuts the proxy.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
from _proxy import TcpProxy
from conftest import broker_url
from langchain_core.runnables import RunnableLambda

import eventbus

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(90)]

BROKERS = [
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
]
WAIT = 45  # publish_timeout (2 s) plus reconnect back-off, on a loaded machine


def _through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the proxy's, and a short publish_timeout."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    netloc_new = f"{netloc[0]}@{host}" if len(netloc) == 2 else host
    query = "&".join(q for q in (parts.query, "publish_timeout=2") if q)
    return urlunsplit((parts.scheme, netloc_new, parts.path, query, parts.fragment))


@pytest.mark.parametrize("kind", BROKERS)
async def test_run_and_flush_raise_publish_error_when_the_broker_is_gone(
    kind: str, namespace: str
) -> None:
    url = broker_url(kind)
    parts = urlsplit(url)
    default_port = {"redis": 6379, "rabbitmq": 5672}[kind]
    first_id, second_id = str(uuid.uuid4()), str(uuid.uuid4())
    reached = asyncio.Event()
    release = asyncio.Event()

    async def step(x: Any) -> Any:
        reached.set()
        await release.wait()
        return x

    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    async with (
        proxy,
        eventbus.Publisher(_through(url, proxy.port), namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        # through the proxy, a run is published whole
        assert await pub.run(RunnableLambda(lambda x: x + 1), 1, config={"run_id": first_id})
        with anyio.fail_after(WAIT):
            events = [e async for e in sub.astream_events(first_id)]
        assert [e["event"] for e in events] == ["on_chain_start", "on_chain_stream",
                                                "on_chain_end"]  # fmt: skip
        assert proxy.connections >= 1

        # the broker goes away in the middle of the second run
        run = asyncio.create_task(pub.run(RunnableLambda(step), 2, config={"run_id": second_id}))
        with anyio.fail_after(WAIT):
            await reached.wait()
        await proxy.cut()
        release.set()
        with anyio.fail_after(WAIT), pytest.raises(eventbus.PublishError):
            await run
        # a failed batch fails its own run, not the publisher (issue 11): a new run tries
        # the broker again, and raises because it is still gone
        assert pub.stats.failed_batches >= 1
        with anyio.fail_after(WAIT), pytest.raises(eventbus.PublishError):
            await pub.run(RunnableLambda(lambda x: x), 3)
        # and flush() raises for records published outside run(): a callback handler's
        handler = pub.callback_handler()
        await RunnableLambda(lambda x: x).ainvoke(4, config={"callbacks": [handler]})
        with anyio.fail_after(WAIT), pytest.raises(eventbus.PublishError):
            await pub.flush()
