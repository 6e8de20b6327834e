"""The HTTP gateway (``eventbus[http]``): runs followed over Server-Sent Events and
WebSockets, by browsers and other services, with resume; LangGraph SDK compatible.

:class:`Gateway` holds one :class:`~eventbus.Subscriber` (one broker connection) and
builds a Starlette app (``gateway.app``), mountable in FastAPI
(``app.mount("/eventbus", gateway.app)``); ``eventbus serve`` runs it with uvicorn.

Routes (paths relative to where the app is mounted):

``GET /runs/{run_id}/events``
    Server-Sent Events of one run. Each event: ``id:`` (the resume token, the
    ``FollowItem.id`` of the event), ``event: message`` and ``data:`` (the event's JSON
    form, ``docs/json-form.md``). Resume with the ``Last-Event-ID`` header (browsers'
    ``EventSource`` sends it when it reconnects) or the ``last_event_id`` query parameter.
    Filters: ``include_names``, ``include_types``, ``include_tags``, ``exclude_*``
    (repeatable or comma-separated). The stream ends with ``event: end`` (the run
    finished), ``event: error`` (``data``: ``{"type", "message"}``, plus ``class`` and
    ``module`` of the worker's exception, and ``traceback`` only when the gateway is
    configured with ``include_traceback=True``), ``event: cancelled``, or ``event: slow``
    (this client read too slowly and was disconnected: reconnect with ``Last-Event-ID``;
    an ``EventSource`` does so by itself). Terminal events carry no ``id:``, so that a
    client that reconnects after one gets it again. ``: ping`` comments every
    ``ping_interval`` seconds while nothing happens.
``GET /runs/{run_id}/ws``
    The same over a WebSocket: the client's first message is a JSON object
    ``{"last_event_id": ..., "include_types": [...], ...}`` (``{}`` to start at the
    beginning); then the server sends JSON text messages ``{"event": "message", "id":
    ..., "data": ...}`` and a terminal one (``end``/``error``/``cancelled``/``slow``) and
    closes (code 1000; 1013 after ``slow``, the reason saying to resume with
    ``last_event_id``). A first message that is not such an object, a malformed resume
    id or an unknown run: an ``error`` message and close code 1008 (4404 for the run).
``GET /threads/{thread_id}/runs/{run_id}/stream`` (and ``GET /runs/{run_id}/stream``)
    LangGraph SDK ``client.runs.join_stream(thread_id, run_id, stream_mode=...,
    last_event_id=...)`` (Python) and ``client.runs.joinStream(threadId, runId,
    {streamMode, lastEventId})`` (JavaScript). ``thread_id`` may be any value (eventbus
    runs have no threads). Modes: ``events`` (the v2 events, as ``event: events``), and for
    a LangGraph run published with a list ``stream_mode``, ``values``, ``updates``,
    ``custom``, ``messages-tuple`` (parts named ``messages``), ``debug``, ``tasks``,
    ``checkpoints`` (``mode|ns`` for subgraphs). Default: ``values``, LangGraph's default. A
    ``metadata`` part (``{"run_id", "thread_id"}``) opens a fresh stream; ``end``
    (``{"run_id", "status"}``: ``success``, or ``interrupted`` for a cancelled run) or
    ``error`` (``{"error", "message"}``) closes it. A client too slow is dropped (the
    response left incomplete after a ``: too slow`` comment), not closed: after a clean
    close the SDKs reconnect only while the run is running, after a drop always, with
    ``Last-Event-ID`` (a gateway mounted in another uvicorn app logs "ASGI callable
    returned without completing response" then). ``cancel_on_disconnect`` (the SDKs'
    ``cancel_on_disconnect=True`` / ``cancelOnDisconnect: true``) is honoured only by a
    gateway made with ``allow_cancel=True``: a client that goes away before the run's end
    cancels the run (:meth:`Subscriber.cancel`, reason ``"client disconnected"``); a
    client too slow, dropped by the gateway, cancels nothing. Otherwise it is ignored.
    See ``eventbus/_http_langgraph.py``.
``GET /threads/{thread_id}/runs/{run_id}``, ``GET /runs/{run_id}``
    ``{"run_id", "thread_id", "status"}``: ``running`` / ``success`` / ``error`` /
    ``interrupted`` (cancelled) / ``lost``, read from the run's records.
``GET /runs``
    Recent runs of the namespace with status (what ``eventbus runs --json`` prints).
``GET /`` (with ``page=True``, ``eventbus serve --page``)
    A page that follows ``?run=<run id>`` with ``EventSource``: tokens as text, progress
    bars, tool calls, the end state; it reconnects (and resumes) by itself.
``GET /healthz``
    ``{"status": "ok"}`` once the broker connection is up, else 503.

Errors: an unknown run is 404 after ``start_timeout`` seconds (default 5; a client may ask
for up to ``max_wait`` with ``?wait=SECONDS``, to attach to a run about to start); a run id
that is not a UUID is 404 at once; a malformed ``Last-Event-ID`` is 400 with a message; an
authorization hook that says no is 403.

Modules: this one (the app, its routes, the life cycle); ``_http_hub`` (the per-run
subscription hub, a client's bounded buffer); ``_http_framing`` (SSE and WebSocket
framing); ``_http_langgraph`` (the LangGraph SDK adapter).

The clients of one run share one broker follow (a hub holding the run's last
``hub_max_events`` records; a client that needs older ones follows on its own), over the
gateway's one broker connection; the hub ends when the run's last client leaves. Each
client reads at its own position (so resume is exact) through a bounded buffer
(``client_buffer`` events): a client whose buffer stays full for
``slow_client_timeout`` seconds is disconnected with the ``slow`` event (it can resume),
and a write that blocks for ``send_timeout`` seconds drops the connection. Readers never
slow the worker, nor each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from . import _langchain
from ._exceptions import EventbusError, InvalidResumeToken
from ._http_framing import FILTERS, EventStream, RenderCache, sse_render, websocket_endpoint
from ._http_hub import GatewayStats, _Hub, _Session, _Terminal
from ._http_langgraph import join_stream
from ._jsonable import error_jsonable
from ._subscriber import Subscriber, _parse_token, _run_key

__all__ = ["Gateway", "GatewayStats", "create_app", "serve"]

logger = logging.getLogger("eventbus.http")

Authorize = Callable[[HTTPConnection, str], "bool | Awaitable[bool]"]


def _ws_protocols() -> frozenset[str]:
    try:
        from uvicorn.config import WS_PROTOCOLS
    except ImportError:
        return frozenset()
    return frozenset(WS_PROTOCOLS)


_WS_PROTOCOLS = _ws_protocols()


def _is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Gateway:
    """Serves runs of one namespace over HTTP (SSE, WebSocket, LangGraph SDK join).

    Args:
        url: broker URL (as for :class:`~eventbus.Subscriber`), or ``subscriber``.
        namespace: the namespace the publishers use.
        subscriber: an existing Subscriber to use instead of opening one (not closed by
            :meth:`aclose`).
        authorize: ``(request_or_websocket, run_id) -> bool`` (or awaitable bool), called
            for every stream and run request; False: 403 (WebSocket: close 1008).
            None: everyone may follow every run (``eventbus serve`` warns when bound
            beyond localhost).
        cors_origins: origins allowed to read the streams from a browser (``["*"]``: any).
        start_timeout: seconds an unknown run is waited for before a 404.
        max_wait: the longest wait a client may ask for with ``?wait=``.
        idle_timeout: a started run silent (no event, no heartbeat) this long has lost
            its worker: the stream ends with ``error`` (``WorkerLostError``).
        ping_interval: seconds between keep-alive comments on an idle stream.
        client_buffer: events read ahead for one client.
        slow_client_timeout: a client whose buffer stays full this long is disconnected.
        send_timeout: a write to a client blocked this long drops its connection.
        include_traceback: put the worker's traceback in ``error`` events.
        allow_cancel: honour the LangGraph SDKs' ``cancel_on_disconnect``: a join client
            that asked for it and goes away before the run ends cancels the run (its
            worker needs ``Publisher(remote_cancel=True)``, the default). Off by default:
            with it, whoever may follow a run (``authorize``) may also cancel it.
        retry_ms: the ``retry:`` reconnection delay suggested to ``EventSource``.
        hub_max_events: records of a run held in memory for its clients (see below).
        page: serve a small page at ``/`` that follows ``?run=<run id>`` with
            ``EventSource`` (tokens, progress bars, tool calls, the end state).
        socket_send_buffer: with :meth:`serve`, the kernel send buffer of each client
            connection in bytes (``SO_SNDBUF``); None: the kernel's autotuning (up to
            megabytes, which a client that stops reading fills before it counts as slow).

    Raises:
        ConfigurationError, MissingDependencyError: as :class:`~eventbus.Subscriber`.
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str = "default",
        *,
        subscriber: Subscriber | None = None,
        authorize: Authorize | None = None,
        cors_origins: Sequence[str] | None = None,
        start_timeout: float = 5.0,
        max_wait: float = 300.0,
        idle_timeout: float | None = 30.0,
        ping_interval: float = 15.0,
        client_buffer: int = 1000,
        slow_client_timeout: float = 10.0,
        send_timeout: float = 30.0,
        include_traceback: bool = False,
        allow_cancel: bool = False,
        retry_ms: int = 1000,
        socket_send_buffer: int | None = None,
        page: bool = False,
        hub_max_events: int = 10_000,
        transport_options: dict[str, Any] | None = None,
    ) -> None:
        if subscriber is None:
            if url is None:
                raise EventbusError("Gateway needs a broker url or a subscriber")
            subscriber = Subscriber(
                url,
                namespace,
                idle_timeout=idle_timeout,
                transport_options=transport_options,
            )
            self._owns_subscriber = True
        else:
            self._owns_subscriber = False
        self.subscriber = subscriber
        self.namespace = subscriber.namespace
        self.authorize = authorize
        self.start_timeout = start_timeout
        self.max_wait = max_wait
        self.ping_interval = ping_interval
        self.client_buffer = max(1, client_buffer)
        self.slow_client_timeout = slow_client_timeout
        self.send_timeout = send_timeout
        self.include_traceback = include_traceback
        self.allow_cancel = allow_cancel
        self._cancels: set[asyncio.Task[Any]] = set()
        self.retry_ms = retry_ms
        self.socket_send_buffer = socket_send_buffer
        self.stats = GatewayStats()
        self._connected = False
        self._connect_lock = asyncio.Lock()
        self._change = asyncio.Event()
        self.hub_max_events = max(1, hub_max_events)
        self._hubs: dict[str, _Hub] = {}
        self._rendered = RenderCache()
        self._runs_cache: tuple[float, list[dict[str, Any]]] | None = None
        middleware = []
        if cors_origins:
            middleware.append(
                Middleware(
                    CORSMiddleware,
                    allow_origins=list(cors_origins),
                    allow_methods=["GET"],
                    allow_headers=["Last-Event-ID", "Authorization", "Cache-Control"],
                )
            )
        self.app = Starlette(
            routes=[
                *([Route("/", self._page)] if page else []),
                Route("/healthz", self._healthz),
                Route("/runs", self._runs),
                Route("/runs/{run_id}", self._run_status),
                Route("/runs/{run_id}/events", self._sse),
                Route("/runs/{run_id}/stream", self._join_stream),
                WebSocketRoute("/runs/{run_id}/ws", self._websocket),
                Route("/threads/{thread_id}/runs/{run_id}", self._run_status),
                Route("/threads/{thread_id}/runs/{run_id}/stream", self._join_stream),
            ],
            middleware=middleware,
            lifespan=self._lifespan,
            exception_handlers={404: _not_found},
        )
        self.app.state.gateway = self

    # -- life cycle --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        try:
            await self._connect()
        except EventbusError as exc:  # /healthz says so; requests retry the connection
            logger.warning("broker not reachable yet: %s", exc)
        yield
        await self.aclose()

    async def _connect(self) -> Subscriber:
        # lazily: a gateway mounted in another app does not get its own lifespan
        if not self._connected:
            async with self._connect_lock:
                if not self._connected:
                    await self.subscriber.connect()
                    self._connected = True
        return self.subscriber

    async def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 8000,
        ready: Callable[[int], None] | None = None,
    ) -> None:
        """Serve ``self.app`` with uvicorn until cancelled (then streams get a few seconds
        to end, and the broker connection is closed). ``ready(port)`` is called once the
        socket listens (with the port bound, for ``port=0``).

        Raises:
            OSError: the address cannot be bound.
        """
        import socket

        import uvicorn

        if self.authorize is None and not _is_loopback(host):
            logger.warning(
                "eventbus gateway on %s without an authorization hook: anyone who can reach "
                "it can follow every run of namespace %r",
                host,
                self.namespace,
            )
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self.socket_send_buffer is not None:
                # accepted connections inherit it
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer)
            sock.bind((host, port))
            sock.listen(1024)
            # a slow LangGraph SDK client's stream is dropped on purpose (EventStream)
            logging.getLogger("uvicorn.error").addFilter(_DROPPED_ON_PURPOSE)
            config = uvicorn.Config(
                self.app,
                log_level="warning",
                lifespan="on",
                ws="websockets-sansio" if "websockets-sansio" in _WS_PROTOCOLS else "auto",
                timeout_graceful_shutdown=3,
            )
            server = uvicorn.Server(config)
            task = asyncio.create_task(server.serve(sockets=[sock]))
            # listening before uvicorn runs: clients queue in the backlog meanwhile
            if ready is not None:
                ready(sock.getsockname()[1])
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                server.should_exit = True
                await task
                raise
        finally:
            sock.close()

    async def aclose(self) -> None:
        """Close the broker connection (if the gateway opened it)."""
        # a cancel asked for by a client that left is sent before the connection goes
        if self._cancels:
            await asyncio.wait(set(self._cancels), timeout=self.send_timeout)
        if self._owns_subscriber and self._connected:
            self._connected = False
            await self.subscriber.aclose()

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def wait_for(self, predicate: Callable[[GatewayStats], bool], timeout: float) -> None:
        """Wait until ``predicate(self.stats)`` holds. Raises TimeoutError after ``timeout``."""
        with anyio.fail_after(timeout):
            while not predicate(self.stats):
                await self._change.wait()

    # -- helpers -----------------------------------------------------------------------

    def cancel_on_disconnect(self, run_id: str) -> None:
        """Cancel ``run_id`` in the background: its client asked for it and left."""

        async def cancel() -> None:
            try:
                result = await self.subscriber.cancel(run_id, reason="client disconnected")
            except EventbusError as exc:
                logger.warning("cancel_on_disconnect of run %s failed: %s", run_id, exc)
                return
            if result.outcome == "cancelled":
                self.stats.cancels += 1
                self._changed()

        task = asyncio.create_task(cancel())
        self._cancels.add(task)
        task.add_done_callback(self._cancels.discard)

    async def _allowed(self, conn: HTTPConnection, run_id: str) -> bool:
        if self.authorize is None:
            return True
        verdict = self.authorize(conn, run_id)
        if isinstance(verdict, Awaitable):
            verdict = await verdict
        return bool(verdict)

    def _error_data(self, error: BaseException | None) -> dict[str, Any] | None:
        if error is None:
            return None
        return error_jsonable(error, traceback=self.include_traceback)

    def _wait(self, conn: HTTPConnection) -> float:
        raw = conn.query_params.get("wait")
        if raw is None:
            return self.start_timeout
        try:
            return max(0.0, min(float(raw), self.max_wait))
        except ValueError:
            return self.start_timeout

    async def _open(
        self, conn: HTTPConnection, run_id: str, after: str | None
    ) -> _Session | JSONResponse:
        """A started session, or the error response (404 for a run that did not start
        within the wait)."""
        session = _Session(self, run_id, after)
        session.start()
        if after is None:
            wait = self._wait(conn)
            try:
                with anyio.fail_after(wait):
                    await session.first.wait()
            except TimeoutError:
                await session.close()
                return _json_error(
                    404,
                    f"run {run_id} not found in namespace {self.namespace!r} "
                    f"(nothing published within {wait:g}s)",
                )
        return session

    # -- routes ------------------------------------------------------------------------

    async def _page(self, request: Request) -> Response:
        from importlib.resources import files

        html = files("eventbus").joinpath("_static/follow.html").read_bytes()
        return Response(html, media_type="text/html", headers={"cache-control": "no-cache"})

    async def _healthz(self, request: Request) -> Response:
        try:
            await self._connect()
        except EventbusError as exc:
            return JSONResponse({"status": "unavailable", "error": str(exc)}, status_code=503)
        return JSONResponse({"status": "ok", "namespace": self.namespace})

    async def _runs(self, request: Request) -> Response:
        from ._runs import list_runs

        try:
            limit = max(1, min(int(request.query_params.get("limit", "50")), 1000))
        except ValueError:
            return _json_error(400, "limit must be an integer")
        now = time.time()
        cached = self._runs_cache
        if cached is None or now - cached[0] > 2.0:
            sub = await self._connect()
            runs, _ = await list_runs(
                sub,
                wait=0.5,
                settle=0.2,
                max_records=100_000,
                idle=self.subscriber.idle_timeout or 3600,
                now=now,
            )
            cached = self._runs_cache = (now, [r.to_dict() for r in runs])
        allowed = [r for r in cached[1] if await self._allowed(request, r["run_id"])]
        return JSONResponse({"runs": allowed[:limit]})

    async def _run_status(self, request: Request) -> Response:
        run_id = _valid_run(request.path_params["run_id"])
        if run_id is None:
            return _json_error(404, "not a run id (a UUID)")
        if not await self._allowed(request, run_id):
            return _json_error(403, "not allowed")
        session = await self._open(request, run_id, None)
        if isinstance(session, JSONResponse):
            return session
        status = "running"
        events = 0
        try:
            # what is retained now: until the end, or nothing new for a moment
            while True:
                item = await session.next(0.25)
                if item is None:
                    break
                if isinstance(item, _Terminal):
                    status = {
                        "end": "success",
                        "cancelled": "interrupted",
                        "lost": "lost",
                        "slow": "running",
                    }.get(item.kind, "error")
                    break
                events += 1
        finally:
            await session.close()
        return JSONResponse(
            {
                "run_id": run_id,
                "thread_id": request.path_params.get("thread_id"),
                "status": status,
                "events": events,
            }
        )

    def _resume_token(self, conn: HTTPConnection) -> str | JSONResponse | None:
        token = conn.headers.get("last-event-id") or conn.query_params.get("last_event_id")
        if not token:
            return None
        try:
            _parse_token(token)
        except InvalidResumeToken:
            return _json_error(
                400,
                f"malformed Last-Event-ID {token[:100]!r}: send back the id: of an event "
                "this gateway sent",
            )
        return token

    def _filter(self, conn: HTTPConnection) -> _langchain.EventFilter | None:
        options: dict[str, list[str]] = {}
        for key in FILTERS:
            values = [v for raw in conn.query_params.getlist(key) for v in raw.split(",") if v]
            if values:
                options[key] = values
        return _langchain.EventFilter(**options) if options else None

    async def _prepare(self, request: Request) -> tuple[str, _Session] | JSONResponse:
        run_id = _valid_run(request.path_params["run_id"])
        if run_id is None:
            return _json_error(404, "not a run id (a UUID)")
        token = self._resume_token(request)
        if isinstance(token, JSONResponse):
            return token
        if not await self._allowed(request, run_id):
            return _json_error(403, "not allowed")
        session = await self._open(request, run_id, token)
        if isinstance(session, JSONResponse):
            return session
        return run_id, session

    async def _sse(self, request: Request) -> Response:
        prepared = await self._prepare(request)
        if isinstance(prepared, JSONResponse):
            return prepared
        run_id, session = prepared
        render = sse_render(self, run_id, self._filter(request))
        # the retry: field rides on the first event (a block of its own is dispatched as
        # an empty message by some clients, e.g. httpx-sse)
        return EventStream(self, session, render, b"", first_prefix=b"retry: %d\n" % self.retry_ms)

    async def _join_stream(self, request: Request) -> Response:
        return await join_stream(self, request)

    async def _websocket(self, websocket: WebSocket) -> None:
        await websocket_endpoint(self, websocket, _valid_run(websocket.path_params["run_id"]))


class _DroppedOnPurpose(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != "ASGI callable returned without completing response."


_DROPPED_ON_PURPOSE = _DroppedOnPurpose()


def _valid_run(value: str) -> str | None:
    try:
        return _run_key(value)
    except EventbusError:
        return None


async def _not_found(request: Request, exc: Exception) -> Response:
    return _json_error(404, "not found")


def _json_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(url: str, namespace: str = "default", **options: Any) -> Starlette:
    """A Starlette app serving runs of ``namespace`` (``Gateway(url, namespace,
    **options).app``); its Gateway is ``app.state.gateway``.

    Raises:
        ConfigurationError, MissingDependencyError: as :class:`~eventbus.Subscriber`.
    """
    return Gateway(url, namespace, **options).app


async def serve(
    url: str,
    namespace: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    ready: Callable[[int], None] | None = None,
    **options: Any,
) -> None:
    """Run a :class:`Gateway` (``Gateway(url, namespace, **options)``) with uvicorn until
    cancelled; see :meth:`Gateway.serve`.

    Raises:
        OSError: the address cannot be bound.
        ConfigurationError, MissingDependencyError: as :class:`~eventbus.Subscriber`.
    """
    await Gateway(url, namespace, **options).serve(host=host, port=port, ready=ready)
