"""What a run becomes on the wire when its values misbehave: the value tree of an event
that the walker refused, an oversized event's placeholders, the error record of an
exception (whatever its ``str`` and traceback hold)."""

from __future__ import annotations

import traceback
from typing import Any

from ._codec import Unrepresentable
from ._registry import qualname
from ._wire import Failed

__all__ = ["failure_record", "shrink", "tree_by_key"]


def failure_record(exc: BaseException) -> Failed:
    """The :class:`~eventbus._wire.Failed` record of ``exc`` (seq and ts still 0)."""
    cls = type(exc)
    try:
        trace = "".join(traceback.format_exception(cls, exc, exc.__traceback__))
    except Exception:
        trace = ""
    return Failed(
        0,
        0.0,
        type=_utf8(cls.__qualname__),
        module=_utf8(cls.__module__),
        message=_utf8(_safe_str(exc)),
        traceback=_utf8(trace),
    )


def _utf8(text: str) -> str:
    """``text``, with lone surrogates (which UTF-8 cannot carry) as ``\\udcxx`` escapes:
    an error message naming a file from os.listdir must not fail the error record."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def tree_by_key(to_tree: Any, event: Any) -> Any:
    """The tree of an event that ``to_tree`` refused as a whole: each of its values (and
    each of its data's values) on its own, a placeholder for those that still fail."""

    def one(value: Any) -> Any:
        try:
            return to_tree(value)
        except Exception as exc:
            return to_tree(
                Unrepresentable(qualname(type(value)), f"<could not be encoded: {exc!r}>")
            )

    if type(event) is not dict:
        return one(event)
    tree: dict[str, Any] = {}
    for key, value in list(event.items()):
        if key == "data" and type(value) is dict:
            tree[key] = {k: one(v) for k, v in list(value.items())}
        else:
            tree[key] = one(value)
    return tree


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:
        return f"<{type(exc).__name__}: str() failed>"


def shrink(event: Any, size: int, limit: int) -> Any:
    """An oversized event with its data values replaced by placeholders."""
    omitted = Unrepresentable(
        "eventbus.Oversized",
        f"<event of {size} bytes omitted: larger than max_event_bytes "
        f"(or the broker's message-size limit), {limit} bytes>",
    )
    if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
        return omitted
    return {**event, "data": {k: omitted for k in event["data"]}}
