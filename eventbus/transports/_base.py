"""The transport interface: bytes in, bytes out, nothing of LangChain.

A transport stores, per *namespace*:

* one **run stream** per run: an append-only, replayable sequence of entries (each entry
  is one frame of bytes, which may pack several events of that run), readable from the
  start or from any entry's position, by any number of followers;
* one **group stream**: every fan-out frame of every run of the namespace, delivered to
  *consumer groups*. Every group sees every frame (fan-out); the consumers of one group
  share the frames (competing), ack them, and get un-acked frames redelivered after
  ``visibility_timeout``; a frame delivered ``max_deliveries`` times without an ack goes
  to the group's dead letters and is not delivered again (unless an operator requeues it).

A transport may also have ``max_message_bytes`` (int, or None: no known limit), set by
``connect``: the largest frame its broker accepts; publishers keep frames under it.

Positions are opaque strings chosen by the transport (a Redis stream id, a RabbitMQ
stream offset, a list index). The layers above never look inside them.

For operating a namespace a transport also offers reads that create nothing on the broker
(``tap``: the group stream without a group; ``groups``: what each group holds) and a
**control channel** (``signal``/``signals``): small messages broadcast to whoever listens
in the namespace at that moment, stored nowhere (remote cancel rides on it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = [
    "DeadLetter",
    "Delivery",
    "Entry",
    "GroupInfo",
    "GroupOptions",
    "OutFrame",
    "Transport",
]


@dataclass(frozen=True, slots=True)
class OutFrame:
    """One frame to publish.

    ``fanout``: also append it to the group stream (heartbeat-only frames are not).
    ``final``: the run's last frame; the transport may start the run's retention clock.
    """

    run_id: str
    data: bytes
    fanout: bool = True
    final: bool = False


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a run stream, as read back by ``follow``."""

    position: str
    data: bytes


