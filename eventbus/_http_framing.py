"""How the gateway frames a client's stream: Server-Sent Events and WebSocket messages,
keep-alives, terminal events, bounded writes."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from . import _langchain
from ._exceptions import InvalidResumeToken
from ._http_hub import _Session, _Terminal
from ._jsonable import dumps, to_jsonable
from ._subscriber import FollowItem, _parse_token

if TYPE_CHECKING:
    from ._http import Gateway

Render = Callable[[FollowItem | _Terminal], "bytes | None"]

FILTERS = tuple(f"{a}_{b}" for a in ("include", "exclude") for b in ("names", "types", "tags"))
_encode = msgspec.json.Encoder().encode
SSE_HEADERS = {
    "cache-control": "no-cache",
    "x-accel-buffering": "no",  # nginx: do not buffer the stream
    "content-type": "text/event-stream; charset=utf-8",
}


ABORTED = b": too slow: dropped; reconnect with Last-Event-ID to resume\n\n"
_WRITE_BATCH = 64  # buffered events joined into one write to a client


class _SendTimeout(Exception):
    pass


class RenderCache:
    """The SSE messages of unfiltered events, rendered once for all the clients of a run
    (they read the same records at about the same time): the last ``size`` of them."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self._bodies: OrderedDict[tuple[str, str], bytes] = OrderedDict()

    def get(self, run_id: str, item: FollowItem) -> bytes:
        key = (run_id, item.id)
        body = self._bodies.get(key)
        if body is None:
            body = b"id: " + item.id.encode() + b"\nevent: message\ndata: " + dumps(item.event)
            body += b"\n\n"
            self._bodies[key] = body
            if len(self._bodies) > self.size:
                self._bodies.popitem(last=False)
        return body


def safe_encode(data: Any) -> bytes:
    """JSON of ``data``, through the JSON form when msgspec alone cannot encode it."""
    try:
        return _encode(data)
    except (msgspec.EncodeError, UnicodeEncodeError):
        return dumps(data)


def terminal_data(gw: Gateway, item: _Terminal, resume: str) -> tuple[str, Any]:
    """(event name, data) of the end of a client's stream; ``resume`` says how to resume
    after ``slow``."""
    if item.kind == "slow":
        return "slow", {
            "type": "SlowClient",
            "message": f"this client read too slowly (buffer of {gw.client_buffer} events "
            f"full for {gw.slow_client_timeout:g}s); {resume}",
        }
    kind = "error" if item.kind in ("lost", "gap") else item.kind
    return kind, gw._error_data(item.error)


def sse_render(gw: Gateway, run_id: str, keep: _langchain.EventFilter | None) -> Render:
    """The renderer of ``GET /runs/{run_id}/events``: ``event: message`` with the
    event's id, and a terminal event without one (a reconnect gets it again)."""

    def render(item: FollowItem | _Terminal) -> bytes | None:
        if isinstance(item, _Terminal):
            kind, data = terminal_data(gw, item, "reconnect with Last-Event-ID to resume")
            return b"event: " + kind.encode() + b"\ndata: " + _encode(data) + b"\n\n"
        if keep is None:
            return gw._rendered.get(run_id, item)
        event = keep(item.event)
        if event is None:
            return None
        return b"id: " + item.id.encode() + b"\nevent: message\ndata: " + dumps(event) + b"\n\n"

    return render


class EventStream(Response):
    """A ``text/event-stream`` response fed by a session: pings when idle, a bounded
    wait on every write, and the session closed as soon as the client goes away."""

    def __init__(
        self,
        gateway: Gateway,
        session: _Session,
        render: Render,
        head: bytes,
        extra_headers: dict[str, str] | None = None,
        first_prefix: bytes = b"",
        on_client_gone: Callable[[], None] | None = None,
    ) -> None:
        self.first_prefix = first_prefix
        self.on_client_gone = on_client_gone
        # not Response.__init__: it would announce a content-length of 0
        self.status_code = 200
        self.background = None
        self.raw_headers = [
            (k.encode("latin-1"), v.encode("latin-1"))
            for k, v in {**SSE_HEADERS, **(extra_headers or {})}.items()
        ]
        self.gateway = gateway
        self.session = session
        self.renderer = render
        self.head = head

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gw = self.gateway
        gw.stats.clients += 1
        gw._changed()
        gone = False
        try:
            async with anyio.create_task_group() as tg:

                async def listen() -> None:
                    nonlocal gone
                    while True:
                        message = await receive()
                        if message["type"] == "http.disconnect":
                            break
                    gone = True
                    tg.cancel_scope.cancel()

                tg.start_soon(listen)
                await self._stream(send)
                tg.cancel_scope.cancel()
        except _SendTimeout:
            gw.stats.send_timeouts += 1
        except OSError:  # the client went away mid-write
            gone = True
        finally:
            # only a client that left before the stream's end; a slow client we dropped,
            # or one whose writes blocked, did not ask to leave
            if gone and self.on_client_gone is not None:
                self.on_client_gone()
            await self.session.close()
            gw.stats.clients -= 1
            gw._changed()

    async def _write(self, send: Send, body: bytes, more: bool = True) -> None:
        try:
            with anyio.fail_after(self.gateway.send_timeout):
                await send({"type": "http.response.body", "body": body, "more_body": more})
        except TimeoutError:
            raise _SendTimeout from None

    async def _stream(self, send: Send) -> None:
        gw = self.gateway
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self.head:
            await self._write(send, self.head)
        while True:
            item = await self.session.next(gw.ping_interval)
            if item is None:
                await self._write(send, b": ping\n\n")
                continue
            body = self.renderer(item)
            if body and self.first_prefix:
                body, self.first_prefix = self.first_prefix + body, b""
            if isinstance(item, _Terminal):
                if body is None and item.kind == "slow":
                    # (the LangGraph SDKs) the connection is dropped, not closed: after a
                    # clean close they reconnect only while the run is running, after a
                    # drop always, with Last-Event-ID; the response is left incomplete
                    await self._write(send, ABORTED)
                    return
                await self._write(send, body or b"", more=False)
                return
            # what else is buffered goes in the same write: one send (and one bounded
            # wait) per batch, not per event, for a client that keeps up
            bodies = [body] if body is not None else []
            for more in self.session.take(_WRITE_BATCH):
                rendered = self.renderer(more)
                if rendered is not None:
                    bodies.append(rendered)
            if bodies:
                await self._write(send, b"".join(bodies))
                gw.stats.events += len(bodies)


