"""Run inspection: what ``Subscriber.runs``/``status``/``groups``/``dead_letters`` and
``eventbus runs``/``trace``/``groups``/``dead-letters`` show, for the command line and
any other front end (the HTTP gateway) alike.

Every function here only reads: the group stream without a group (``Transport.tap``),
a run's stream (``Transport.follow``), what the broker says of its groups. Nothing is
created on the broker, so a reader killed at any moment leaves nothing behind.

* :func:`list_runs` reads the namespace's retained frames and aggregates them per run
  (:class:`RunInfo`); :func:`run_status` reads one run's stream;
* :func:`trace_run` follows one run and builds its run tree (:func:`build_trace`);
* :func:`dead_letters` decodes a group's dead letters (:class:`DecodedDeadLetter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ._exceptions import (
    DecodeError,
    RemoteRunError,
    RunCancelledError,
    SequenceGapError,
    WorkerLostError,
)
from ._wire import Cancelled, End, Envelope, Event, Failed, Heartbeat, Record
from .transports import Entry, GroupInfo

if TYPE_CHECKING:
    from ._inbound import FrameReader
    from ._subscriber import Message, Subscriber

__all__ = [
    "DeadRecord",
    "DecodedDeadLetter",
    "RunInfo",
    "RunState",
    "RunTally",
    "build_trace",
    "dead_letters",
    "list_groups",
    "list_runs",
    "run_status",
    "tap_messages",
    "trace_run",
]

StreamEvent = dict[str, Any]

# seconds a status or runs read may take after its first wait, whatever the stream holds
_LIMIT = 30.0
# frames of a run refused in a row, none accepted, after which it is unknown to a reader
_REFUSED = 100

RunState = Literal["running", "ended", "failed", "cancelled", "lost", "unknown"]


def build_trace(
    run_id: str,
    items: Sequence[tuple[float, StreamEvent]],
    status: str = "ended",
    error: str | None = None,
) -> dict[str, Any]:
    """The run tree of a run's events ``(ts, event)``, as plain data.

    Each node: ``run_id``, ``name``, ``run_type`` (from ``on_<type>_start``),
    ``parent_id``, ``start``/``end`` (the worker's clock when the events were emitted),
    ``duration``, ``tokens`` (``on_chat_model_stream``/``on_llm_stream`` chunks),
    ``custom_events``, ``events``, ``error``, ``ended``, ``failed``, ``children``.
    """
    nodes: dict[str, dict[str, Any]] = {}
    roots: list[dict[str, Any]] = []
    tokens = 0
    for ts, event in items:
        kind = str(event.get("event", ""))
        rid = str(event.get("run_id", ""))
        parents = event.get("parent_ids") or []
        node = nodes.get(rid)
        if node is None:
            node = nodes[rid] = {
                "run_id": rid,
                "name": str(event.get("name", "")),
                "run_type": "?",
                "parent_id": str(parents[-1]) if parents else None,
                "start": ts,
                "end": None,
                "duration": None,
                "tokens": 0,
                "custom_events": 0,
                "events": 0,
                "error": None,
                "ended": False,
                "failed": False,
                "children": [],
            }
            parent = nodes.get(node["parent_id"]) if node["parent_id"] else None
            (parent["children"] if parent is not None else roots).append(node)
        node["events"] += 1
        if kind.startswith("on_") and kind.endswith("_start"):
            node["run_type"] = kind[3:-6]
            node["name"] = str(event.get("name", ""))
        elif kind in ("on_chat_model_stream", "on_llm_stream"):
            node["tokens"] += 1
            tokens += 1
        elif kind == "on_custom_event":
            node["custom_events"] += 1
        elif kind.endswith(("_end", "_error")):
            node["end"] = ts
            node["duration"] = max(0.0, ts - node["start"]) if ts and node["start"] else None
            node["ended"] = True
            if kind.endswith("_error"):
                data = event.get("data") or {}
                node["error"] = _error_text(data.get("error") if isinstance(data, dict) else None)
                node["failed"] = True
    started = items[0][0] if items else None
    ended = items[-1][0] if items else None
    return {
        "run_id": run_id,
        "status": status,
        "error": error,
        "events": len(items),
        "tokens": tokens,
        "started": started,
        "ended": ended,
        "duration": (ended - started) if started and ended else None,
        "tree": roots,
    }


def _error_text(error: Any) -> str:
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error) if error is not None else "error"


async def trace_run(sub: Subscriber, run_id: str) -> dict[str, Any]:
    """Follow run ``run_id`` to its end and return its :func:`build_trace`; a run that
    failed, was cancelled, lost its worker or events gets that ``status`` and ``error``.

    Raises:
        RunNotFoundError: the run did not start within the subscriber's ``start_timeout``.
        TransportError: the broker could not be used.
    """
    items: list[tuple[float, StreamEvent]] = []
    status, error = "ended", None
    try:
        async with contextlib.aclosing(sub.follow(run_id)) as follow:
            async for item in follow:
                items.append((item.ts, item.event))
    except RemoteRunError as exc:
        status, error = "failed", f"{exc.type_name}: {exc.message}"
    except RunCancelledError as exc:
        status, error = "cancelled", str(exc)
    except WorkerLostError as exc:
        status, error = "lost", str(exc)
    except SequenceGapError as exc:
        status, error = "gap", str(exc)
    trace = build_trace(run_id, items, status, error)
    if status == "failed":
        _mark_failed(trace["tree"], error)
    return trace


def _mark_failed(nodes: list[dict[str, Any]], error: str | None) -> None:
    """In a failed run, the nodes that did not end are the ones the error went through:
    each gets ``failed``, the innermost (where it was raised, as far as the events
    tell) also the ``error``, unless an error event of its own already named one."""
    innermost: dict[str, Any] | None = None
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if not node["ended"]:
            node["failed"] = True
            if innermost is None or node["start"] >= innermost["start"]:
                innermost = node
        pending.extend(node["children"])
    if innermost is not None and innermost["error"] is None:
        innermost["error"] = error


@dataclass(frozen=True)
class RunInfo:
    """What the broker still holds of one run.

    ``status``: ``running``; ``ended``, ``failed``, ``cancelled`` (its last record);
    ``lost`` (no last record, and nothing from its worker, not even a heartbeat, for
    ``idle`` seconds); ``unknown`` (nothing retained of it). ``started``/``last``: the
    worker's clock (``time.time()``) at its first and latest record read; ``duration``
    between them (up to its end for a finished run). ``error``: why it failed or was
    cancelled (``error_type``: the exception's class for a failed run). ``partial``: its
    first records were trimmed by retention, so ``events`` counts what remains.
    """

    run_id: str
    status: RunState
    name: str | None = None
    started: float | None = None
    last: float | None = None
    duration: float | None = None
    events: int = 0
    error: str | None = None
    error_type: str | None = None
    partial: bool = False

    def to_dict(self) -> dict[str, Any]:
        """As plain JSON-able data (the ``--json`` and HTTP form)."""
        return {
            "run_id": self.run_id,
            "name": self.name,
            "status": self.status,
            "started": self.started,
            "last": self.last,
            "duration": self.duration,
            "events": self.events,
            "error": self.error,
            "error_type": self.error_type,
            "partial": self.partial,
        }


@dataclass
class RunTally:
    """Folds one run's records, in the order read, into a :class:`RunInfo`."""

    run_id: str
    name: str | None = None
    started: float | None = None
    last: float | None = None
    events: int = 0
    first_seq: int | None = None
    terminal: RunState | None = None
    error: str | None = None
    error_type: str | None = None
    seen: set[int] = field(default_factory=set)

    def add(self, record: Record) -> None:
        ts = record.ts
        if ts:
            self.started = ts if self.started is None else min(self.started, ts)
            self.last = ts if self.last is None else max(self.last, ts)
        if type(record) is Heartbeat:
            return
        if record.seq in self.seen:  # (a publish retry, a redelivery)
            return
        self.seen.add(record.seq)
        if self.first_seq is None or record.seq < self.first_seq:
            self.first_seq = record.seq
        if type(record) is Event:
            self.events += 1
            event = record.event
            if (
                self.name is None
                and isinstance(event, dict)
                and event.get("run_id") == self.run_id
                and str(event.get("event", "")).endswith("_start")
            ):
                self.name = str(event.get("name", ""))
        elif type(record) is End:
            self.terminal = "ended"
        elif type(record) is Failed:
            self.terminal = "failed"
            self.error, self.error_type = record.message, record.type
        elif type(record) is Cancelled:
            self.terminal = "cancelled"
            self.error = record.reason

    def info(self, *, now: float, idle: float) -> RunInfo:
        status: RunState
        if self.terminal is not None:
            status = self.terminal
        elif self.last is None:
            status = "unknown"
        elif now - self.last > idle:
            status = "lost"
            self.error = f"nothing from its worker for {now - self.last:.0f}s"
        else:
            status = "running"
        started, last = self.started, self.last
        return RunInfo(
            self.run_id,
            status,
            self.name,
            started,
            last,
            (last - started) if started is not None and last is not None else None,
            self.events,
            self.error,
            self.error_type,
            (self.first_seq or 1) > 1,
        )


async def _read_quietly(
    entries: AsyncIterator[Entry], *, first_wait: float, settle: float, limit: float
) -> AsyncGenerator[Entry, None]:
    """``entries`` until none arrives for ``settle`` seconds (``first_wait`` for the
    first), or for ``limit`` seconds in all: what a stream holds now, as far as a reader
    can tell without a length (callers also stop once they caught up with the present;
    ``limit`` bounds a stream whose frames this reader cannot even date: refused ones)."""
    got = False
    end = time.monotonic() + limit
    try:
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return
            try:
                async with asyncio.timeout(min(left, settle if got else first_wait)):
                    entry = await entries.__anext__()
            except (TimeoutError, StopAsyncIteration):
                return
            got = True
            yield entry
    finally:
        await _aclose(entries)


def _decoded(sub: Subscriber, data: bytes, run_id: str | None) -> Envelope | None:
    """The frame, or None for one the subscriber rejects (counted in its stats)."""
    try:
        return sub._decode(data, run_id)
    except DecodeError:
        return None


async def run_status(
    sub: Subscriber,
    run_id: str,
    *,
    wait: float = 1.0,
    settle: float = 0.3,
    idle: float | None = None,
    now: float | None = None,
) -> RunInfo:
    """The run's :class:`RunInfo`, read from its stream (waiting up to ``wait`` seconds
    for a first record, then until its last record, a record written after this call
    began, or ``settle`` seconds without one).
    ``idle``: a run silent this long is ``lost`` (default: the subscriber's
    ``idle_timeout``, else 30).

    Raises:
        TransportError: the broker could not be used.
    """
    tally = RunTally(run_id)
    began = time.time()
    reads = _read_quietly(
        sub._transport.follow(run_id), first_wait=wait, settle=settle, limit=wait + _LIMIT
    )
    async with contextlib.aclosing(reads) as entries:
        refused = 0
        async for entry in entries:
            envelope = _decoded(sub, entry.data, run_id)
            if envelope is None:
                refused += 1
                if refused >= _REFUSED and tally.last is None:
                    break  # none of it is for this subscriber (other keys): unknown to it
                continue
            for record in envelope.records:
                tally.add(record)
            # its end, or caught up with it (a busy run is never quiet for ``settle``)
            if tally.terminal is not None or (tally.last or 0.0) >= began:
                break
    idle = idle if idle is not None else sub.idle_timeout or 30.0
    return tally.info(now=time.time() if now is None else now, idle=idle)


async def list_runs(
    sub: Subscriber,
    *,
    wait: float = 1.0,
    settle: float = 1.0,
    max_records: int = 100_000,
    idle: float = 30.0,
    now: float | None = None,
) -> tuple[list[RunInfo], int]:
    """The runs of the subscriber's namespace, newest first, and how many records were
    read: the group stream from its oldest retained frame (``Transport.tap``: no group,
    nothing created), until ``settle`` seconds without a frame (``wait`` for the first),
    a record written after this call began, or ``max_records``. Heartbeats do not reach
    the group stream: a run silent for ``idle`` seconds is ``lost``.

    Raises:
        TransportError: the broker could not be used.
    """
    tallies: dict[str, RunTally] = {}
    count = 0
    began = time.time()
    reads = _read_quietly(
        sub._transport.tap("first"), first_wait=wait, settle=settle, limit=wait + _LIMIT
    )
    async with contextlib.aclosing(reads) as entries:
        async for entry in entries:
            envelope = _decoded(sub, entry.data, None)
            if envelope is None:
                continue
            tally = tallies.get(envelope.run)
            if tally is None:
                tally = tallies[envelope.run] = RunTally(envelope.run)
            for record in envelope.records:
                tally.add(record)
                count += type(record) is not Heartbeat
            # enough, or caught up (a busy namespace is never quiet for ``settle``)
            if count >= max_records or (tally.last or 0.0) >= began:
                break
    at = time.time() if now is None else now
    runs = [t.info(now=at, idle=idle) for t in tallies.values()]
    runs.sort(key=lambda r: r.started or 0.0, reverse=True)
    return runs, count


class _NoAck:
    """What a message read without a group settles with: nothing to settle."""

    async def ack(self) -> None:
        return None

    async def reject(self, reason: str) -> None:
        return None


async def tap_messages(
    sub: Subscriber, start: Literal["first", "new"]
) -> AsyncGenerator[Message, None]:
    """Every record of every run of the namespace as :class:`eventbus.Message`, read
    without a group (``Transport.tap``: nothing created, nothing left behind); their
    ``ack``/``reject`` do nothing. Frames the subscriber rejects are skipped (counted).

    Raises:
        TransportError: the broker could not be used.
    """
    from ._subscriber import Message, _FrameAck

    entries = sub._transport.tap(start)
    try:
        async for entry in entries:
            envelope = _decoded(sub, entry.data, None)
            if envelope is None:
                continue
            for record in envelope.records:
                if type(record) is Heartbeat:
                    continue
                kind, event, error = _record_kind(envelope.run, record)
                frame = _FrameAck(_NoAck(), 1)  # type: ignore[arg-type]
                yield Message(
                    kind, envelope.run, record.seq, event, error, False, frame, ts=record.ts
                )
    finally:
        await _aclose(entries)


def _record_kind(run_id: str, record: Record) -> tuple[Any, StreamEvent | None, Any]:
    """(kind, event, error) of a record other than a heartbeat, as Message has them."""
    from ._subscriber import _terminal_error

    if type(record) is Event:
        return "event", record.event, None
    error = _terminal_error(run_id, record)
    kind = {Failed: "error", Cancelled: "cancelled"}.get(type(record), "end")
    return kind, None, error


async def _aclose(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def list_groups(sub: Subscriber) -> list[GroupInfo]:
    """The namespace's consumer groups (see :class:`eventbus.transports.GroupInfo`): a
    read, nothing is created.

    Raises:
        TransportError: the broker could not be used.
    """
    return await sub._transport.groups()


@dataclass(frozen=True)
class DeadRecord:
    """One record of a dead-lettered frame, decoded: ``kind`` as for
    :class:`eventbus.Message` (``event``, ``end``, ``error``, ``cancelled``), its ``seq``,
    the ``event`` (kind ``event``) or the ``error``'s text."""

    kind: str
    seq: int
    event: StreamEvent | None = None
    error: str | None = None


@dataclass(frozen=True)
class DecodedDeadLetter:
    """A frame a consumer group gave up on, decoded as the group's consumers decode it.

    ``position``, ``data``, ``reason`` (why the group gave up on it) and ``deliveries``
    as in :class:`eventbus.DeadLetter`; ``run_id`` and ``records`` (a frame packs
    several) once decoded; ``decode_error``: why the subscriber refuses the frame
    (forged, malformed, unsigned...), which then has no records.
    """

    position: str
    data: bytes
    reason: str
    deliveries: int
    run_id: str | None = None
    records: tuple[DeadRecord, ...] = ()
    decode_error: str | None = None


class _Seen(set[Any]):
    """Holds everything: a log-once filter that logs nothing."""

    def __contains__(self, item: object) -> bool:
        return True


def _rejected_silently(kind: str, exc: BaseException) -> None:
    return None


def _quiet(sub: Subscriber) -> FrameReader:
    """A copy of ``sub``'s frame reader that decodes as it does, with counters of its own
    and no log: reading dead letters again must not count (nor log) their rejections
    twice."""
    shadow = copy.copy(sub._reader)
    shadow.stats = type(sub.stats)()
    setattr(shadow, "_rejected", _rejected_silently)  # noqa: B010 - a private attribute
    setattr(shadow, "_logged", _Seen())  # noqa: B010
    return shadow


async def dead_letters(sub: Subscriber, group: str, *, count: int = 100) -> list[DecodedDeadLetter]:
    """The group's oldest ``count`` dead letters, decoded (see :class:`DecodedDeadLetter`).

    Raises:
        ConfigurationError: a bad group name.
        TransportError: the broker could not be used.
    """
    from .transports import check_name

    check_name("group", group)
    out: list[DecodedDeadLetter] = []
    quiet = _quiet(sub)
    for dead in await sub._transport.dead_letters(group, count=count):
        where = (dead.position, dead.data, dead.reason, dead.deliveries)
        try:
            envelope = quiet.decode(dead.data, None)
        except DecodeError as exc:
            out.append(DecodedDeadLetter(*where, decode_error=str(exc)))
            continue
        records = []
        for record in envelope.records:
            if type(record) is Heartbeat:
                continue
            kind, event, error = _record_kind(envelope.run, record)
            records.append(
                DeadRecord(kind, record.seq, event, None if error is None else str(error))
            )
        out.append(DecodedDeadLetter(*where, envelope.run, tuple(records)))
    return out
