"""``memory://name``: an in-process broker with the full transport contract.

Every Publisher and Subscriber of one process that names the same ``memory://name``
shares one broker (``memory://`` alone is the name ``""``). It is thread-safe, so a
:class:`~eventbus.SyncPublisher` (which runs its own event loop in a thread) and an async
Subscriber can meet on it. Nothing survives the process.

Options (query string or keyword arguments): the fields of :class:`Options`, whose table
is in ``docs/memory.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import msgspec

from .._exceptions import ConfigurationError
from ._base import DeadLetter, Entry, GroupInfo, GroupOptions, OutFrame
from ._kit import Positive, PositiveInt, check_consumer, doc, ensure_open, parse_options

__all__ = ["MemoryTransport"]


class _Signal:
    """Wakes every waiter, whatever thread or event loop it waits in."""

    def __init__(self) -> None:
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._lock = threading.Lock()

    def waiter(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters.append((loop, fut))
        return fut

    def notify_all(self) -> None:
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            # a closed loop raises RuntimeError: nobody waits there any more
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_wake, fut)


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


async def _wait(fut: asyncio.Future[None], timeout: float | None) -> None:
    # asyncio.wait, not wait_for: before 3.12, wait_for can swallow a cancellation
    try:
        await asyncio.wait({fut}, timeout=timeout)
    finally:
        fut.cancel()


@dataclass
class _Run:
    entries: list[bytes] = field(default_factory=list)
    finished_at: float | None = None


@dataclass
class _Pending:
    consumer: str
    deadline: float
    deliveries: int
    data: bytes | None = None  # a requeued dead letter's frame (the stream may have trimmed it)


@dataclass
class _Group:
    cursor: int
    pending: dict[int, _Pending] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)
    consumers: set[str] = field(default_factory=set)  # (as Redis: every one that read)


@dataclass
class _Namespace:
    runs: dict[str, _Run] = field(default_factory=dict)
    # the group stream: frames at absolute indexes base .. base+len-1
    frames: deque[bytes] = field(default_factory=deque)
    base: int = 0
    groups: dict[str, _Group] = field(default_factory=dict)

    @property
    def end(self) -> int:
        return self.base + len(self.frames)

    def frame_at(self, index: int) -> bytes | None:
        """The group stream's frame at ``index``; None once trimmed."""
        if self.base <= index < self.end:
            return self.frames[index - self.base]
        return None


class _Broker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.signal = _Signal()
        self.namespaces: dict[str, _Namespace] = {}
        # the control channel's listeners, per namespace: (their loop, their inbox)
        self.listeners: dict[str, list[tuple[asyncio.AbstractEventLoop, asyncio.Queue[bytes]]]] = {}


_brokers: dict[str, _Broker] = {}
_brokers_lock = threading.Lock()


def _broker(name: str) -> _Broker:
    with _brokers_lock:
        broker = _brokers.get(name)
        if broker is None:
            broker = _brokers[name] = _Broker()
        return broker


@dataclass(frozen=True, slots=True)
class _GroupRef:
    """What a delivery needs to settle itself: its group in its broker."""

    broker: _Broker
    namespace: str
    group: str

    def settle(self, index: int, reason: str | None) -> None:
        with self.broker.lock:
            ns = self.broker.namespaces.get(self.namespace)
            state = ns.groups.get(self.group) if ns is not None else None
            if ns is None or state is None:
                return  # the group was deleted: nothing left to settle
            pending = state.pending.pop(index, None)
            if reason is not None and pending is not None:
                data = pending.data if pending.data is not None else ns.frame_at(index)
                if data is not None:
                    state.dead.append(DeadLetter(str(index), data, reason, pending.deliveries))
        self.broker.signal.notify_all()


@dataclass
class _MemoryDelivery:
    """One frame handed to one consumer (see :class:`eventbus.transports.Delivery`)."""

    data: bytes
    position: str
    deliveries: int
    _group: _GroupRef
    _index: int

    async def ack(self) -> None:
        """Done with it (once; a later ack or reject is a no-op). Never raises."""
        self._group.settle(self._index, None)

    async def reject(self, reason: str) -> None:
        """Move it to the group's dead letters (once, like :meth:`ack`). Never raises."""
        self._group.settle(self._index, reason)


class Options(msgspec.Struct, forbid_unknown_fields=True):
    """The ``memory://`` options: the one spec they are parsed with and the option table
    of ``docs/memory.md`` is generated from (``make docs``)."""

    retention: Annotated[Positive, doc("seconds a finished run stays readable")] = 3600.0
    # positive, as on the brokers: a negative maxlen made publish fail on an empty deque
    maxlen: Annotated[
        PositiveInt, doc("frames kept in the group stream; older ones are trimmed, as Redis does")
    ] = 100_000


