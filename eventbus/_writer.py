"""A publisher's buffer and writer: records of its runs wait in per-run buffers; one
writer task publishes them, at once while the rate is low, and under load after letting
them pile up for up to ``linger``; it packs each run's pending records into frames of up to
``max_frame_bytes`` and publishes all of them in one transport call (one round trip).
A batch that cannot be published fails the runs whose records it held (their error
record takes the first lost seq), not the publisher."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from ._control import CancelState
from ._exceptions import EventbusError, PublishError, TransportError
from ._records import failure_record
from ._signing import Keyring
from ._wire import Cancelled, End, Failed, Heartbeat, RecordEncoder
from .transports import OutFrame, Transport

__all__ = ["Batcher", "PublisherStats", "Run"]

logger = logging.getLogger("eventbus")

# the writer lingers (see Publisher's ``linger``) while records arrive faster than this
# (per second, over windows of _RATE_WINDOW seconds): a streaming LLM run emits 3-10k/s,
# a paced producer at 1k/s is published at once, its latency that of one round trip
_BUSY_RATE = 2000.0
_RATE_WINDOW = 0.02


@dataclass
class PublisherStats:
    """Counters of one publisher (read them any time)."""

    events: int = 0
    frames: int = 0
    bytes: int = 0
    batches: int = 0
    heartbeats: int = 0
    oversized_events: int = 0
    backpressure_waits: int = 0
    failed_batches: int = 0


_RESENDS = 3  # times a run's lost error record is published again


class Run(CancelState):
    __slots__ = (
        "done",
        "failure",
        "last_emit",
        "lost_from",
        "output",
        "records",
        "resends",
        "run_id",
        "seq",
    )

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.seq = 0
        # (encoded record, its seq; 0 for a heartbeat, which takes no number of its own)
        self.records: list[tuple[bytes, int]] = []
        self.last_emit = time.monotonic()
        self.output: Any = None
        self.done = False
        # why records of this run were not published (raised by its run(), and only there)
        self.failure: EventbusError | None = None
        # the first seq that was not published: the run's error record takes it, so that
        # followers get the error in sequence rather than a gap
        self.lost_from = 0
        self.resends = 0  # times that error record was lost too and sent again
        super().__init__()  # (what a remote cancel needs)


class Batcher:
    """The buffer and the writer of :class:`eventbus.Publisher` (its base class)."""

    url: str
    namespace: str
    producer: str
    stats: PublisherStats
    _keyring: Keyring | None
    _transport: Transport
    _encoder: RecordEncoder
    _linger: float
    _max_frame_bytes: int
    _max_buffer_bytes: int
    _heartbeat_interval: float
    _runs: dict[str, Run]

    def __init__(self) -> None:
        self._dirty: dict[str, Run] = {}  # runs with unpublished records, in order
        self._buffered = 0
        self._emitted = 0
        self._published = 0
        self._urgent = False
        self._pending_since = 0.0  # when the oldest unpublished record was emitted
        self._failures = 0  # batches that could not be published
        self._last_failure: EventbusError | None = None
        self._frame_limit = 0  # a frame stays under this (the broker's limit), 0: none
        self._wakeup: asyncio.Event | None = None
        self._progress: asyncio.Condition | None = None

    async def _wait_published(self, target: int) -> None:
        self._urgent = True
        self._wake()
        assert self._progress is not None
        async with self._progress:
            await self._progress.wait_for(lambda: self._published >= target)

    def _append(self, run: Run, data: bytes, seq: int) -> None:
        if run.lost_from and seq != run.lost_from:
            return  # nothing after a loss, but the error record that takes its place
        run.records.append((data, seq))
        run.last_emit = now = time.monotonic()
        if not self._dirty:
            self._pending_since = now
        self._dirty[run.run_id] = run
        self._buffered += len(data)
        self._emitted += 1
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.is_set():
            wakeup.set()

    def _terminal(self, run: Run, record: End | Failed | Cancelled) -> None:
        if run.done:
            return
        run.seq += 1
        if run.lost_from and run.failure is not None:
            record = failure_record(run.failure)
            run.seq = run.lost_from
        record.seq = run.seq
        record.ts = time.time()
        run.done = True
        self._append(run, self._encoder.encode_record(record), run.seq)
        self._urgent = True

    def _lost(self, run: Run, first_seq: int, failure: EventbusError) -> None:
        """Records of ``run`` from ``first_seq`` on were not published (0: only heartbeats
        were, which costs the run nothing)."""
        if not first_seq:
            return
        if run.lost_from:
            # the error record that took the lost records' place was lost as well: its
            # followers wait for it, so it goes again (a few times: the broker may be gone)
            if first_seq == run.lost_from and run.done and run.resends < _RESENDS:
                run.resends += 1
                run.done = False
                self._terminal(run, End(0, 0.0))
            return
        if run.failure is None:
            run.failure = failure
        run.lost_from = first_seq
        # what was emitted since the batch was taken would follow a gap: dropped
        dropped, run.records = run.records, []
        self._buffered -= sum(len(data) for data, _ in dropped)
        self._published += len(dropped)
        if run.done:  # its terminal record is lost: an error record in its place
            run.done = False
            self._terminal(run, End(0, 0.0))

    async def _backpressure(self) -> None:
        self.stats.backpressure_waits += 1
        self._urgent = True
        self._wake()
        assert self._progress is not None
        async with self._progress:
            # (failed batches are taken off the buffer too: this always ends)
            await self._progress.wait_for(lambda: self._buffered <= self._max_buffer_bytes // 2)

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    # -- the writer --------------------------------------------------------------------

    def _take_frames(self) -> tuple[list[OutFrame], int, int, list[tuple[Run, int]]]:
        """The frames of what is pending, and each run in them with its first seq."""
        frames: list[OutFrame] = []
        count = size = 0
        limit = self._frame_limit
        runs: list[tuple[Run, int]] = []
        for run in self._dirty.values():
            records, run.records = run.records, []
            runs.append((run, next((seq for _, seq in records if seq), 0)))
            start = 0
            while start < len(records):
                end, nbytes = start, 0
                while end < len(records) and (end == start or nbytes < self._max_frame_bytes):
                    # never past the broker's limit: a big record starts a frame of its own
                    if limit and end > start and nbytes + len(records[end][0]) > limit:
                        break
                    nbytes += len(records[end][0])
                    end += 1
                chunk = records[start:end]
                last = run.done and end == len(records)
                frames.append(
                    OutFrame(
                        run.run_id,
                        self._encoder.encode_envelope(
                            self.namespace,
                            run.run_id,
                            self.producer,
                            [r for r, _ in chunk],
                            self._keyring,
                        ),
                        fanout=any(seq for _, seq in chunk),
                        final=last,
                    )
                )
                count += len(chunk)
                size += nbytes
                start = end
        self._dirty = {}
        return frames, count, size, runs

    async def _writer(self) -> None:
        assert self._wakeup is not None
        assert self._progress is not None
        busy = False
        window_start, window_count = time.monotonic(), 0  # the rate of records, measured
        while True:
            await self._wakeup.wait()
            if busy and not self._urgent and self._linger > 0:
                # events arrive faster than round trips: let a bigger batch pile up, since
                # the cost of a batch hardly depends on its size; no record waits for more
                # than ``linger`` (those that piled up during a slow round trip go at once)
                delay = self._pending_since + self._linger - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            self._wakeup.clear()
            self._urgent = False
            frames, count, size, runs = self._take_frames()
            if not frames:
                continue
            now = time.monotonic()
            window_count += count
            if now - window_start >= _RATE_WINDOW:  # (a burst within a window is not load)
                busy = window_count / (now - window_start) > _BUSY_RATE
                window_start, window_count = now, 0
            try:
                await self._transport.publish(frames)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # these runs lost records: each of them fails; later runs (and the
                # publisher) carry on
                failure: EventbusError
                if isinstance(exc, TransportError):
                    failure = exc
                else:
                    failure = PublishError(f"publishing failed: {exc!r}")
                    failure.__cause__ = exc
                # news for flush() only if records of a run that had not failed yet were
                # lost (a failed run's own error record, or heartbeats, are not news)
                if any(first and run.failure is None for run, first in runs):
                    self._failures += 1
                    self._last_failure = failure
                for run, first_seq in runs:
                    self._lost(run, first_seq, failure)
                self.stats.failed_batches += 1
                logger.error("publishing to %s failed: %s", self.url, exc)
            else:
                self.stats.frames += len(frames)
                self.stats.batches += 1
                self.stats.bytes += sum(len(f.data) for f in frames)
            self._buffered -= size
            self._published += count
            async with self._progress:
                self._progress.notify_all()

    async def _heartbeats(self) -> None:
        interval = self._heartbeat_interval
        while True:
            await asyncio.sleep(interval / 2)
            now = time.monotonic()
            for run in list(self._runs.values()):
                if not run.done and now - run.last_emit >= interval:
                    self.stats.heartbeats += 1
                    record = self._encoder.encode_record(Heartbeat(run.seq, time.time()))
                    self._append(run, record, 0)
