"""``Publisher.run`` without LangChain's event queue: the publisher drives the runnable as
``astream_events(version="v2")`` does (``langchain_core.tracers.event_stream.
_astream_events_implementation_v2``), with LangChain's own v2 handler, but each event is
handed to the publisher at the callback instead of through the handler's in-memory stream
and the generator that reads it (a queue hop, a task switch and a generator step per event:
about a tenth of what a LangGraph run costs per event).

What v2 does to the stream is kept: the filters, the first yielded event's ``data["input"]``
set to the run's input, ``data["input"]`` taken off the end event of that event's run,
nothing after the run's task was cancelled, events of threads (sync tools, sync chains run
in executors) in the order they were sent. Runnables whose ``astream_events`` is not
LangChain's own (``RunnableEach``, user subclasses) take the generator path
(:func:`direct_target` says which)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.callbacks.base import BaseCallbackManager
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.tracers.event_stream import _AstreamEventsCallbackHandler

from ._langchain import StreamEvent

__all__ = ["DirectHandler", "add_handler", "direct_target"]

_FILTERS = (
    "include_names",
    "include_types",
    "include_tags",
    "exclude_names",
    "exclude_types",
    "exclude_tags",
)

# (whose astream_events is Runnable's v2 implementation, unchanged)
_PLAIN = (Runnable.astream_events, BaseChatModel.astream_events)
# what this module copies is langchain-core's v2 as it is since Runnable has this (older
# releases, which pyproject.toml admits, keep astream_events' own path)
_V1_V2 = getattr(Runnable, "_astream_events_v1_v2", None)


def direct_target(
    runnable: Runnable[Any, Any], config: RunnableConfig, kwargs: dict[str, Any]
) -> tuple[Runnable[Any, Any], RunnableConfig, dict[str, Any], dict[str, Any]] | None:
    """What ``runnable.astream_events(input, config, version="v2", **kwargs)`` runs: the
    runnable whose ``astream`` v2 drives, its config, ``astream``'s keyword arguments and
    the filters; None when that is not LangChain's own v2 implementation."""
    if _V1_V2 is None:
        return None
    kwargs = dict(kwargs)
    # RunnableBinding.astream_events forwards to its bound runnable with its config and
    # keyword arguments merged in (``with_config``, ``bind``, ``with_retry``'s ... )
    while type(runnable).astream_events is RunnableBinding.astream_events:
        binding = runnable
        assert isinstance(binding, RunnableBinding)
        kwargs = {**binding.kwargs, **kwargs}
        config = binding._merge_configs(config)
        runnable = binding.bound
    if kwargs.pop("version", "v2") != "v2":
        return None
    method = type(runnable).astream_events
    if _is_pregels(method):
        kwargs.pop("transformers", None)  # (v3's only: for v2 Pregel drops it)
    elif method not in _PLAIN:
        return None
    if getattr(type(runnable), "_astream_events_v1_v2", None) is not _V1_V2:
        return None
    if method is BaseChatModel.astream_events:
        kwargs["stop"] = kwargs.get("stop")  # (it passes stop on, None or not)
    filters = {k: kwargs.pop(k) for k in _FILTERS if k in kwargs}
    return runnable, config, kwargs, filters


def _is_pregels(method: Any) -> bool:
    """LangGraph's (not imported here: LangGraph is optional), which hands v2 on to
    Runnable's."""
    return (
        getattr(method, "__module__", None) == "langgraph.pregel.main"
        and getattr(method, "__qualname__", None) == "Pregel.astream_events"
    )


def _never() -> bool:
    return False


def add_handler(config: RunnableConfig, handler: DirectHandler) -> None:
    """Add ``handler`` to ``config``'s callbacks, as v2 adds its event streamer.

    Raises:
        ValueError: the callbacks are neither a list nor a callback manager (as v2 does).
    """
    callbacks = config.get("callbacks")
    if callbacks is None:
        config["callbacks"] = [handler]
    elif isinstance(callbacks, list):
        config["callbacks"] = [*callbacks, handler]
    elif isinstance(callbacks, BaseCallbackManager):
        callbacks = callbacks.copy()
        callbacks.add_handler(handler, inherit=True)
        config["callbacks"] = callbacks
    else:
        msg = (  # type: ignore[unreachable]
            f"Unexpected type for callbacks: {callbacks}."
            "Expected None, list or AsyncCallbackManager."
        )
        raise ValueError(msg)


