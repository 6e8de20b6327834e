"""SyncPublisher: a :class:`~eventbus.Publisher` for synchronous code, on an event loop
in a background thread."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

from anyio.from_thread import BlockingPortal, start_blocking_portal
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable, RunnableConfig

from ._exceptions import PublishError
from ._langchain import StreamEvent
from ._publisher import Publisher, PublisherStats

__all__ = ["SyncPublisher"]


class SyncPublisher:
    """A :class:`Publisher` for synchronous code (Celery, RQ, threads).

    It runs the publisher, and the runnables given to :meth:`run`, on an event loop in a
    background thread::

        with eventbus.SyncPublisher("redis://localhost:6379/0", namespace="myapp") as pub:
            output = pub.run(chain, {"topic": "bees"})

    Takes the same arguments as :class:`Publisher`.
    """

    def __init__(self, url: str, namespace: str = "default", **options: Any) -> None:
        self._publisher = Publisher(url, namespace, **options)
        self._portal_cm: contextlib.AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._lock = threading.Lock()

    @property
    def stats(self) -> PublisherStats:
        return self._publisher.stats

    @property
    def last_run_id(self) -> str | None:
        return self._publisher.last_run_id

    def connect(self) -> SyncPublisher:
        """Start the background loop and connect. Raises what :meth:`Publisher.connect` raises."""
        self._portal_cm = start_blocking_portal()
        self._portal = self._portal_cm.__enter__()
        try:
            self._portal.call(self._publisher.connect)
        except BaseException:
            self._portal_cm.__exit__(None, None, None)
            self._portal = self._portal_cm = None
            raise
        return self

    def __enter__(self) -> SyncPublisher:
        return self.connect()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush, close the publisher and stop the background loop."""
        if self._portal is None or self._portal_cm is None:
            return
        try:
            self._portal.call(self._publisher.aclose)
        finally:
            self._portal_cm.__exit__(None, None, None)
            self._portal = self._portal_cm = None

    def _call(self, fn: Any, *args: Any) -> Any:
        if self._portal is None:
            raise PublishError("the publisher is not open (use `with SyncPublisher(...)`)")
        return self._portal.call(fn, *args)

    def run(
        self,
        runnable: Runnable[Any, Any],
        input: Any,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> Any:
        """Blocking :meth:`Publisher.run` (the runnable runs on the background loop)."""

        async def go() -> Any:
            return await self._publisher.run(runnable, input, config, **kwargs)

        return self._call(go)

    def stream_events(
        self,
        runnable: Runnable[Any, Any],
        input: Any,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> Iterator[StreamEvent]:
        """Blocking :meth:`Publisher.astream_events`."""
        if self._portal is None:
            raise PublishError("the publisher is not open (use `with SyncPublisher(...)`)")
        cm = self._portal.wrap_async_context_manager(
            _agen_cm(self._publisher.astream_events(runnable, input, config, **kwargs))
        )
        with cm as agen:
            while True:
                try:
                    yield self._portal.call(agen.__anext__)
                except StopAsyncIteration:
                    return

    def callback_handler(self) -> BaseCallbackHandler:
        """See :meth:`Publisher.callback_handler`; call :meth:`flush` after the run."""
        return self._publisher.callback_handler()

    def flush(self) -> None:
        """Block until everything emitted so far is on the broker."""
        self._call(self._publisher.flush)


@contextlib.asynccontextmanager
async def _agen_cm(agen: Any) -> AsyncIterator[Any]:
    try:
        yield agen
    finally:
        await agen.aclose()