class MemoryTransport:
    """The in-process transport (see the module docstring).

    Raises:
        ConfigurationError: an unknown or bad option.
    """

    def __init__(self, url: str, namespace: str, **options: Any) -> None:
        parts = urlsplit(url)
        #: the parsed options (see :class:`Options`)
        self.options, _, _ = parse_options(Options, "memory", parts.query, options, url)
        self.url = url
        self.namespace = namespace
        self._broker = _broker(parts.netloc + parts.path)
        self._closed = False

    # -- lifecycle ---------------------------------------------------------------------

    async def connect(self, *, declare: bool = True) -> None:
        self._closed = False

    async def aclose(self) -> None:
        self._closed = True

    def _ns(self) -> _Namespace:
        ns = self._broker.namespaces.get(self.namespace)
        if ns is None:
            ns = self._broker.namespaces[self.namespace] = _Namespace()
        return ns

    def _check_open(self) -> None:
        ensure_open(self._closed, "memory")

    # -- publishing --------------------------------------------------------------------

    async def publish(self, frames: Sequence[OutFrame]) -> None:
        self._check_open()
        now = time.monotonic()
        with self._broker.lock:
            ns = self._ns()
            for frame in frames:
                run = ns.runs.get(frame.run_id)
                if run is None:
                    run = ns.runs[frame.run_id] = _Run()
                run.entries.append(frame.data)
                if frame.final:
                    run.finished_at = now
                if frame.fanout:
                    ns.frames.append(frame.data)
            while len(ns.frames) > self.options.maxlen:
                ns.frames.popleft()
                ns.base += 1
            expired = [
                rid
                for rid, run in ns.runs.items()
                if run.finished_at is not None and now - run.finished_at > self.options.retention
            ]
            for rid in expired:
                del ns.runs[rid]
        self._broker.signal.notify_all()

    # -- following a run ---------------------------------------------------------------

    async def follow(self, run_id: str, *, start: str | None = None) -> AsyncIterator[Entry]:
        self._check_open()
        index = 0
        if start is not None:
            try:
                index = int(start)
            except ValueError:
                raise ConfigurationError(f"not a memory:// position: {start!r}") from None

        def batch(index: int) -> tuple[int, list[bytes]]:
            run = self._ns().runs.get(run_id)
            return index, run.entries[index:] if run is not None else []

        async for entry in self._entries(index, batch):
            yield entry

    async def _entries(
        self, index: int, batch: Callable[[int], tuple[int, list[bytes]]]
    ) -> AsyncIterator[Entry]:
        """Yield what ``batch(index)`` (called under the lock) holds from ``index`` on,
        waiting for more, for ever."""
        while True:
            waiter = self._broker.signal.waiter()
            with self._broker.lock:
                index, entries = batch(index)
            if entries:
                waiter.cancel()
                for data in entries:
                    yield Entry(str(index), data)
                    index += 1
                continue
            self._check_open()
            await _wait(waiter, None)

    # -- consumer groups ---------------------------------------------------------------

    async def consume(
        self, group: str, consumer: str, options: GroupOptions
    ) -> AsyncIterator[_MemoryDelivery]:
        check_consumer(group, consumer, options)
        self._check_open()
        with self._broker.lock:
            ns = self._ns()
            if group not in ns.groups:
                ns.groups[group] = _Group(cursor=ns.base if options.start == "first" else ns.end)
            ns.groups[group].consumers.add(consumer)
        while True:
            self._check_open()
            waiter = self._broker.signal.waiter()
            delivery, timeout = self._next_delivery(group, consumer, options)
            if delivery is not None:
                waiter.cancel()
                yield delivery
                continue
            await _wait(waiter, timeout)

    def _next_delivery(
        self, group: str, consumer: str, options: GroupOptions
    ) -> tuple[_MemoryDelivery | None, float | None]:
        now = time.monotonic()
        dead_lettered = False
        ref = _GroupRef(self._broker, self.namespace, group)
        try:
            with self._broker.lock:
                ns = self._ns()
                state = ns.groups[group]
                next_deadline: float | None = None
                # reclaim what a consumer held past the visibility timeout
                for index, pending in list(state.pending.items()):
                    if pending.deadline > now:
                        next_deadline = min(next_deadline or pending.deadline, pending.deadline)
                        continue
                    data = pending.data if pending.data is not None else ns.frame_at(index)
                    if data is None:  # trimmed meanwhile
                        del state.pending[index]
                        continue
                    if pending.deliveries >= options.max_deliveries:
                        del state.pending[index]
                        state.dead.append(
                            DeadLetter(
                                str(index),
                                data,
                                f"not acked after {pending.deliveries} deliveries",
                                pending.deliveries,
                            )
                        )
                        dead_lettered = True
                        continue
                    pending.consumer = consumer
                    pending.deadline = now + options.visibility_timeout
                    pending.deliveries += 1
                    return (
                        _MemoryDelivery(data, str(index), pending.deliveries, ref, index),
                        None,
                    )
                held = sum(1 for p in state.pending.values() if p.consumer == consumer)
                if held >= options.prefetch:
                    return None, _until(next_deadline, now)
                if state.cursor < ns.base:  # trimmed past this group
                    state.cursor = ns.base
                if state.cursor < ns.end:
                    index = state.cursor
                    state.cursor += 1
                    state.pending[index] = _Pending(consumer, now + options.visibility_timeout, 1)
                    data = ns.frames[index - ns.base]
                    return _MemoryDelivery(data, str(index), 1, ref, index), None
                return None, _until(next_deadline, now)
        finally:
            if dead_lettered:
                self._broker.signal.notify_all()

    async def delete_group(self, group: str) -> None:
        self._check_open()
        with self._broker.lock:
            self._ns().groups.pop(group, None)
        self._broker.signal.notify_all()

    async def dead_letters(self, group: str, *, count: int = 100) -> list[DeadLetter]:
        self._check_open()
        with self._broker.lock:
            state = self._ns().groups.get(group)
            return list(state.dead[:count]) if state is not None else []

    async def requeue_dead_letters(self, group: str, positions: Sequence[str] | None = None) -> int:
        self._check_open()
        wanted = None if positions is None else set(positions)
        requeued = 0
        with self._broker.lock:
            ns = self._broker.namespaces.get(self.namespace)
            state = ns.groups.get(group) if ns is not None else None
            if state is None:
                return 0
            keep: list[DeadLetter] = []
            for dead in state.dead:
                index = int(dead.position)
                if (wanted is not None and dead.position not in wanted) or index in state.pending:
                    keep.append(dead)
                    continue
                # pending with no delivery yet and an expired deadline: the next consumer
                # that looks takes it, as delivery 1
                state.pending[index] = _Pending("", 0.0, 0, dead.data)
                requeued += 1
            state.dead = keep
        self._broker.signal.notify_all()
        return requeued

    # -- operating: reads without a group, the control channel ------------------------

    async def tap(self, start: Literal["first", "new"] = "new") -> AsyncIterator[Entry]:
        self._check_open()
        with self._broker.lock:
            ns = self._broker.namespaces.get(self.namespace)
            index = 0 if ns is None else ns.base if start == "first" else ns.end

        def batch(index: int) -> tuple[int, list[bytes]]:
            ns = self._broker.namespaces.get(self.namespace)
            if ns is None:
                return index, []
            index = max(index, ns.base)  # (trimmed meanwhile)
            return index, list(islice(ns.frames, index - ns.base, None))

        async for entry in self._entries(index, batch):
            yield entry

    async def groups(self) -> list[GroupInfo]:
        self._check_open()
        with self._broker.lock:
            ns = self._broker.namespaces.get(self.namespace)
            if ns is None:
                return []
            return [
                GroupInfo(
                    name,
                    len(state.consumers),
                    len(state.pending),
                    max(0, ns.end - max(state.cursor, ns.base)),
                    len(state.dead),
                )
                for name, state in sorted(ns.groups.items())
            ]

    async def signal(self, data: bytes) -> None:
        self._check_open()
        with self._broker.lock:
            listeners = list(self._broker.listeners.get(self.namespace, ()))
        for loop, inbox in listeners:
            with contextlib.suppress(RuntimeError):  # (its loop is closed: nobody listens)
                loop.call_soon_threadsafe(inbox.put_nowait, data)

    async def signals(self) -> AsyncIterator[bytes]:
        self._check_open()
        me = (asyncio.get_running_loop(), asyncio.Queue[bytes]())
        with self._broker.lock:
            self._broker.listeners.setdefault(self.namespace, []).append(me)
        try:
            yield b""  # listening
            while True:
                yield await me[1].get()
        finally:
            with self._broker.lock, contextlib.suppress(ValueError):
                self._broker.listeners.get(self.namespace, []).remove(me)

    async def delete_namespace(self) -> None:
        """Forget everything of this namespace (as the brokers' ``delete_namespace``)."""
        with self._broker.lock:
            self._broker.namespaces.pop(self.namespace, None)
        self._broker.signal.notify_all()


def _until(deadline: float | None, now: float) -> float | None:
    return None if deadline is None else max(0.0, deadline - now) + 0.001
