"""The callback handler that turns plain ``invoke``/``ainvoke``/``stream`` calls into v2
events, by reusing LangChain's own event-stream handler (imported by publishers only:
LangChain's tracers cost a subscriber's start-up half a second)."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from langchain_core.tracers.event_stream import _AstreamEventsCallbackHandler

from ._langchain import StreamEvent

__all__ = ["ForwardingHandler", "RunSink"]


class RunSink(Protocol):
    """Where :class:`ForwardingHandler` sends the root runs it sees (called from whatever
    thread LangChain calls the handler in)."""

    def start(self, root: str) -> None:
        """A root run begins."""

    def event(self, root: str, event: StreamEvent) -> None:
        """A v2 StreamEvent of the root run ``root``."""

    def end(self, root: str) -> None:
        """The root run finished."""

    def error(self, root: str, error: BaseException) -> None:
        """The root run raised ``error``."""


class ForwardingHandler(_AstreamEventsCallbackHandler):
    """LangChain's own v2 event-stream handler, forwarding each event to ``sink`` instead
    of its in-memory queue, with v2's root-event patches applied."""

    def __init__(self, sink: RunSink) -> None:
        super().__init__()
        self._sink = sink
        self._roots: set[str] = set()

    def _send(self, event: Any, event_type: str) -> None:
        run_id = event["run_id"]
        parents = event.get("parent_ids") or []
        root = parents[0] if parents else run_id
        if not parents and event["event"].endswith("_start") and run_id not in self._roots:
            self._roots.add(run_id)
            self._sink.start(run_id)
        if root not in self._roots:
            return
        if not parents and event["event"].endswith("_end"):
            event["data"].pop("input", None)  # as v2 does for the root's end event
            self._sink.event(root, event)
            self._roots.discard(root)
            self._sink.end(root)
            return
        self._sink.event(root, event)

    def _root_error(self, error: BaseException, run_id: uuid.UUID, parent_run_id: Any) -> None:
        rid = str(run_id)
        if parent_run_id is None and rid in self._roots:
            self._roots.discard(rid)
            self._sink.error(rid, error)

    async def on_chain_error(
        self, error: BaseException, *, run_id: uuid.UUID, parent_run_id: Any = None, **kw: Any
    ) -> None:
        self._root_error(error, run_id, parent_run_id)

    async def on_llm_error(
        self, error: BaseException, *, run_id: uuid.UUID, parent_run_id: Any = None, **kw: Any
    ) -> None:
        self._root_error(error, run_id, parent_run_id)

    async def on_retriever_error(
        self, error: BaseException, *, run_id: uuid.UUID, parent_run_id: Any = None, **kw: Any
    ) -> None:
        self._root_error(error, run_id, parent_run_id)

    async def on_tool_error(
        self, error: BaseException, *, run_id: uuid.UUID, parent_run_id: Any = None, **kw: Any
    ) -> None:
        await super().on_tool_error(error, run_id=run_id, parent_run_id=parent_run_id, **kw)
        self._root_error(error, run_id, parent_run_id)
