"""The JSON form of the v2 stream: what consumers that are not Python read.

One function, :func:`to_jsonable`, turns a StreamEvent (or any value in one) into plain
JSON data; the gateway (``eventbus[http]``), the command line's ``--json`` outputs and the
webhook bodies all use it. Unlike the wire format (``docs/wire-format.md``), it is not
type-exact: it is the shape a JavaScript client, LangChain.js or a log pipeline expects.
The shape, documented in ``docs/json-form.md`` and described by the generated JSON Schema
``docs/json-form.schema.json``:

* LangChain objects (messages and chunks, documents, prompt values, generations, results,
  agent types) are their ``model_dump()`` dict, which carries ``"type"`` (``"AIMessageChunk"``,
  ``"Document"``, ...); a class whose dump has no ``type`` gets its class name there.
  ``AddableDict`` is a plain object, LangChain's ``str`` subclasses plain strings.
* LangGraph's ``Interrupt``, ``Command``, ``Overwrite`` and ``Send`` are objects of their
  fields plus ``"type"`` (the class name).
* ``datetime``/``date``/``time``: ISO 8601 strings (with the offset when aware);
  ``timedelta``: a number of seconds; ``UUID``: the canonical string; ``bytes``/
  ``bytearray``: standard base64 strings; ``Decimal``: a string (exact); ints beyond 64 bits:
  JSON numbers (JavaScript's ``JSON.parse`` rounds them beyond 2**53); ``tuple``/``set``/
  ``frozenset``: arrays; NaN and infinities: ``null``.
* Object keys that are not strings become strings: a key's own JSON form when that is a
  string (a ``UUID``, a ``datetime``), else the JSON text of its form (``1`` -> ``"1"``,
  ``None`` -> ``"null"``, ``True`` -> ``"true"``, ``(1, 2)`` -> ``"[1,2]"``). Two keys
  that map to the same string keep the later value.
* Exceptions (``on_tool_error``'s ``data.error``): ``{"type": "Exception", "class":
  qualified name, "module": ..., "message": str(exc), "args": [...]}``.
* A value the codec cannot carry: ``{"type": "Unrepresentable", "class": ..., "repr": ...}``;
  one that arrived but could not be rebuilt (:class:`eventbus.Undecodable`): ``{"type":
  "Undecodable", "class": ..., "repr": ..., "reason": ...}``.
* Unregistered pydantic models and dataclasses: objects of their fields; enums: their
  value; a user type registered with :func:`eventbus.register_type`: its payload.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Callable
from typing import Any

import msgspec

from ._codec import TAG, VAL, to_wire

__all__ = ["dumps", "to_jsonable"]

_EXTRA = "x"


def to_jsonable(value: Any) -> Any:
    """``value`` (typically a StreamEvent) as JSON data: dicts with string keys, lists,
    strings, numbers, booleans and None, in the shape documented in this module.

    Never raises for odd values: what cannot be carried becomes an ``Unrepresentable``
    object (as on the wire).
    """
    return _convert(to_wire(value))


_encoder = msgspec.json.Encoder()


def dumps(value: Any) -> bytes:
    """``to_jsonable(value)`` encoded as compact UTF-8 JSON.

    Strings holding lone surrogates (legal in Python, not in UTF-8) are written with the
    replacement character.
    """
    data = to_jsonable(value)
    try:
        return _encoder.encode(data)
    except (msgspec.EncodeError, UnicodeEncodeError):
        return _encoder.encode(_scrub(data))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        # through UTF-16, where a lone surrogate is one undecodable unit: U+FFFD
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, dict):
        return {_scrub(k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def _convert(value: Any) -> Any:
    t = type(value)
    if t is dict:
        if TAG in value:
            return _node(value[TAG], value.get(VAL), value.get(_EXTRA))
        return {k: _convert(v) for k, v in value.items()}
    if t is list:
        return [_convert(v) for v in value]
    if t is float:
        return value if math.isfinite(value) else None
    if t is bytes or t is bytearray:
        return base64.b64encode(value).decode("ascii")
    return value


def _key(key: Any) -> str:
    form = _convert(key)
    if type(form) is str:
        return form
    return _encoder.encode(form).decode("utf-8")


def _pairs(payload: Any, extra: Any) -> Any:
    return {_key(k): _convert(v) for k, v in payload}


def _seconds(payload: Any, extra: Any) -> Any:
    days, seconds, micros = payload
    return days * 86400 + seconds + micros / 1_000_000


def _exception(payload: Any, extra: Any) -> Any:
    module, qualname, message, args = payload
    return {
        "type": "Exception",
        "class": qualname,
        "module": module,
        "message": message,
        "args": _convert(args),
    }


def _unrepresentable(payload: Any, extra: Any) -> Any:
    cls, text = payload
    return {"type": "Unrepresentable", "class": cls, "repr": text}


def _undecodable(payload: Any, extra: Any) -> Any:
    cls, text, reason = payload
    return {"type": "Undecodable", "class": cls, "repr": text, "reason": reason}


def _send(payload: Any, extra: Any) -> Any:
    node, arg, timeout = payload
    return {"type": "Send", "node": node, "arg": _convert(arg), "timeout": _convert(timeout)}


def _same(payload: Any, extra: Any) -> Any:
    return _convert(payload)


_NODES: dict[str, Callable[[Any, Any], Any]] = {
    "tuple": _same,
    "set": _same,
    "frozenset": _same,
    "dict": _pairs,
    "bytes": _same,
    "bytearray": _same,
    "int": lambda p, x: int(p),
    "uuid": _same,
    "datetime": _same,
    "date": _same,
    "time": _same,
    "timedelta": _seconds,
    "decimal": _same,
    "exception": _exception,
    "unrepresentable": _unrepresentable,
    "undecodable": _undecodable,
    "lc.AddableDict": _same,
    "lc.TextAccessor": _same,
    "lg.Send": _send,
}


def _node(tag: Any, payload: Any, extra: Any) -> Any:
    special = _NODES.get(tag)
    if special is not None:
        return special(payload, extra)
    out = _convert(payload)
    if type(out) is dict and type(tag) is str and tag.startswith(("lc.", "lg.")):
        if extra:
            out.update(_convert(extra))
        out.setdefault("type", tag[3:])
    return out


# -- the JSON Schema of the form ------------------------------------------------------------

SCHEMA_ID = "https://eventbus.invalid/json-form.schema.json"

# which LangChain classes an event's data holds, by event name (the ones LangChain's v2
# stream fixes; other data values are any JSON)
_MESSAGE_CHUNK = {"$ref": "#/$defs/AIMessageChunk"}
_EXCEPTION = {"$ref": "#/$defs/Exception"}


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a StreamEvent's JSON form, generated from
    LangChain's pydantic models (``docs/json-form.schema.json``; ``make schema``).

    Descriptions and titles are left out: they are LangChain's docstrings, and they
    change between releases without the shape changing.
    """
    from pydantic.json_schema import models_json_schema

    from ._langchain import lc_classes

    _, generated = models_json_schema(
        [(cls, "serialization") for cls in lc_classes()], ref_template="#/$defs/{model}"
    )
    defs: dict[str, Any] = _strip(generated.get("$defs", {}))
    for name in [cls.__name__ for cls in lc_classes()]:
        model = defs.get(name)
        if model is not None and "type" not in model.get("properties", {}):
            # to_jsonable adds the class name where the dump has no "type"
            model.setdefault("properties", {})["type"] = {"const": name}
    json_value: dict[str, Any] = {
        "description": "any JSON value (objects, arrays, strings, numbers, booleans, null)"
    }
    defs["Exception"] = {
        "type": "object",
        "properties": {
            "type": {"const": "Exception"},
            "class": {"type": "string"},
            "module": {"type": "string"},
            "message": {"type": "string"},
            "args": {"type": "array"},
        },
        "required": ["type", "class", "module", "message", "args"],
    }
    defs["Unrepresentable"] = {
        "type": "object",
        "properties": {
            "type": {"const": "Unrepresentable"},
            "class": {"type": "string"},
            "repr": {"type": "string"},
        },
        "required": ["type", "class", "repr"],
    }
    defs["Undecodable"] = {
        "type": "object",
        "properties": {
            "type": {"const": "Undecodable"},
            "class": {"type": "string"},
            "repr": {"type": "string"},
            "reason": {"type": "string"},
        },
        "required": ["type", "class", "repr", "reason"],
    }
    defs["Value"] = json_value
    string_list = {"type": "array", "items": {"type": "string"}}
    event: dict[str, Any] = {
        "type": "object",
        "properties": {
            "event": {"type": "string", "pattern": "^on_[a-z_]+$"},
            "name": {"type": "string"},
            "run_id": {"type": "string", "format": "uuid"},
            "parent_ids": string_list,
            "tags": string_list,
            "metadata": {"type": "object"},
            "data": {
                "type": "object",
                "properties": {
                    "input": json_value,
                    "output": json_value,
                    "chunk": json_value,
                    "error": json_value,
                },
            },
        },
        "required": ["event", "name", "run_id", "parent_ids", "tags", "metadata", "data"],
        "allOf": [
            _when("on_chat_model_stream", {"chunk": _MESSAGE_CHUNK}, ["chunk"]),
            _when(
                "on_chat_model_end",
                {"output": {"anyOf": [_MESSAGE_CHUNK, {"$ref": "#/$defs/AIMessage"}]}},
                ["output"],
            ),
            _when("on_tool_error", {"error": _EXCEPTION}, ["error"]),
        ],
    }
    defs["StreamEvent"] = event
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "eventbus JSON form of an astream_events(version='v2') event",
        "$ref": "#/$defs/StreamEvent",
        "$defs": defs,
    }


