"""Remote cancel over the transport's control channel (``Transport.signal``/``signals``).

A subscriber asks (:func:`cancel`): it reads the run's stream first, so that a run that
already ended, or that nothing is known of, is reported as such without asking anyone;
otherwise it broadcasts a ``cancel`` request (again every half second, since the control
channel stores nothing and drops what no one hears) until the worker that runs it answers
or ``timeout`` passes. Every publisher listens (:class:`CancelListener`); the one running
the run cancels the run's task and answers ``cancelling``. The run then ends as any
cancelled run does: its followers get :class:`~eventbus.RunCancelledError` with the
reason given.

With signing keys, requests and answers carry a MAC (over a body that no frame can be)
and a time: a publisher with keys ignores unsigned, badly signed and stale requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from ._exceptions import RunCancelledError, SignatureError
from ._runs import RunInfo, _aclose, run_status
from ._signing import Keyring
from .transports import Transport

if TYPE_CHECKING:
    from ._subscriber import Subscriber

__all__ = ["CancelListener", "CancelResult", "CancelState", "cancel_run"]

logger = logging.getLogger("eventbus")

# how old a signed request may be (clocks of workers and callers differ a little)
_MAX_AGE = 120.0
_RESEND = 0.5  # seconds between two broadcasts of one request


class _Control(msgspec.Struct, omit_defaults=True):
    """One control message. ``op``: ``cancel`` (a request), ``cancelling`` (the worker
    running the run cancels it), ``refused`` (it runs it but cannot cancel it)."""

    op: str
    ns: str
    run: str
    id: str
    at: float
    reason: str = ""
    producer: str = ""
    kid: str = ""
    mac: bytes = b""


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Control)


def _body(msg: _Control) -> bytes:
    # 0xc1 is a byte msgpack never uses: no frame's records can be this body
    return b"\xc1ctl1" + _encoder.encode([msg.op, msg.id, msg.at, msg.reason])


def encode(msg: _Control, keyring: Keyring | None) -> bytes:
    if keyring is not None:
        msg.kid, msg.mac = keyring.sign(msg.ns, msg.run, msg.producer, _body(msg))
    return _encoder.encode(msg)


def decode(data: bytes, namespace: str, keyring: Keyring | None) -> _Control | None:
    """The message, or None for one to ignore: malformed, of another namespace, or (with
    keys) unsigned, badly signed or stale."""
    try:
        msg = _decoder.decode(data)
    except (msgspec.DecodeError, ValueError):
        return None
    if msg.ns != namespace:
        return None
    if keyring is not None:
        try:
            keyring.verify(msg.kid, msg.mac, msg.ns, msg.run, msg.producer, _body(msg))
        except SignatureError:
            return None
        if abs(time.time() - msg.at) > _MAX_AGE:
            return None
    return msg


@dataclass(frozen=True)
class CancelResult:
    """What became of a cancel request.

    ``outcome``: ``cancelled`` (the worker running the run cancelled its task; its
    followers get :class:`~eventbus.RunCancelledError` with the reason), ``finished``
    (it had already ended: ``status`` says how), ``unknown`` (nothing of the run is
    retained: never started, or expired), ``refused`` (its worker cannot cancel it: a
    run published through a callback handler has no task of its own), ``no_worker``
    (it has not ended, and no worker answered within the timeout: its worker is gone).
    ``worker``: the producer id of the worker that answered.
    """

    run_id: str
    outcome: Literal["cancelled", "finished", "unknown", "refused", "no_worker"]
    status: RunInfo
    worker: str | None = None


async def cancel_run(
    sub: Subscriber, run_id: str, reason: str, *, timeout: float = 10.0
) -> CancelResult:
    """Ask the worker running ``run_id`` to cancel it (see the module docstring and
    :meth:`eventbus.Subscriber.cancel`).

    Raises:
        TransportError: the broker could not be used.
    """
    status = await run_status(sub, run_id)
    if status.status == "unknown":
        return CancelResult(run_id, "unknown", status)
    if status.status not in ("running", "lost"):
        return CancelResult(run_id, "finished", status)
    transport: Transport = sub._transport
    keyring = sub._keyring
    request = _Control("cancel", sub.namespace, run_id, uuid.uuid4().hex, 0.0, reason=reason)
    answer: _Control | None = None
    heard, listening = asyncio.Event(), asyncio.Event()

    async def listen() -> None:
        nonlocal answer
        messages = transport.signals()
        try:
            async for data in messages:
                if not data:
                    listening.set()
                    continue
                msg = decode(data, sub.namespace, keyring)
                if msg is not None and msg.id == request.id and msg.op != "cancel":
                    answer = msg
                    heard.set()
                    return
        finally:
            await _aclose(messages)

    import anyio  # (not with the subscriber: `eventbus tail` starts without it)

    listener = asyncio.ensure_future(listen())
    try:
        with anyio.move_on_after(timeout):
            # (an answer to a request sent before the listener listens would be lost)
            await _first(listening, listener)
            while not listener.done():
                request.at = time.time()
                await transport.signal(encode(request, keyring))
                with contextlib.suppress(TimeoutError):
                    with anyio.fail_after(_RESEND):
                        await heard.wait()
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await listener
    failure = None if listener.cancelled() else listener.exception()
    if failure is not None:
        raise failure
    if answer is not None:
        outcome: Literal["cancelled", "refused"] = (
            "cancelled" if answer.op == "cancelling" else "refused"
        )
        return CancelResult(run_id, outcome, status, answer.producer)
    status = await run_status(sub, run_id)  # it may have ended meanwhile
    if status.status not in ("running", "lost", "unknown"):
        return CancelResult(run_id, "finished", status)
    return CancelResult(run_id, "no_worker", status)


async def _first(event: asyncio.Event, task: asyncio.Future[None]) -> None:
    """Until ``event`` is set or ``task`` ends (it failed: raised below)."""
    waiter: asyncio.Future[Any] = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()


class CancelState:
    """What a run needs for a remote cancel (a mixin of the publisher's run): the task
    that runs it (None: a callback handler's run, which has none), whether that task is
    outside the run right now (its consumer holds an event: the cancel then takes
    effect when it resumes the run), and why it was cancelled."""

    __slots__ = ("cancel_reason", "outside", "task")
    done: bool
    run_id: str

    def __init__(self) -> None:
        self.task: asyncio.Task[Any] | None = None
        self.outside = False
        self.cancel_reason: str | None = None

    def cancel_error(self, exc: BaseException) -> RunCancelledError | None:
        """The RunCancelledError to raise instead of ``exc`` if ``exc`` is what a remote
        cancel caused (the task's cancel is then taken back: the worker's task goes on),
        else None."""
        if self.cancel_reason is None:
            return None
        if isinstance(exc, RunCancelledError):
            return exc
        if not isinstance(exc, asyncio.CancelledError) or self.outside:
            return None
        task = asyncio.current_task()
        if task is not None and task is self.task and task.uncancel() > 0:
            return None  # cancelled by its owner too: that cancel goes on
        return RunCancelledError(self.run_id, self.cancel_reason)

    def resumed(self) -> None:
        """Its consumer resumed the run (SyncPublisher.stream_events does so from a new
        task each time). Raises RunCancelledError if it was cancelled meanwhile."""
        self.outside = False
        self.task = asyncio.current_task()
        if self.cancel_reason is not None:
            raise RunCancelledError(self.run_id, self.cancel_reason)


class CancelListener:
    """A publisher's side: answers the cancel requests for the runs it runs (``runs``:
    the publisher's runs by id), then cancels them. The answer goes out first: a worker
    whose cancelled run ends its process must not lose it."""

    def __init__(
        self,
        transport: Transport,
        namespace: str,
        producer: str,
        keyring: Keyring | None,
        runs: Mapping[str, CancelState],
    ) -> None:
        self._transport = transport
        self._namespace = namespace
        self._producer = producer
        self._keyring = keyring
        self._runs = runs

    async def run(self) -> None:
        """Listen until cancelled; broker trouble is logged and outlived."""
        while True:
            messages = self._transport.signals()
            try:
                async for data in messages:
                    await self._handle(data)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("the remote-cancel listener stopped (%s); restarting it", exc)
                await asyncio.sleep(1.0)
            finally:
                await _aclose(messages)

    async def _handle(self, data: bytes) -> None:
        if not data:  # (it listens)
            return
        msg = decode(data, self._namespace, self._keyring)
        if msg is None or msg.op != "cancel":
            return
        run = self._runs.get(msg.run)
        if run is None or run.done:
            return  # not ours: the worker that runs it answers
        reply = _Control(
            "cancelling" if run.task is not None else "refused",
            self._namespace,
            msg.run,
            msg.id,
            time.time(),
            producer=self._producer,
        )
        try:
            await self._transport.signal(encode(reply, self._keyring))
        except Exception as exc:  # (the caller asks again, or times out)
            logger.warning("could not answer a cancel of run %s: %s", msg.run, exc)
        finally:
            if run.task is not None and run.cancel_reason is None and not run.done:
                run.cancel_reason = msg.reason or "cancelled remotely"
                if not run.outside:
                    run.task.cancel(f"eventbus: run {msg.run} cancelled remotely")
