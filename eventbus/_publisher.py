"""Publisher: run LangChain runnables and publish their events (``SyncPublisher``, for
synchronous code, wraps it: ``eventbus._sync_publisher``).

``run()`` drives the runnable with LangChain's v2 event handler and encodes each event at
its callback (``eventbus._direct``: no hop through ``astream_events``' queue);
``astream_events()`` tees LangChain's own generator. Each encoded event is appended to
its run's buffer, which the writer publishes (``eventbus._writer``). When more than
``max_buffer_bytes`` wait unpublished, the run is paused (backpressure) until the writer
catches up: memory stays bounded and nothing is dropped. Terminal records are flushed at
once, and ``run()`` returns or raises only after everything of its run is on the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, NoReturn, cast

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config

from . import _langchain
from ._control import CancelListener
from ._direct import DirectHandler, add_handler, direct_target
from ._exceptions import (
    ConfigurationError,
    PublishError,
    RunCancelledError,
)
from ._langchain import StreamEvent
from ._lc_handler import ForwardingHandler
from ._records import failure_record, shrink, tree_by_key
from ._signing import Keyring, KeysArg, keyring_from
from ._wire import Cancelled, Codec, End, RecordEncoder
from ._writer import Batcher, PublisherStats, Run
from .transports import Transport, open_transport, redact_url

__all__ = ["Publisher", "PublisherStats"]

logger = logging.getLogger("eventbus")

# a publisher encodes LangChain's values (and imports LangChain anyway): registered now
_langchain.install_langchain()


# room a frame keeps under the broker's message-size limit for its envelope (namespace,
# run, producer, key id, MAC) and the transport's own headers
_ENVELOPE_ROOM = 64 * 1024


def _run_id_of(config: RunnableConfig) -> str:
    rid: Any = config.get("run_id")
    if rid is None:
        rid = _langchain.new_run_id()
    elif not isinstance(rid, uuid.UUID):
        rid = uuid.UUID(str(rid))  # LangChain wants a UUID; users may hand us a str
    config["run_id"] = rid
    return str(rid)


class Publisher(Batcher):
    """Runs runnables and publishes every ``astream_events(version="v2")`` event.

    Use as an async context manager (or call :meth:`connect` and :meth:`aclose`)::

        async with eventbus.Publisher("redis://localhost:6379/0", namespace="myapp") as pub:
            output = await pub.run(chain, {"topic": "bees"}, config={"run_id": run_id})

    Args:
        url: broker URL; the scheme picks the transport (``redis://``, ``rediss://``,
            ``unix://``, ``amqp://``, ``amqps://``, ``memory://``).
        namespace: the stream namespace subscribers name too.
        codec: ``"msgpack"`` (default) or ``"json"``.
        linger: while events arrive fast (more than 2,000 a second over 20 ms, as a streaming model
            run's do), the longest a record waits for others to join its batch, in
            seconds; at lower rates every event is published at once. Each broker
            message costs the run's thread more than an event does (about 0.3 ms of CPU
            for an AMQP publish with its confirm), so fewer, larger batches are what keep
            the overhead on the run low: 10 ms instead of 3 ms took a fast 2k-token chain
            from +49% to +23% CPU over local ``astream_events`` with RabbitMQ, +38% to +17%
            with Redis.
        max_frame_bytes: frames (broker messages) are packed up to about this size.
        max_buffer_bytes: unpublished bytes above which runs are paused (backpressure).
        max_event_bytes: an encoded event larger than this, or than the broker accepts
            in one message (asked at connect: :attr:`max_message_bytes`), has its
            ``data`` replaced by :class:`eventbus.Unrepresentable` placeholders (the run
            goes on).
        heartbeat_interval: seconds between heartbeats of a run that emits nothing.
        keys: sign every frame (``{key_id: secret}`` or ``"key_id:secret,..."``, secrets
            of 16 bytes or more) with the key ``sign_with`` (default: the first listed).
            Without it, the URL's ``keys``/``sign_with`` options or the ``EVENTBUS_KEYS``/
            ``EVENTBUS_SIGN_WITH`` environment variables; with none, frames are unsigned.
        sign_with: the key id to sign with.
        remote_cancel: answer ``Subscriber.cancel`` for the runs this publisher runs
            (it listens on the namespace's control channel; with keys, only to requests
            signed with one of them).
        transport_options: passed to the transport (see its docs).

    Raises:
        ConfigurationError: bad URL, scheme or option (at construction); malformed keys.
        MissingDependencyError: the scheme's extra is not installed.
    """

    def __init__(
        self,
        url: str,
        namespace: str = "default",
        *,
        codec: Codec = "msgpack",
        linger: float = 0.010,
        max_frame_bytes: int = 256 * 1024,
        max_buffer_bytes: int = 64 * 1024 * 1024,
        max_event_bytes: int = 32 * 1024 * 1024,
        heartbeat_interval: float = 5.0,
        keys: KeysArg | Keyring = None,
        sign_with: str | None = None,
        remote_cancel: bool = True,
        transport_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.url = redact_url(url)
        self.namespace = namespace
        self.producer = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.stats = PublisherStats()
        self.last_run_id: str | None = None
        #: the largest message the broker accepts, once connected (None: no known limit)
        self.max_message_bytes: int | None = None
        url, self._keyring = keyring_from(url, keys, sign_with)
        if max_event_bytes < 1 or max_frame_bytes < 1:
            raise ConfigurationError("max_event_bytes and max_frame_bytes must be >= 1")
        self._transport: Transport = open_transport(url, namespace, **(transport_options or {}))
        self._encoder = RecordEncoder(codec)
        self._linger = linger
        self._max_frame_bytes = max_frame_bytes
        self._max_buffer_bytes = max_buffer_bytes
        self._max_event_bytes = max_event_bytes
        self._heartbeat_interval = heartbeat_interval
        self._remote_cancel = remote_cancel
        self._runs: dict[str, Run] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self) -> Publisher:
        """Connect the transport and start the writer.

        Raises:
            ConnectError, AuthenticationError: the broker cannot be used.
        """
        await self._transport.connect()
        limit = getattr(self._transport, "max_message_bytes", None)
        if isinstance(limit, int) and limit > 0:
            self.max_message_bytes = limit
            self._frame_limit = max(1, limit - _ENVELOPE_ROOM)
            self._max_event_bytes = min(self._max_event_bytes, self._frame_limit)
        self._loop = asyncio.get_running_loop()
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Condition()
        self._tasks = [
            asyncio.create_task(self._writer(), name="eventbus-writer"),
            asyncio.create_task(self._heartbeats(), name="eventbus-heartbeats"),
        ]
        if self._remote_cancel:
            listener = CancelListener(
                self._transport, self.namespace, self.producer, self._keyring, self._runs
            )
            self._tasks.append(asyncio.create_task(listener.run(), name="eventbus-cancel"))
        return self

    async def __aenter__(self) -> Publisher:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Publish what is buffered, stop the writer and close the transport."""
        if self._closed:
            return
        try:
            if self._tasks:
                await self.flush()
        finally:
            self._closed = True
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._transport.aclose()

    # -- running -----------------------------------------------------------------------

    async def run(
        self,
        runnable: Runnable[Any, Any],
        input: Any,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> Any:
        """Run ``runnable`` with ``astream_events(version="v2")``, publish every event,
        and return the run's output (the ``output`` of the root run's end event, which is
        what ``ainvoke`` returns).

        The events are those ``astream_events`` yields (``include_*``/``exclude_*`` in
        ``kwargs`` filter what is published, as they filter what it yields), but the
        runnable is driven as ``astream_events`` drives it, with LangChain's own v2 event
        handler, and each event is encoded at its callback, without the queue and
        generator ``astream_events`` hands it through (runnables that override
        ``astream_events`` themselves go through it).

        The root run id is ``config["run_id"]`` if given (str or UUID), otherwise a new
        uuid7; it is also in :attr:`last_run_id` as soon as the run starts.

        Raises:
            Exception: whatever the runnable raised (after its error was published).
            RunCancelledError: the run was cancelled remotely (``Subscriber.cancel``);
                its followers get the same error, with the same reason.
            PublishError: the events could not be published.
        """
        self._check_open()
        kwargs.pop("version", None)
        config = ensure_config(config)
        run_id = _run_id_of(config)
        target = direct_target(runnable, config, kwargs)
        if target is not None:
            return await self._run_direct(run_id, input, *target)
        output = None
        async with contextlib.aclosing(self._events(runnable, input, config, kwargs)) as events:
            async for _event, run in events:
                output = run.output
        return output

    async def _run_direct(
        self,
        run_id: str,
        value: Any,
        runnable: Runnable[Any, Any],
        config: RunnableConfig,
        kwargs: dict[str, Any],
        filters: dict[str, Any],
    ) -> Any:
        """``run`` without LangChain's event queue (see ``eventbus._direct``)."""
        assert self._loop is not None
        run = self._open_run(run_id)
        task = run.task = asyncio.current_task()
        handler = DirectHandler(
            value, self._loop, functools.partial(self._emit_direct, run), **filters
        )
        handler.task = task
        handler.over_budget = lambda: self._buffered > self._max_buffer_bytes
        handler.wait_budget = self._backpressure
        handler.cancelling = task.cancelling() if task is not None else 0
        config = ensure_config(config)  # (as v2 does, after a binding merged its own)
        add_handler(config, handler)
        root = cast(uuid.UUID, config["run_id"])
        try:
            try:
                stream = runnable.astream(value, config, **kwargs)
                async with contextlib.aclosing(cast(AsyncGenerator[Any, None], stream)):
                    async for _ in handler.tap_output_aiter(root, stream):
                        if self._buffered > self._max_buffer_bytes:
                            await self._backpressure()
                        self._raise_run_failure(run)
                        if handler.error is not None:
                            raise handler.error
            except asyncio.CancelledError:
                if task is None or task.cancelling() > handler.cancelling:
                    raise
                # the runnable raised it itself: v2's iterator then just ends
            await handler.drain()
            handler.closed = True
            if handler.error is not None:
                raise handler.error
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                await handler.drain()  # (v2 yields what was sent before it raises)
            handler.closed = True
            await self._fail(run, exc)
        await self._finish(run, None)
        return run.output

    async def _fail(self, run: Run, exc: BaseException) -> NoReturn:
        """End ``run`` with ``exc`` (published as its error or cancel record) and raise
        it, or the run's remote cancel as ``RunCancelledError``."""
        cancelled = run.cancel_error(exc)
        await self._finish(run, cancelled or exc)
        if cancelled is not None:
            raise cancelled from None
        raise exc

    def _emit_direct(self, run: Run, event: StreamEvent) -> None:
        self._emit_event(run, event)
        if _langchain.is_root_end(event, run.run_id):
            run.output = event["data"].get("output")

    async def astream_events(
        self,
        runnable: Runnable[Any, Any],
        input: Any,
        config: RunnableConfig | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[StreamEvent, None]:
        """Like ``runnable.astream_events(input, config, version="v2", **kwargs)``, and
        publishes every event as it yields it. ``include_*``/``exclude_*`` filter what is
        yielded here; the full stream is published (subscribers filter their own).

        Stopping early (``break``) ends the run remotely with ``RunCancelledError``;
        a remote cancel (``Subscriber.cancel``) raises ``RunCancelledError`` here.
        """
        options = _langchain.EventFilter.pop_options(kwargs)
        keep = _langchain.EventFilter(**options) if options else None
        async with contextlib.aclosing(self._events(runnable, input, config, kwargs)) as events:
            async for event, _run in events:
                if keep is None:
                    yield event
                else:
                    kept = keep(event)
                    if kept is not None:
                        yield kept

    async def _events(
        self,
        runnable: Runnable[Any, Any],
        input: Any,
        config: RunnableConfig | None,
        kwargs: dict[str, Any],
    ) -> AsyncGenerator[tuple[StreamEvent, Run], None]:
        self._check_open()
        kwargs.pop("version", None)
        config = ensure_config(config)
        run = self._open_run(_run_id_of(config))
        run.task = asyncio.current_task()
        stream = runnable.astream_events(input, config, version="v2", **kwargs)
        try:
            async with contextlib.aclosing(cast(AsyncGenerator[StreamEvent, None], stream)):
                async for event in cast(AsyncIterator[StreamEvent], stream):
                    self._emit_event(run, event)
                    if self._buffered > self._max_buffer_bytes:
                        await self._backpressure()
                    self._raise_run_failure(run)
                    if _langchain.is_root_end(event, run.run_id):
                        run.output = event["data"].get("output")
                    run.outside = True
                    yield event, run
                    run.resumed()
        except BaseException as exc:
            await self._fail(run, exc)
        await self._finish(run, None)

    def callback_handler(self) -> BaseCallbackHandler:
        """A LangChain callback handler that publishes the v2 events of the runs it sees,
        for code that calls ``invoke``/``ainvoke``/``stream`` itself::

            chain.invoke(x, config={"callbacks": [pub.callback_handler()]})

        Each root run becomes a published run (its id: the root run id). A plain
        ``invoke`` produces fewer stream events than ``astream_events`` does (LangChain
        streams chains only when asked to). Call :meth:`flush` (or leave the publisher's
        context) to be sure everything is on the broker.
        """
        self._check_open()
        assert self._loop is not None
        return ForwardingHandler(_HandlerSink(self, self._loop))

    def _handler_event(self, root: str, snapshot: Any, event: StreamEvent) -> None:
        run = self._runs.get(root)
        if run is not None:
            self._emit_tree(run, snapshot, event)

    def _handler_done(self, root: str, error: BaseException | None) -> None:
        run = self._runs.get(root)
        if run is None:
            return
        self._terminal(run, End(0, 0.0) if error is None else failure_record(error))
        del self._runs[root]

    async def flush(self) -> None:
        """Wait until everything emitted so far is on the broker.

        Raises:
            PublishError: records of a run that had not failed yet could not be published
                meanwhile (a failed batch fails its runs, not the publisher: later batches
                are tried again).
        """
        failures = self._failures
        await self._wait_published(self._emitted)
        if self._failures != failures and self._last_failure is not None:
            raise self._last_failure

    # -- emitting ----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed or self._loop is None:
            raise PublishError("the publisher is not open (use `async with Publisher(...)`)")

    @staticmethod
    def _raise_run_failure(run: Run) -> None:
        if run.failure is not None:
            raise run.failure

    def _open_run(self, run_id: str) -> Run:
        run = Run(run_id)
        self._runs[run_id] = run
        self.last_run_id = run_id
        return run

    def _tree(self, event: Any) -> Any:
        """The event's value tree; never raises (the walker turns what it cannot carry
        into placeholders; this guards against what even that misses, key by key)."""
        try:
            return self._encoder.to_tree(event)
        except Exception:
            return tree_by_key(self._encoder.to_tree, event)

    def _emit_event(self, run: Run, event: StreamEvent) -> None:
        self._emit_tree(run, self._tree(event), event)

    def _emit_tree(self, run: Run, tree: Any, event: StreamEvent) -> None:
        run.seq += 1
        # (encode_event never raises: a value the format refuses is repaired in place)
        data = self._encoder.encode_event(run.seq, time.time(), tree)
        if len(data) > self._max_event_bytes:
            size = len(data)
            shrunk = self._tree(shrink(event, size, self._max_event_bytes))
            data = self._encoder.encode_event(run.seq, time.time(), shrunk)
            self.stats.oversized_events += 1
            logger.warning(
                "run %s: event #%d is %d bytes encoded (max_event_bytes=%d, or the broker's "
                "limit); its data was replaced by placeholders",
                run.run_id,
                run.seq,
                size,
                self._max_event_bytes,
            )
        self.stats.events += 1
        self._append(run, data, run.seq)

    async def _finish(self, run: Run, exc: BaseException | None) -> None:
        if exc is None:
            self._terminal(run, End(0, 0.0))
        elif isinstance(exc, RunCancelledError):  # (remotely)
            self._terminal(run, Cancelled(0, 0.0, reason=exc.reason))
        elif isinstance(exc, asyncio.CancelledError):
            self._terminal(run, Cancelled(0, 0.0, reason="the run's task was cancelled"))
        elif isinstance(exc, GeneratorExit):
            self._terminal(run, Cancelled(0, 0.0, reason="the local consumer stopped iterating"))
        else:
            self._terminal(run, failure_record(exc))
        self._runs.pop(run.run_id, None)
        if isinstance(exc, (asyncio.CancelledError, GeneratorExit)):
            # the caller is going away: publish the end in the background, do not block it
            task = asyncio.ensure_future(self._quiet_flush())
            self._tasks.append(task)  # cancelled by aclose() if still running then
            task.add_done_callback(self._forget_task)
            return
        await self._wait_published(self._emitted)
        if exc is None or isinstance(exc, Exception):
            self._raise_run_failure(run)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with contextlib.suppress(ValueError):
            self._tasks.remove(task)

    async def _quiet_flush(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()


class _HandlerSink:
    """The callback handler's :class:`~eventbus._lc_handler.RunSink`: it encodes each event
    in whatever thread LangChain calls it from (so that what is published is the event as
    it was at that moment) and hands it to the publisher on the publisher's loop."""

    def __init__(self, publisher: Publisher, loop: asyncio.AbstractEventLoop) -> None:
        self._publisher = publisher
        self._loop = loop

    def _call(self, fn: Any, *args: Any) -> None:
        if _on_loop(self._loop):
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)

    def start(self, root: str) -> None:
        self._call(self._publisher._open_run, root)

    def event(self, root: str, event: StreamEvent) -> None:
        publisher = self._publisher
        snapshot = publisher._encoder.snapshot(publisher._tree(event))
        self._call(publisher._handler_event, root, snapshot, event)

    def end(self, root: str) -> None:
        self._call(self._publisher._handler_done, root, None)

    def error(self, root: str, error: BaseException) -> None:
        self._call(self._publisher._handler_done, root, error)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