# -- WebSocket ---------------------------------------------------------------------------


async def websocket_endpoint(gw: Gateway, websocket: WebSocket, run_id: str | None) -> None:
    """``/runs/{run_id}/ws``: the first client message says where to start and what to
    keep; then the run's events as JSON messages, and a terminal one."""
    await websocket.accept()
    if run_id is None:
        await ws_fail(websocket, 4404, "NotFound", "not a run id (a UUID)")
        return
    try:
        with anyio.fail_after(gw.max_wait):
            first = await websocket.receive_text()
        hello = msgspec.json.decode(first)
        if type(hello) is not dict:
            raise ValueError("the first message must be a JSON object")
        token = hello.get("last_event_id")
        if token is not None:
            if type(token) is not str:
                raise ValueError("last_event_id must be a string")
            _parse_token(token)
        options: dict[str, list[str]] = {}
        for key in FILTERS:
            value = hello.get(key)
            if value is not None:
                if type(value) is not list or not all(type(v) is str for v in value):
                    raise ValueError(f"{key} must be a list of strings")
                options[key] = value
    except WebSocketDisconnect:
        return
    except TimeoutError:
        await ws_fail(websocket, 1008, "BadRequest", "no first message")
        return
    except (ValueError, KeyError, msgspec.DecodeError, InvalidResumeToken) as exc:
        await ws_fail(websocket, 1008, "BadRequest", f"bad first message: {exc}")
        return
    if not await gw._allowed(websocket, run_id):
        await ws_fail(websocket, 1008, "Forbidden", "not allowed")
        return
    keep = _langchain.EventFilter(**options) if options else None
    close: tuple[int, str] = (1000, "")
    session = await gw._open(websocket, run_id, token)
    if isinstance(session, JSONResponse):
        await ws_fail(websocket, 4404, "NotFound", f"run {run_id} not found")
        return
    gw.stats.clients += 1
    gw._changed()
    try:
        async with anyio.create_task_group() as tg:

            async def listen() -> None:
                # what the client says after its first message is ignored; its going
                # away ends the stream
                with contextlib.suppress(WebSocketDisconnect):
                    while True:
                        message = await websocket.receive()
                        if message["type"] == "websocket.disconnect":
                            break
                tg.cancel_scope.cancel()

            tg.start_soon(listen)
            close = await _ws_stream(gw, websocket, session, keep)
            tg.cancel_scope.cancel()
    except _SendTimeout:
        gw.stats.send_timeouts += 1
    finally:
        await session.close()
        gw.stats.clients -= 1
        gw._changed()
    with contextlib.suppress(Exception):
        await websocket.close(*close)


async def _ws_stream(
    gw: Gateway, websocket: WebSocket, session: _Session, keep: _langchain.EventFilter | None
) -> tuple[int, str]:
    """Sends the session's events; the close code and reason once it ended (1013, "try
    again later", for a client too slow)."""

    async def send(message: dict[str, Any]) -> None:
        try:
            with anyio.fail_after(gw.send_timeout):
                # text frames: a browser's WebSocket hands them to JSON.parse as they are
                await websocket.send_text(safe_encode(message).decode())
        except TimeoutError:
            raise _SendTimeout from None

    while True:
        item = await session.next(gw.ping_interval)
        if item is None:
            await send({"event": "ping"})
            continue
        if isinstance(item, _Terminal):
            kind, data = terminal_data(
                gw, item, 'reconnect with {"last_event_id": <the last id received>} to resume'
            )
            await send({"event": kind, "data": data})
            if kind == "slow":
                return 1013, "too slow: reconnect with last_event_id to resume"
            return 1000, ""
        event = item.event if keep is None else keep(item.event)
        if event is not None:
            await send({"event": "message", "id": item.id, "data": to_jsonable(event)})
            gw.stats.events += 1


async def ws_fail(websocket: WebSocket, code: int, kind: str, message: str) -> None:
    """An ``error`` message, then the close with ``code``."""
    with contextlib.suppress(Exception):
        await websocket.send_text(
            _encode({"event": "error", "data": {"type": kind, "message": message}}).decode()
        )
        await websocket.close(code, reason=message[:120])
