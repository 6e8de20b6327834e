"""The LangGraph SDK adapter of the gateway: ``GET /threads/{thread_id}/runs/{run_id}/stream``
(and ``GET /runs/{run_id}/stream``), what ``client.runs.join_stream`` (Python,
``langgraph-sdk``) and ``client.runs.joinStream`` (JavaScript, ``@langchain/langgraph-sdk``)
request.

The parts, as the SDKs name and shape them: ``metadata`` (``{"run_id", "thread_id"}``) opens
a fresh stream (not a resumed one); ``events`` carries the v2 events; for a LangGraph run
published with a list ``stream_mode``, each root ``on_chain_stream`` chunk ``(mode, payload)``
is a part named ``mode`` (``mode|ns1|ns2`` for a subgraph's ``(namespace, mode, payload)``);
``end`` (``{"run_id", "status": "success" | "interrupted"}``) or ``error`` (``{"error",
"message"}``) close it. The last part of an event carries its id (the resume token): a
resume never splits an event.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ._http_framing import EventStream, safe_encode
from ._http_hub import _Terminal
from ._jsonable import to_jsonable
from ._subscriber import FollowItem

if TYPE_CHECKING:
    from ._http import Gateway

_encode = safe_encode


def stream_modes(request: Request) -> set[str]:
    """The requested modes (repeatable or comma-separated ``stream_mode``), ``values`` by
    default as LangGraph's; ``messages-tuple`` parts are named ``messages``."""
    modes = {m for raw in request.query_params.getlist("stream_mode") for m in raw.split(",")}
    modes.discard("")
    if not modes:
        modes = {"values"}
    if "messages-tuple" in modes:
        modes.add("messages")
    return modes


async def join_stream(gw: Gateway, request: Request) -> Response:
    """The route: the SSE parts of one run in the SDKs' names and shapes."""
    prepared = await gw._prepare(request)
    if isinstance(prepared, JSONResponse):
        return prepared
    run_id, session = prepared
    modes = stream_modes(request)
    keep = gw._filter(request)
    thread_id = request.path_params.get("thread_id")
    head = b""
    if session.after is None:
        head = b"event: metadata\ndata: " + _encode({"run_id": run_id, "thread_id": thread_id})
        head += b"\n\n"

    def render(item: FollowItem | _Terminal) -> bytes | None:
        if isinstance(item, _Terminal):
            if item.kind in ("end", "cancelled"):
                status = "success" if item.kind == "end" else "interrupted"
                data: Any = {"run_id": run_id, "status": status}
                return b"event: end\ndata: " + _encode(data) + b"\n\n"
            if item.kind == "slow":
                return None  # the connection is dropped (EventStream): the SDKs reconnect
            error = gw._error_data(item.error) or {}
            data = {
                "error": error.get("class") or error.get("type"),
                "message": error.get("message"),
            }
            return b"event: error\ndata: " + _encode(data) + b"\n\n"
        parts: list[tuple[str, Any]] = []
        event = item.event
        if "events" in modes:
            kept = event if keep is None else keep(event)
            if kept is not None:
                parts.append(("events", to_jsonable(kept)))
        if event["run_id"] == run_id and event["event"] == "on_chain_stream":
            part = mode_part(event["data"].get("chunk"), modes)
            if part is not None:
                parts.append(part)
        if not parts:
            return None
        out = bytearray()
        for n, (name, data) in enumerate(parts):
            # one id per event, on its last part: a resume never splits an event
            if n == len(parts) - 1:
                out += b"id: " + item.id.encode() + b"\n"
            out += b"event: " + name.encode() + b"\ndata: " + _encode(data) + b"\n\n"
        return bytes(out)

    # relative to where the app is mounted: the SDKs resolve it against their base URL
    path = request.scope["path"]
    root = request.scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    location = path + (f"?{request.url.query}" if request.url.query else "")
    gone = None
    if gw.allow_cancel and _truthy(request.query_params.get("cancel_on_disconnect")):
        gone = functools.partial(gw.cancel_on_disconnect, run_id)
    return EventStream(
        gw, session, render, head, extra_headers={"location": location}, on_client_gone=gone
    )


def _truthy(value: str | None) -> bool:
    # the Python SDK sends "true"/"false", the JavaScript one "1"/"0"
    return value is not None and value.lower() in ("1", "true", "yes", "on")


def mode_part(chunk: Any, modes: set[str]) -> tuple[str, Any] | None:
    """The LangGraph SDK part of a root graph's stream chunk: ``(mode, payload)`` or
    ``(namespace, mode, payload)`` (subgraphs); a bare chunk is ``values``."""
    namespace: tuple[str, ...] = ()
    if type(chunk) is tuple and len(chunk) == 2 and type(chunk[0]) is str:
        mode, payload = chunk
    elif (
        type(chunk) is tuple
        and len(chunk) == 3
        and type(chunk[0]) is tuple
        and type(chunk[1]) is str
    ):
        namespace, mode, payload = chunk
    else:
        mode, payload = "values", chunk
    if mode not in modes:
        return None
    name = mode if not namespace else "|".join((mode, *namespace))
    return name, to_jsonable(payload)
