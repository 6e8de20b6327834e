"""Everything eventbus knows about LangChain and LangGraph, in one place.

* which LangChain / LangGraph classes the codec may rebuild (the allowlist);
* how ``astream_events(version="v2")`` filters and patches events (reproduced for
  subscribers, who filter the full published stream);
* (in :mod:`eventbus._lc_handler`) a callback handler that turns plain
  ``invoke``/``ainvoke``/``stream`` calls into the same v2 events.

LangChain itself is imported when it is needed: its classes are registered with the codec
the first time one is encoded or a value of one is decoded (a follower of a run of plain
values never imports it), and when a publisher starts (:func:`install_langchain`).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from typing import Any, cast

from . import _builtin_types, _registry
from ._values import Unrepresentable

__all__ = [
    "EventFilter",
    "filter_type",
    "install_langchain",
    "lc_classes",
    "new_run_id",
]

StreamEvent = dict[str, Any]


@functools.cache
def lc_classes() -> list[type]:
    """The LangChain classes the codec may rebuild (the allowlist; imports LangChain)."""
    from langchain_core import agents, documents, messages, outputs, prompt_values

    return [
        # messages and their chunks
        messages.BaseMessage,
        messages.BaseMessageChunk,
        messages.AIMessage,
        messages.AIMessageChunk,
        messages.HumanMessage,
        messages.HumanMessageChunk,
        messages.SystemMessage,
        messages.SystemMessageChunk,
        messages.ChatMessage,
        messages.ChatMessageChunk,
        messages.FunctionMessage,
        messages.FunctionMessageChunk,
        messages.ToolMessage,
        messages.ToolMessageChunk,
        messages.RemoveMessage,
        # documents, prompt values, outputs, agents
        documents.Document,
        prompt_values.StringPromptValue,
        prompt_values.ChatPromptValue,
        prompt_values.ChatPromptValueConcrete,
        prompt_values.ImagePromptValue,
        outputs.Generation,
        outputs.GenerationChunk,
        outputs.ChatGeneration,
        outputs.ChatGenerationChunk,
        outputs.ChatResult,
        outputs.LLMResult,
        outputs.RunInfo,
        agents.AgentAction,
        agents.AgentActionMessageLog,
        agents.AgentStep,
        agents.AgentFinish,
    ]


_installed = False


def install_langchain() -> None:
    """Register LangChain's classes with the codec now (a publisher does so when it
    starts; otherwise the first LangChain value encoded or decoded does)."""
    global _installed
    if _installed:
        return
    _installed = True
    from langchain_core.messages.base import TextAccessor
    from langchain_core.runnables.utils import AddableDict

    for cls in lc_classes():
        _registry.register_builtin(cls, f"lc.{cls.__name__}")
    _registry.register_builtin(AddableDict, "lc.AddableDict")
    _registry.register_builtin(TextAccessor, "lc.TextAccessor")


def __getattr__(name: str) -> Any:
    if name == "_LC_CLASSES":  # (the allowlist, as it was once spelled)
        return lc_classes()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _install_langgraph() -> None:
    try:
        from langgraph import types as lg
    except ImportError:  # a subscriber without langgraph: its tags stay UnknownType
        return
    # (each looked up by name: langgraph < 1.2 has no TimeoutPolicy and no Send.timeout)
    for name in ("Interrupt", "Command", "Overwrite", "TimeoutPolicy"):
        cls = getattr(lg, name, None)
        if cls is not None:
            _registry.register_builtin(cls, f"lg.{name}")
    send = getattr(lg, "Send", None)
    if send is not None:  # a plain class with __slots__, not a dataclass

        def decode_send(payload: Any) -> Any:
            node, arg, timeout = payload
            # (a receiver on langgraph < 1.2 refuses a timeout: that Send is Undecodable)
            return send(node, arg) if timeout is None else send(node, arg, timeout=timeout)

        _registry.register_builtin(
            send,
            "lg.Send",
            encode=lambda s: [s.node, s.arg, getattr(s, "timeout", None)],
            decode=decode_send,
        )
    # policies hold functions, which never travel: LangGraph's default function travels as
    # "default" (and comes back as that function), builtin exception classes (RetryPolicy's
    # retry_on) by name, anything else as an Unrepresentable placeholder
    retry = getattr(lg, "RetryPolicy", None)
    default_retry_on = getattr(lg, "default_retry_on", None)
    if retry is not None:

        def decode_retry(payload: Any) -> Any:
            *numbers, retry_on = payload
            return retry(*numbers, _function_of(retry_on, default_retry_on))

        _registry.register_builtin(
            retry,
            "lg.RetryPolicy",
            encode=lambda p: [*p[:-1], _function_ref(p.retry_on, default_retry_on)],
            decode=decode_retry,
        )
    cache = getattr(lg, "CachePolicy", None)
    default_cache_key = getattr(lg, "default_cache_key", None)
    if cache is not None:

        def decode_cache(payload: Any) -> Any:
            key_func, ttl = payload
            return cache(key_func=_function_of(key_func, default_cache_key), ttl=ttl)

        _registry.register_builtin(
            cache,
            "lg.CachePolicy",
            encode=lambda p: [_function_ref(p.key_func, default_cache_key), p.ttl],
            decode=decode_cache,
        )


def _function_ref(fn: Any, default: Any) -> Any:
    if fn is default:
        return "default"
    if isinstance(fn, type) and fn.__module__ == "builtins" and issubclass(fn, Exception):
        return ["exception", fn.__name__]
    if isinstance(fn, (tuple, list)):
        return [_function_ref(f, default) for f in fn]
    return _builtin_types.placeholder(fn)


def _function_of(ref: Any, default: Any) -> Any:
    if ref == "default":
        return default
    if type(ref) is list and len(ref) == 2 and ref[0] == "exception":
        return _builtin_types.builtin_exception(ref[1])
    if type(ref) is list:
        return tuple(_function_of(r, default) for r in ref)
    if type(ref) is Unrepresentable:
        return ref
    raise ValueError(f"not a function reference: {ref!r}")


_registry.register_lazily("langchain_core", "lc.", install_langchain)
_registry.register_lazily("langgraph", "lg.", _install_langgraph)


# ---------------------------------------------------------------------------------------
# events


def new_run_id() -> uuid.UUID:
    """A fresh root run id, of the kind LangChain makes (uuid7)."""
    from langchain_core.utils.uuid import uuid7

    return uuid7()


def filter_type(event: StreamEvent) -> str:
    """The "type" LangChain's ``include_types``/``exclude_types`` test for this event:
    the run type (``on_chat_model_stream`` -> ``chat_model``), or, for custom events, the
    event's name."""
    name: str = event["event"]
    if name == "on_custom_event":
        return str(event["name"])
    return name[3:].rsplit("_", 1)[0]