@dataclass(frozen=True, slots=True)
class GroupOptions:
    """How a consumer group behaves.

    ``start``: where a *new* group begins: ``"first"`` (everything still retained) or
    ``"new"`` (only frames published after the group was created). An existing group
    keeps its position.
    """

    start: Literal["first", "new"] = "new"
    prefetch: int = 100
    visibility_timeout: float = 30.0
    max_deliveries: int = 5


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A frame a group gave up on, with why."""

    position: str
    data: bytes
    reason: str
    deliveries: int


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """What a consumer group holds, as far as the broker tells.

    ``consumers``: consumers known to the group (Redis: that ever read and were not
    removed; RabbitMQ: attached right now). ``pending``: frames delivered and not yet
    settled (None where the broker does not tell: RabbitMQ). ``lag``: frames of the group
    stream not yet delivered to the group (None: unknown). ``dead_letters``: frames in the
    group's dead letters.
    """

    name: str
    consumers: int
    pending: int | None
    lag: int | None
    dead_letters: int


@runtime_checkable
class Delivery(Protocol):
    """One frame handed to one consumer of a group.

    The settling contract, the same on every transport: a delivery settles itself (it holds
    what it needs, nothing goes back through the transport), at most once (later calls are
    no-ops), and never raises a broker client's exception. A settle that can no longer take
    effect (the frame's visibility timeout passed and it was handed out again, the
    connection or channel that delivered it was lost, or the transport was closed) is
    dropped without error: the frame is, or will be, delivered again (at-least-once). What
    a settle may raise is an eventbus error: :class:`eventbus.ConnectError` when the broker
    could not be reached for ``publish_timeout`` seconds while the settle still counted
    (the frame is then delivered again too), and, should the broker start refusing the
    settle outright, :class:`eventbus.AuthenticationError` or
    :class:`eventbus.TransportError`.
    """

    @property
    def data(self) -> bytes: ...

    @property
    def position(self) -> str: ...

    @property
    def deliveries(self) -> int:
        """How many times this frame has been delivered, this time included (1 = first)."""
        ...

    async def ack(self) -> None:
        """Done with it: it is never delivered to this group again.

        Raises:
            ConnectError: the broker stayed unreachable for ``publish_timeout``.
        """
        ...

    async def reject(self, reason: str) -> None:
        """Give up on it now: move it to the group's dead letters with ``reason``.

        Raises:
            ConnectError: the broker stayed unreachable for ``publish_timeout``.
        """
        ...


@runtime_checkable
class Transport(Protocol):
    """What eventbus needs from a broker. One instance serves one namespace.

    Every method raises :class:`eventbus.TransportError` subclasses for broker trouble
    that retries did not cure; passing trouble (a dropped connection) is retried inside.
    """

    async def connect(self, *, declare: bool = True) -> None:
        """Reach the broker once, so that a bad URL or credentials fail at once.

        ``declare=False``: a reader's connect, which creates nothing on the broker (by
        default a transport may declare the namespace's topology right away)."""
        ...

    async def aclose(self) -> None: ...

    async def publish(self, frames: Sequence[OutFrame]) -> None:
        """Append the frames, in order, durably; return when the broker has them all.

        Frames of one run keep their order. A retried call may append a frame twice; the
        layers above de-duplicate by sequence number.
        """
        ...

    def follow(self, run_id: str, *, start: str | None = None) -> AsyncIterator[Entry]:
        """Yield the run's entries in order, from the first (or from ``start``, inclusive).

        Waits for a run that has not started yet and for entries not yet published; it
        never ends by itself: the caller stops iterating at the run's terminal frame.
        """
        ...

    def consume(self, group: str, consumer: str, options: GroupOptions) -> AsyncIterator[Delivery]:
        """Yield the group's frames for this consumer, at-least-once, until cancelled."""
        ...

    async def dead_letters(self, group: str, *, count: int = 100) -> list[DeadLetter]:
        """The oldest ``count`` dead letters of the group (a read; they stay)."""
        ...

    async def requeue_dead_letters(self, group: str, positions: Sequence[str] | None = None) -> int:
        """Put dead letters back into the group (an operator's write): those at
        ``positions`` (as :meth:`dead_letters` gives them), or all of them (None). A
        requeued frame is delivered again to one consumer of the group, its delivery count
        starting afresh (it may go to the dead letters again after ``max_deliveries``);
        its dead letter is removed only once the frame is back in the group, so a crash
        half-way leaves at worst a duplicate, never a loss. Returns how many were
        requeued: a position that is not a dead letter of the group (unknown, already
        requeued, or whose frame the broker no longer holds) is skipped, not counted."""
        ...

    async def delete_group(self, group: str) -> None:
        """Forget the group: its position, pending frames and dead letters. A group that
        does not exist is not an error. Consumers still running in it may fail."""
        ...

    def tap(self, start: Literal["first", "new"] = "new") -> AsyncIterator[Entry]:
        """Yield the group stream's frames (every fan-out frame of the namespace) from
        the oldest retained one (``"first"``) or from those published from now on
        (``"new"``), without a consumer group: a read that creates nothing on the broker
        and leaves nothing behind, however its reader dies. Never ends by itself."""
        ...

    async def groups(self) -> list[GroupInfo]:
        """The namespace's consumer groups (a read; creates nothing)."""
        ...

    async def signal(self, data: bytes) -> None:
        """Broadcast a small control message to every current listener of the namespace
        (:meth:`signals`). Stored nowhere: a listener that is not there misses it, and
        with no listener it is dropped. Creates nothing on the broker."""
        ...

    def signals(self) -> AsyncIterator[bytes]:
        """Yield ``b""`` once it listens (a caller that waits for an answer sends its
        request after that), then the control messages broadcast from then on (at most
        once each, in no promised order), until cancelled; reconnects by itself (missing
        what was sent meanwhile, and yielding ``b""`` again once it listens). Leaves
        nothing on the broker after its reader is gone."""
        ...