def _when(event: str, data: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "if": {"properties": {"event": {"const": event}}, "required": ["event"]},
        "then": {
            "properties": {"data": {"type": "object", "properties": data, "required": required}}
        },
    }


def _strip(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            k: _strip(v)
            for k, v in schema.items()
            if k not in ("description", "title") or not isinstance(v, str)
        }
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


def json_schema_text() -> str:
    """The schema as committed in ``docs/json-form.schema.json``."""
    import json

    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


# -- records: one line / message / webhook body per record of a run ------------------------


def error_jsonable(error: BaseException, *, traceback: bool = True) -> dict[str, Any]:
    """How a run's end that is not normal reads in the JSON form: ``type`` (the eventbus
    error class: ``RemoteRunError``, ``RunCancelledError``, ``WorkerLostError``,
    ``SequenceGapError``, ...), ``message``; for ``RemoteRunError`` also ``class`` and
    ``module`` of the worker's exception and (when ``traceback``) its ``traceback``."""
    from ._exceptions import RemoteRunError, RunCancelledError

    out: dict[str, Any] = {"type": type(error).__name__, "message": str(error)}
    if isinstance(error, RemoteRunError):
        out["class"] = error.type_name
        out["module"] = error.module
        out["message"] = error.message
        if traceback:
            out["traceback"] = error.traceback
    elif isinstance(error, RunCancelledError):
        out["message"] = error.reason
    return out