def is_root_end(event: StreamEvent, root_run_id: str) -> bool:
    return event["run_id"] == root_run_id and str(event["event"]).endswith("_end")


_EVENT_FIELDS = (("event", str), ("run_id", str), ("name", str))


def malformed_event(event: Any) -> str | None:
    """Why ``event`` (decoded from a frame) is not a v2 StreamEvent this library can hand
    on, or None when it is one: a genuine worker never sends such a thing, but a frame
    forged or corrupted at the broker can hold any value."""
    if type(event) is not dict:
        return f"an event is a dict, not {type(event).__name__}"
    for key, cls in _EVENT_FIELDS:
        if not isinstance(event.get(key), cls):
            return f"event field {key!r} is not a {cls.__name__}"
    if not event["event"].startswith("on_"):
        return f"event name {event['event'][:80]!r} is not a callback event"
    if type(event.get("data")) is not dict and event["event"] != "on_custom_event":
        # (a custom event's data is whatever the run dispatched)
        return "event field 'data' is not a dict"
    return None


class EventFilter:
    """``astream_events(version="v2", include_*/exclude_*)`` applied to the full v2 stream.

    LangChain's v2 stream sets the *first event it yields* (after filtering) to carry the
    root input in ``data["input"]`` and drops ``data["input"]`` from the end event of that
    same run; this reproduces both, from the unfiltered stream in which the first event is
    the root's start (carrying the root input).
    """

    def __init__(
        self,
        include_names: Sequence[str] | None = None,
        include_types: Sequence[str] | None = None,
        include_tags: Sequence[str] | None = None,
        exclude_names: Sequence[str] | None = None,
        exclude_types: Sequence[str] | None = None,
        exclude_tags: Sequence[str] | None = None,
    ) -> None:
        from langchain_core.runnables.utils import _RootEventFilter

        self._filter = _RootEventFilter(
            include_names=include_names,
            include_types=include_types,
            include_tags=include_tags,
            exclude_names=exclude_names,
            exclude_types=exclude_types,
            exclude_tags=exclude_tags,
        )
        self._seen_root = False
        self._root_input: Any = None
        self._first_run_id: str | None = None

    @staticmethod
    def pop_options(kwargs: dict[str, Any]) -> dict[str, Any]:
        """Take the include_*/exclude_* options out of ``kwargs``."""
        return {k: kwargs.pop(k) for k in _FILTER_KEYS if k in kwargs}

    def __call__(self, event: StreamEvent) -> StreamEvent | None:
        """The event as the filtered stream would yield it, or None if it is filtered out."""
        if not self._seen_root:
            self._seen_root = True
            self._root_input = event["data"].get("input")
        if not self._filter.include_event(cast(Any, event), filter_type(event)):
            return None
        if self._first_run_id is None:
            self._first_run_id = event["run_id"]
            event["data"]["input"] = self._root_input
        elif (
            event["run_id"] == self._first_run_id
            and event["event"].endswith("_end")
            and "input" in event["data"]
        ):
            del event["data"]["input"]
        return event


_FILTER_KEYS = frozenset(
    f"{a}_{b}" for a in ("include", "exclude") for b in ("names", "types", "tags")
)
