"""The gateway's per-run subscription hub and each client's bounded buffer.

The clients of one run share one broker follow (a :class:`_Hub` holding the run's last
``hub_max_events`` records; a client that needs older ones follows on its own). Each
client reads at its own position through a :class:`_Session`: a bounded buffer of
``client_buffer`` events, filled by a task of its own, so that a slow reader never holds
up the hub, the other clients or the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from ._exceptions import EventbusError, RunError, SequenceGapError
from ._jsonable import terminal_kind
from ._subscriber import FollowItem, _parse_token

if TYPE_CHECKING:
    from ._http import Gateway

__all__ = ["GatewayStats"]

logger = logging.getLogger("eventbus.http")


@dataclass
class GatewayStats:
    """Counters of a gateway. ``clients``: connected streams now; ``follows``: broker
    subscriptions (one per run followed, plus one per client resuming from before its
    run's hub) now; ``slow``: clients disconnected for reading too slowly;
    ``send_timeouts``: connections dropped on a blocked write; ``events``: events sent,
    all clients together; ``cancels``: runs cancelled because a LangGraph SDK client
    that asked for ``cancel_on_disconnect`` went away (with ``allow_cancel``)."""

    clients: int = 0
    follows: int = 0
    slow: int = 0
    send_timeouts: int = 0
    events: int = 0
    cancels: int = 0


class _Terminal:
    """The end of a client's stream: ``kind`` is a record kind (``end``, ``error``,
    ``cancelled``, ``lost``, ``gap``) or ``slow``."""

    __slots__ = ("error", "kind")

    def __init__(self, kind: str, error: BaseException | None) -> None:
        self.kind = kind
        self.error = error


class _Session:
    """One client's follow of one run, through a bounded buffer."""

    def __init__(self, gateway: Gateway, run_id: str, after: str | None) -> None:
        self.gateway = gateway
        self.run_id = run_id
        self.after = after
        self.buffer: deque[FollowItem] = deque()
        self.terminal: _Terminal | None = None
        self.arrived = asyncio.Event()
        self.drained = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.first = asyncio.Event()  # the first item or the end arrived

    def start(self) -> None:
        self.task = asyncio.create_task(self._pump(), name=f"eventbus-http-{self.run_id}")

    async def _pump(self) -> None:
        gw = self.gateway
        hub = _acquire_hub(gw, self.run_id)
        items = _items(gw, hub, self.after)
        try:
            async for item in items:
                while len(self.buffer) >= gw.client_buffer:
                    self.drained.clear()
                    try:
                        with anyio.fail_after(gw.slow_client_timeout):
                            await self.drained.wait()
                    except TimeoutError:
                        self.terminal = _Terminal("slow", None)
                        gw.stats.slow += 1
                        return
                self.buffer.append(item)
                self.arrived.set()
                self.first.set()
            self.terminal = _Terminal("end", None)
        except (RunError, SequenceGapError) as exc:
            self.terminal = _Terminal(terminal_kind(exc), exc)
        except EventbusError as exc:
            logger.warning("following run %s: %s", self.run_id, exc)
            self.terminal = _Terminal("error", exc)
        finally:
            with contextlib.suppress(Exception):
                await items.aclose()
            _release_hub(gw, hub)
            self.arrived.set()
            self.first.set()
            gw._changed()

    async def next(self, timeout: float) -> FollowItem | _Terminal | None:
        """The next item, the terminal marker, or None after ``timeout`` idle seconds."""
        while True:
            if self.buffer:
                item = self.buffer.popleft()
                self.drained.set()
                return item
            if self.terminal is not None:
                return self.terminal
            self.arrived.clear()
            try:
                with anyio.fail_after(timeout):
                    await self.arrived.wait()
            except TimeoutError:
                return None

    def take(self, limit: int) -> list[FollowItem]:
        """Up to ``limit`` buffered items, without waiting (the terminal marker stays)."""
        out: list[FollowItem] = []
        while self.buffer and len(out) < limit:
            out.append(self.buffer.popleft())
        if out:
            self.drained.set()
        return out

    async def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


class _Fallback(Exception):
    """The hub no longer holds the records a client needs: it follows on its own."""


class _Hub:
    """One broker follow of a run, shared by the gateway's clients of that run: the
    records read so far (up to ``hub_max_events``, oldest dropped first) and the end."""

    def __init__(self, gateway: Gateway, run_id: str) -> None:
        self.gateway = gateway
        self.run_id = run_id
        self.items: list[FollowItem] = []
        self.base = 0  # records dropped from the front: items[i] has seq base + i + 1
        self.error: BaseException | None = None
        self.done = False
        self.clients = 0
        self.changed = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"eventbus-http-hub-{run_id}")

    def _notify(self) -> None:
        self.changed.set()
        self.changed = asyncio.Event()

    async def _run(self) -> None:
        gw = self.gateway
        gw.stats.follows += 1
        gw._changed()
        try:
            sub = await gw._connect()
            async with contextlib.aclosing(sub.follow(self.run_id)) as follow:
                async for item in follow:
                    self.items.append(item)
                    if len(self.items) > gw.hub_max_events:
                        drop = max(1, gw.hub_max_events // 4)
                        del self.items[:drop]
                        self.base += drop
                    self._notify()
        except EventbusError as exc:
            self.error = exc
        finally:
            self.done = True
            gw.stats.follows -= 1
            self._notify()
            gw._changed()

    async def follow(self, seen: int) -> AsyncGenerator[FollowItem, None]:
        """The run's items after the first ``seen``; raises what ``Subscriber.follow``
        raises, or _Fallback when they are no longer held."""
        index = seen
        while True:
            if index < self.base:
                raise _Fallback
            while index - self.base < len(self.items):
                item = self.items[index - self.base]
                index += 1
                yield item
                if index < self.base:
                    raise _Fallback
            if self.done:
                if self.error is not None:
                    raise self.error
                return
            await self.changed.wait()


def _acquire_hub(gw: Gateway, run_id: str) -> _Hub:
    hub = gw._hubs.get(run_id)
    if hub is None:
        hub = gw._hubs[run_id] = _Hub(gw, run_id)
    hub.clients += 1
    return hub


def _release_hub(gw: Gateway, hub: _Hub) -> None:
    hub.clients -= 1
    if hub.clients <= 0:
        # the last client of the run is gone: so is its broker follow
        if gw._hubs.get(hub.run_id) is hub:
            del gw._hubs[hub.run_id]
        hub.task.cancel()


async def _items(gw: Gateway, hub: _Hub, after: str | None) -> AsyncGenerator[FollowItem, None]:
    """A client's items: from the run's hub, or (when the hub no longer holds them) from
    a follow of its own."""
    last = after
    try:
        async for item in hub.follow(_parse_token(after)[0] if after else 0):
            last = item.id
            yield item
        return
    except _Fallback:
        pass
    gw.stats.follows += 1
    gw._changed()
    try:
        sub = await gw._connect()
        async with contextlib.aclosing(sub.follow(hub.run_id, after=last)) as follow:
            async for item in follow:
                yield item
    finally:
        gw.stats.follows -= 1
        gw._changed()