class DirectHandler(_AstreamEventsCallbackHandler):
    """LangChain's v2 event-stream handler for one root run, handing each event that
    passes the filters, patched as v2 patches it, to ``emit`` on the publisher's loop.

    ``emit(event)`` is called at the callback when LangChain calls the handler on
    ``loop``; an event sent from another thread (a sync step run in an executor) is
    emitted on the loop, in order with the rest, as v2 hands it to its consumer: what
    is published is the event as v2's consumer would see it, and the encoding stays on
    the loop's thread.
    """

    def __init__(
        self,
        value: Any,
        loop: asyncio.AbstractEventLoop,
        emit: Callable[[StreamEvent], None],
        **filters: Any,
    ) -> None:
        super().__init__(**filters)
        self._value = value
        self._loop = loop
        self._emit = emit
        self._first_sent = False
        self._first_run_id: Any = None
        self._queued = 0  # events sent from other threads, not emitted on the loop yet
        self._lock = threading.Lock()
        #: the driving task (events sent once it is being cancelled are not v2's)
        self.task: asyncio.Task[Any] | None = None
        #: its cancel requests when the run started (a task may carry one it swallowed)
        self.cancelling = 0
        #: what v2's generator would have raised patching an event (the run then fails)
        self.error: BaseException | None = None
        self.closed = False
        #: (the publisher's) whether its unpublished bytes are over budget, and the wait
        #: for the writer to catch up: a run is paused at the callback, in the task that
        #: produces the events (a LangGraph node streaming tokens yields no root chunk
        #: until it returns)
        self.over_budget: Callable[[], bool] = _never
        self.wait_budget: Callable[[], Awaitable[None]] | None = None

    async def _pause(self) -> None:
        if self.wait_budget is not None and asyncio._get_running_loop() is self._loop:
            await self.wait_budget()

    async def on_llm_new_token(self, *args: Any, **kwargs: Any) -> None:
        await super().on_llm_new_token(*args, **kwargs)
        if self.over_budget():
            await self._pause()

    async def on_custom_event(self, *args: Any, **kwargs: Any) -> None:
        await super().on_custom_event(*args, **kwargs)
        if self.over_budget():
            await self._pause()

    def _send(self, event: Any, event_type: str) -> None:
        if self.closed or not self.root_event_filter.include_event(event, event_type):
            return
        # (asyncio's C helper: None off a loop, no exception raised and caught per event)
        on_loop = asyncio._get_running_loop() is self._loop
        task = self.task
        if on_loop and task is not None and task.cancelling() > self.cancelling:
            return  # v2's consumer is gone from here on: it never sees these
        try:
            # v2's generator does this to each event it yields
            if not self._first_sent:
                self._first_sent = True
                event["data"]["input"] = self._value
                self._first_run_id = event["run_id"]
            elif (
                event["run_id"] == self._first_run_id
                and event["event"].endswith("_end")
                and "input" in event["data"]
            ):
                del event["data"]["input"]
        except Exception as exc:  # (v2's iterator raises it there: nothing after)
            self.error = exc
            self.closed = True
            return
        if on_loop and not self._queued:
            self._emit(event)
            return
        with self._lock:
            self._queued += 1
        if on_loop:
            self._loop.call_soon(self._emit_queued, event)
        else:
            self._loop.call_soon_threadsafe(self._emit_queued, event)

    def _emit_queued(self, event: StreamEvent) -> None:
        with self._lock:
            self._queued -= 1
        if not self.closed:
            self._emit(event)

    async def drain(self) -> None:
        """Wait until the events sent from other threads are emitted."""
        if self._queued:
            done = self._loop.create_future()
            # (the loop runs its callbacks in order: this one comes after theirs)
            self._loop.call_soon(done.set_result, None)
            await done