def record_jsonable(
    kind: str,
    run_id: str,
    seq: int | None,
    *,
    id: str | None = None,
    event: Any = None,
    error: BaseException | None = None,
    traceback: bool = True,
) -> dict[str, Any]:
    """One record of a run in the JSON form, the shape the command line's ``--json``
    prints (per run and per namespace) and webhooks carry::

        {"kind": "event" | "end" | "error" | "cancelled" | "lost" | "gap",
         "run_id": "...", "seq": 7, "id": "7:1716299999123-0" | null,
         "event": {...} (kind "event"), "error": {...} (kinds error/cancelled/lost/gap)}

    ``id`` is the resume token (``Subscriber.follow(after=id)``, the gateway's
    ``Last-Event-ID``) where the reader has one.
    """
    out: dict[str, Any] = {"kind": kind, "run_id": run_id, "seq": seq, "id": id}
    if kind == "event":
        out["event"] = to_jsonable(event)
    if error is not None:
        out["error"] = error_jsonable(error, traceback=traceback)
    return out


def terminal_kind(error: BaseException | None) -> str:
    """The record kind of a run's end: ``end`` (None), ``error``, ``cancelled``, ``lost``
    (worker lost), ``gap`` (events trimmed by retention), else ``error``."""
    from ._exceptions import RunCancelledError, SequenceGapError, WorkerLostError

    if error is None:
        return "end"
    if isinstance(error, RunCancelledError):
        return "cancelled"
    if isinstance(error, WorkerLostError):
        return "lost"
    if isinstance(error, SequenceGapError):
        return "gap"
    return "error"
