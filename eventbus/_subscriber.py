"""Subscriber: follow runs, rebuild their ``astream_events`` iterators, consume groups."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _control, _langchain, _runs
from ._control import CancelResult
from ._exceptions import (
    ConfigurationError,
    DecodeError,
    InvalidResumeToken,
    RemoteRunError,
    RunCancelledError,
    RunError,
    RunNotFoundError,
    SequenceGapError,
    WorkerLostError,
)
from ._inbound import FrameReader
from ._langchain import StreamEvent
from ._runs import DecodedDeadLetter, RunInfo
from ._signing import Keyring, KeysArg, keyring_from
from ._wire import (
    Cancelled,
    Event,
    Failed,
    Heartbeat,
    PartialEnvelope,
    Record,
)
from .transports import Delivery, GroupInfo, GroupOptions, Transport, check_name, open_transport
from .transports import redact_url as _redact

__all__ = ["FollowItem", "Message", "Subscriber", "SubscriberStats"]

logger = logging.getLogger("eventbus")


@dataclass
class SubscriberStats:
    """Counters of one subscriber (exact, whatever the log shows).

    Rejected messages (in groups, dead-lettered too): ``malformed``; ``foreign`` (another
    namespace or run, or a producer other than the run's own); ``unsigned`` and
    ``bad_signature`` (a subscriber with keys: no MAC, an unknown key id or a MAC that does
    not match). ``oversized``: frames larger than ``max_frame_bytes``, delivered with their
    events' data replaced by placeholders. ``duplicates``: records skipped because they
    were already delivered (publish retries). ``undecodable``: values that arrived as
    :class:`eventbus.Undecodable` placeholders (the rest of their event arrived);
    ``lost_records``: records left out of frames whose other records arrived (bytes
    that are not a record: forged or corrupted)."""

    frames: int = 0
    events: int = 0
    malformed: int = 0
    oversized: int = 0
    foreign: int = 0
    duplicates: int = 0
    undecodable: int = 0
    lost_records: int = 0
    unsigned: int = 0
    bad_signature: int = 0


# runs whose owner (producer) a group consumer remembers, most recent first
_GROUP_OWNERS = 10_000


@dataclass(frozen=True)
class FollowItem:
    """One event of a followed run. ``id`` resumes right after it: ``follow(run, after=id)``.
    ``ts``: when the worker emitted it (its ``time.time()``)."""

    id: str
    event: StreamEvent
    ts: float = field(default=0.0, compare=False)


@dataclass
class Message:
    """One record of a consumer group delivery.

    ``kind`` is ``"event"`` (``event`` holds the StreamEvent), ``"end"``, ``"error"``
    (``error`` holds the :class:`RemoteRunError`) or ``"cancelled"`` (``error`` holds the
    :class:`RunCancelledError`). Several messages may share one broker delivery; it is
    acked when all of them are, so un-acked messages are redelivered together with the
    others of their frame (at-least-once). ``ts``: when the worker emitted the record (its
    ``time.time()``).
    """

    kind: Literal["event", "end", "error", "cancelled"]
    run_id: str
    seq: int
    event: StreamEvent | None
    error: Exception | None
    redelivered: bool
    _frame: _FrameAck = field(repr=False)
    ts: float = field(default=0.0, compare=False)

    async def ack(self) -> None:
        """Done with this message."""
        await self._frame.settle(None)

    async def reject(self, reason: str) -> None:
        """Give up on this message: its frame goes to the group's dead letters."""
        await self._frame.settle(reason)


class _FrameAck:
    __slots__ = ("_delivery", "_left", "_reason")

    def __init__(self, delivery: Delivery, count: int) -> None:
        self._delivery = delivery
        self._left = count
        self._reason: str | None = None

    async def settle(self, reason: str | None) -> None:
        if self._left <= 0:
            return
        self._left -= 1
        if reason is not None and self._reason is None:
            self._reason = reason
        if self._left == 0:
            if self._reason is None:
                await self._delivery.ack()
            else:
                await self._delivery.reject(self._reason)


def _run_key(run_id: str | uuid.UUID) -> str:
    if isinstance(run_id, uuid.UUID):
        return str(run_id)
    if not isinstance(run_id, str):
        raise ConfigurationError(f"run_id must be a str or UUID, not {type(run_id).__name__}")
    try:
        return str(uuid.UUID(run_id))
    except ValueError:
        raise ConfigurationError(f"run_id {run_id!r} is not a UUID") from None


def _parse_token(token: str) -> tuple[int, str]:
    seq, sep, position = token.partition(":") if isinstance(token, str) else ("", "", "")
    if not sep or not seq.isdigit() or not position:
        raise InvalidResumeToken(f"not an eventbus resume token: {token!r}")
    return int(seq), position


class Subscriber:
    """Follows runs published by :class:`Publisher` and consumes consumer groups.

    Use as an async context manager::

        async with eventbus.Subscriber("redis://localhost:6379/0", namespace="myapp") as sub:
            async for event in sub.astream_events(run_id):
                ...

    Args:
        url: broker URL (as for :class:`Publisher`).
        namespace: the namespace the publishers use.
        idle_timeout: once a run has started, seconds without any record or heartbeat
            after which its worker is presumed dead (``WorkerLostError``). None: wait forever.
        start_timeout: seconds to wait for a run that has not started
            (``RunNotFoundError``). None (default): wait forever.
        max_frame_bytes: larger broker messages are not rebuilt: their events arrive
            with their ``data`` values replaced by :class:`eventbus.Unrepresentable`
            placeholders (counted as ``oversized``), and the run goes on.
        keys: accept only frames signed with one of these keys (``{key_id: secret}`` or
            ``"key_id:secret,..."``, secrets of 16 bytes or more). Without it, the URL's
            ``keys`` option or the ``EVENTBUS_KEYS`` environment variable; with none of
            them, frames are not checked (see README, "Security").
        rejection_log_interval: rejected messages are logged once per kind per this many
            seconds (with a count of those not logged); ``stats`` counts every one.
        validate: rebuilt pydantic models (LangChain messages...) must pass their class'
            validation, else they arrive as :class:`eventbus.Undecodable`; False skips
            the check (faster: a third of the decoding; for frames from a trusted
            source only). None (default): True, unless the subscriber holds keys: then
            every frame it accepts is signed by one of them, a trusted publisher's, and
            is not checked again.
        preload: register LangChain's classes with the codec when connecting (importing
            LangChain, ~0.4 s once per process) rather than when the first LangChain value
            arrives, where that import would stall the first events of a live run. False:
            on first use (a short-lived reader, e.g. the command line).
        transport_options: passed to the transport.

    Raises:
        ConfigurationError, MissingDependencyError: as for :class:`Publisher`; malformed
            keys.
    """

    def __init__(
        self,
        url: str,
        namespace: str = "default",
        *,
        idle_timeout: float | None = 30.0,
        start_timeout: float | None = None,
        max_frame_bytes: int = 64 * 1024 * 1024,
        keys: KeysArg | Keyring = None,
        rejection_log_interval: float = 60.0,
        validate: bool | None = None,
        preload: bool = True,
        transport_options: dict[str, Any] | None = None,
    ) -> None:
        self.url = _redact(url)
        self._preload = preload
        self.namespace = namespace
        self.idle_timeout = idle_timeout
        self.start_timeout = start_timeout
        self.stats = SubscriberStats()
        url, self._keyring = keyring_from(url, keys, None)
        self._reader = FrameReader(
            self.url,
            namespace,
            stats=self.stats,
            keyring=self._keyring,
            max_frame_bytes=max_frame_bytes,
            # (with keys, a frame that is not signed by one of them is rejected first)
            validate=self._keyring is None if validate is None else validate,
            log_interval=rejection_log_interval,
        )
        self._decode = self._reader.decode
        self._transport: Transport = open_transport(url, namespace, **(transport_options or {}))

    @property
    def max_frame_bytes(self) -> int:
        return self._reader.max_frame_bytes

    @property
    def validate(self) -> bool:
        return self._reader.validate

    @property
    def key_ids(self) -> tuple[str, ...]:
        """The key ids this subscriber accepts (empty: frames are not checked)."""
        return self._keyring.key_ids if self._keyring is not None else ()

    async def connect(self) -> Subscriber:
        """Connect the transport (a reader's connect: nothing is created on the broker).
        Raises ConnectError / AuthenticationError."""
        if self._preload:
            from ._langchain import install_langchain

            install_langchain()
        await self._transport.connect(declare=False)
        return self

    async def __aenter__(self) -> Subscriber:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    # -- following one run -------------------------------------------------------------

    async def follow(
        self, run_id: str | uuid.UUID, after: str | None = None
    ) -> AsyncGenerator[FollowItem, None]:
        """Every event of the run, in order, from the first (or right after ``after``, a
        ``FollowItem.id``); waits for a run that has not started; ends after the run ends.

        Raises:
            RemoteRunError: the run raised in the worker.
            RunCancelledError: the run was cancelled in the worker.
            WorkerLostError: nothing arrived for ``idle_timeout`` seconds mid-run.
            RunNotFoundError: the run did not start within ``start_timeout``.
            SequenceGapError: events are missing: a frame of the run could not be decoded
                (the error says which and why), or retention trimmed them.
            InvalidResumeToken: ``after`` is not a token eventbus issued.
        """
        rid = _run_key(run_id)
        # the last frame of this run that could not be decoded, since the last record
        # that arrived: what a gap in the numbers is then blamed on
        lost: str | None = None
        position: str | None = None
        expected = 1
        if after is not None:
            last, position = _parse_token(after)
            expected = last + 1
        started = after is not None
        # Who the run's records must come from: the producer of the first frame read.
        # From the start that is the run's first frame; on a resume it is the frame at
        # the token's position, which held a record this follower accepted before.
        owner: str | None = None
        entries = self._transport.follow(rid, start=position)
        try:
            while True:
                timeout = self.idle_timeout if started else self.start_timeout
                try:
                    async with asyncio.timeout(timeout):
                        entry = await entries.__anext__()
                except TimeoutError:
                    if lost is not None:  # (the frame that did not decode held the end)
                        raise SequenceGapError(rid, expected, None, lost) from None
                    if started:
                        raise WorkerLostError(rid, timeout or 0.0) from None
                    raise RunNotFoundError(
                        f"run {rid} did not start within {timeout:g}s in namespace "
                        f"{self.namespace!r}"
                    ) from None
                malformed = self.stats.malformed
                try:
                    envelope = self._decode(entry.data, rid, owner)
                except DecodeError as exc:
                    if self.stats.malformed != malformed:  # (not another's frame: a lost one)
                        lost = (
                            f"frame at position {entry.position} of run {rid} could not be "
                            f"decoded: {exc}"
                        )
                    continue
                owner = envelope.producer
                started = True
                partial = None
                if type(envelope) is PartialEnvelope and envelope.lost:
                    lost = partial = (
                        f"frame at position {entry.position} of run {rid} could not be "
                        f"decoded: {envelope.lost[0][1]}"
                    )
                for record in envelope.records:
                    if type(record) is Heartbeat:
                        if record.seq >= expected:
                            raise SequenceGapError(rid, expected, record.seq + 1, lost)
                        continue
                    if record.seq < expected:
                        self.stats.duplicates += 1
                        continue
                    if record.seq > expected:
                        raise SequenceGapError(rid, expected, record.seq, lost)
                    expected += 1
                    lost = partial  # (None: nothing lost before the next record)
                    if type(record) is Event:
                        self.stats.events += 1
                        yield FollowItem(f"{record.seq}:{entry.position}", record.event, record.ts)
                        continue
                    error = _terminal_error(rid, record)
                    if error is not None:
                        raise error
                    return
        finally:
            await _aclose(entries)

    async def astream_events(
        self,
        run_id: str | uuid.UUID,
        *,
        include_names: Sequence[str] | None = None,
        include_types: Sequence[str] | None = None,
        include_tags: Sequence[str] | None = None,
        exclude_names: Sequence[str] | None = None,
        exclude_types: Sequence[str] | None = None,
        exclude_tags: Sequence[str] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """The run's ``astream_events(version="v2")`` iterator, rebuilt: equal to what the
        worker's local iterator yielded (with these filters applied as LangChain applies
        them). Raises what :meth:`follow` raises."""
        keep = _langchain.EventFilter(
            include_names=include_names,
            include_types=include_types,
            include_tags=include_tags,
            exclude_names=exclude_names,
            exclude_types=exclude_types,
            exclude_tags=exclude_tags,
        )
        async with contextlib.aclosing(self.follow(run_id)) as items:
            async for item in items:
                event = keep(item.event)
                if event is not None:
                    yield event

    async def astream(self, run_id: str | uuid.UUID) -> AsyncGenerator[Any, None]:
        """What ``runnable.astream(...)`` would have yielded in the worker: the chunks of
        the root run's stream events (for a LangGraph graph, per its ``stream_mode``:
        ``(mode, chunk)`` tuples when it was a list). Raises what :meth:`follow` raises."""
        rid = _run_key(run_id)
        async with contextlib.aclosing(self.follow(rid)) as items:
            async for item in items:
                event = item.event
                if event["run_id"] == rid and event["event"].endswith("_stream"):
                    yield event["data"]["chunk"]

    # -- consumer groups ---------------------------------------------------------------

    async def consume(
        self,
        group: str,
        consumer: str,
        *,
        start: Literal["first", "new"] = "new",
        prefetch: int = 100,
        visibility_timeout: float = 30.0,
        max_deliveries: int = 5,
    ) -> AsyncGenerator[Message, None]:
        """Every record of every run in the namespace, for this consumer of ``group``.

        Groups each see everything (fan-out); consumers of one group share it
        (competing). Call ``await msg.ack()`` when done; what is not acked within
        ``visibility_timeout`` is delivered again (to any consumer of the group), up to
        ``max_deliveries`` times, then dead-lettered (see :meth:`dead_letters`). A new
        group starts at the oldest retained record (``start="first"``) or at records
        published from now on (``"new"``). Malformed, foreign, unsigned or badly signed
        messages are counted in ``stats``, dead-lettered and skipped: they never stop the
        loop. Raises what the transport raises for broker trouble retries did not cure.
        """
        check_name("group", group)
        check_name("consumer", consumer)
        options = GroupOptions(
            start=start,
            prefetch=prefetch,
            visibility_timeout=visibility_timeout,
            max_deliveries=max_deliveries,
        )
        deliveries = self._transport.consume(group, consumer, options)
        # run -> its producer, learnt from the run's first frame: a consumer that did not
        # see it (joined later; a competing consumer got it) cannot tell, and accepts
        owners: OrderedDict[str, str] = OrderedDict()
        try:
            async for delivery in deliveries:
                try:
                    envelope = self._decode(delivery.data, None, owners=owners)
                except DecodeError as exc:
                    await delivery.reject(f"rejected by eventbus: {exc}")
                    continue
                if envelope.records and envelope.records[0].seq == 1:
                    owners.setdefault(envelope.run, envelope.producer)
                    owners.move_to_end(envelope.run)
                    if len(owners) > _GROUP_OWNERS:
                        owners.popitem(last=False)
                records = [r for r in envelope.records if type(r) is not Heartbeat]
                if not records:
                    await delivery.ack()
                    continue
                frame = _FrameAck(delivery, len(records))
                redelivered = delivery.deliveries > 1
                for record in records:
                    kind: Literal["event", "end", "error", "cancelled"]
                    if type(record) is Event:
                        self.stats.events += 1
                        kind, event, error = "event", record.event, None
                    else:
                        error = _terminal_error(envelope.run, record)
                        event = None
                        kind = (
                            "end"
                            if error is None
                            else "error"
                            if isinstance(error, RemoteRunError)
                            else "cancelled"
                        )
                    yield Message(
                        kind,
                        envelope.run,
                        record.seq,
                        event,
                        error,
                        redelivered,
                        frame,
                        ts=record.ts,
                    )
        finally:
            await _aclose(deliveries)

    async def delete_group(self, group: str) -> None:
        """Forget a consumer group: its position, pending messages and dead letters."""
        check_name("group", group)
        await self._transport.delete_group(group)

    async def dead_letters(self, group: str, *, count: int = 100) -> list[DecodedDeadLetter]:
        """The group's oldest ``count`` dead letters (a read: they stay), decoded as the
        group's consumers decode them: each with ``position``, ``data`` (the raw frame),
        ``reason``, ``deliveries``, ``run_id`` and ``records`` (kind, seq, event or
        error), or ``decode_error`` for a frame this subscriber refuses.

        Raises:
            ConfigurationError: a bad group name.
            TransportError: the broker could not be used.
        """
        return await _runs.dead_letters(self, group, count=count)

    async def requeue_dead_letters(self, group: str, positions: Sequence[str] | None = None) -> int:
        """Put the group's dead letters at ``positions`` (as :meth:`dead_letters` gives
        them), or all of them (None), back into the group: each is delivered again to one
        of its consumers, with its delivery count starting afresh. A dead letter is
        removed only once its frame is back in the group, so a crash half-way leaves at
        worst a duplicate (at-least-once), never a loss. Returns how many were requeued;
        a position that is not a dead letter of the group (unknown, requeued already, or,
        on Redis, a frame the group stream has trimmed) is skipped and not counted. A
        write: the one operating call that changes the broker's state.

        Raises:
            ConfigurationError: a bad group name.
            TransportError: the broker could not be used.
        """
        check_name("group", group)
        if positions is not None:
            positions = [str(p) for p in positions]
            if not positions:
                return 0
        return await self._transport.requeue_dead_letters(group, positions)

    # -- operating (eventbus._runs, eventbus._control) ---------------------------------

    async def runs(
        self,
        *,
        wait: float = 1.0,
        settle: float = 1.0,
        max_records: int = 100_000,
        idle: float | None = None,
    ) -> list[RunInfo]:
        """The namespace's runs the broker still retains, newest first (see
        :class:`~eventbus.RunInfo`), read from the group stream without a group (nothing
        is created): from its oldest retained frame until ``settle`` seconds pass without
        one (``wait`` for the first), a frame newer than this call, or ``max_records``.
        Heartbeats do not reach the group stream: an unfinished run silent for ``idle``
        seconds (default ``idle_timeout``, else 30) is ``lost``.

        Raises:
            TransportError: the broker could not be used.
        """
        idle = idle if idle is not None else self.idle_timeout or 30.0
        found, _ = await _runs.list_runs(
            self, wait=wait, settle=settle, max_records=max_records, idle=idle
        )
        return found

    async def status(
        self, run_id: str | uuid.UUID, *, wait: float = 1.0, settle: float = 0.3
    ) -> RunInfo:
        """One run's :class:`~eventbus.RunInfo`, read from its stream (up to ``wait``
        seconds for a first record, then to its last record, a newer one than this call,
        or ``settle`` seconds without one): ``running``, ``ended``, ``failed``,
        ``cancelled``, ``lost`` (nothing from its worker, heartbeats included, for
        ``idle_timeout``) or ``unknown``; start, duration, events, error.

        Raises:
            ConfigurationError: ``run_id`` is not a UUID.
            TransportError: the broker could not be used.
        """
        return await _runs.run_status(self, _run_key(run_id), wait=wait, settle=settle)

    async def groups(self) -> list[GroupInfo]:
        """The namespace's consumer groups: ``name``, ``consumers``, ``pending``
        (delivered, not yet acked; None on RabbitMQ, which does not tell), ``lag`` (not
        yet delivered), ``dead_letters``. A read: nothing is created.

        Raises:
            TransportError: the broker could not be used.
        """
        return await _runs.list_groups(self)

    async def cancel(
        self, run_id: str | uuid.UUID, *, reason: str = "cancelled", timeout: float = 10.0
    ) -> CancelResult:
        """Cancel a run from anywhere: the worker running it cancels the run's task, and
        the run's followers get :class:`RunCancelledError` with ``reason`` (its
        ``Publisher.run``/``astream_events``/``SyncPublisher`` call raises it too; the
        worker's own task is not cancelled).

        Returns a :class:`~eventbus.CancelResult` whose ``outcome`` is ``cancelled``;
        ``finished`` for a run that had already ended (``status`` says how), ``unknown``
        for one nothing is retained of, ``refused`` for one its worker cannot cancel (a
        callback-handler run has no task), ``no_worker`` when it has not ended and no
        worker answered within ``timeout`` seconds (its worker is gone). None of these
        is an error.

        Raises:
            ConfigurationError: ``run_id`` is not a UUID.
            TransportError: the broker could not be used.
        """
        return await _control.cancel_run(self, _run_key(run_id), reason, timeout=timeout)


def _terminal_error(run_id: str, record: Record) -> RunError | None:
    """What a terminal record means for the run: None for a normal end."""
    if type(record) is Failed:
        return RemoteRunError(run_id, record.type, record.module, record.message, record.traceback)
    if type(record) is Cancelled:
        return RunCancelledError(run_id, record.reason)
    return None


async def _aclose(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()
