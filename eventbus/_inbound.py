"""What a subscriber makes of one broker message: the frame checked (namespace, run,
producer, signature), its records rebuilt (an oversized one as placeholders), and what was
rejected or could not be rebuilt counted in the subscriber's stats and logged at a bounded
rate."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NoReturn

from . import _langchain
from ._codec import take_undecodable
from ._exceptions import DecodeError, SignatureError
from ._signing import Keyring
from ._wire import (
    Envelope,
    Event,
    PartialEnvelope,
    decode_frame,
    decode_records_partial,
    skeleton_records,
)

if TYPE_CHECKING:
    from ._subscriber import SubscriberStats

__all__ = ["FrameReader"]

logger = logging.getLogger("eventbus")


class _RejectionLog:
    """One WARNING per kind of rejection per ``interval`` seconds, with how many were not
    logged since: hostile traffic must not flood the log (the counters stay exact)."""

    def __init__(self, url: str, interval: float) -> None:
        self._url = url
        self._interval = interval
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}

    def __call__(self, kind: str, exc: BaseException) -> None:
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        self._last[kind] = now
        quiet = self._quiet.pop(kind, 0)
        more = f" ({quiet} more rejected as {kind} since the last report)" if quiet else ""
        logger.warning("rejected a message from %s (%s): %s%s", self._url, kind, exc, more)


class FrameReader:
    """Decodes the frames of one subscriber (its namespace, keys and limits)."""

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        stats: SubscriberStats,
        keyring: Keyring | None,
        max_frame_bytes: int,
        validate: bool,
        log_interval: float,
    ) -> None:
        self.namespace = namespace
        self.stats = stats
        self.max_frame_bytes = max_frame_bytes
        self.validate = validate
        self._keyring = keyring
        self._logged: set[tuple[str, str]] = set()  # kinds of undecodable values logged
        self._rejected = _RejectionLog(url, log_interval)

    def decode(
        self,
        data: bytes,
        run_id: str | None,
        owner: str | None = None,
        owners: Mapping[str, str] | None = None,
    ) -> Envelope:
        """The frame, its events rebuilt; ``run_id``: the run it must belong to;
        ``owner``: the producer that must have sent it (the run's own, when known), or
        ``owners``: those of the runs whose owner is known.

        Raises:
            DecodeError: the whole frame is rejected (counted in ``stats``, logged at a
                bounded rate); SignatureError for an unsigned or badly signed one.
        """
        try:
            frame, is_json = decode_frame(data)
        except DecodeError as exc:
            self._reject("malformed", exc)
        if frame.ns != self.namespace or (run_id is not None and frame.run != run_id):
            self._reject(
                "foreign",
                DecodeError(
                    f"frame of namespace {frame.ns!r}, run {frame.run!r} "
                    f"in the stream of {self.namespace!r}, {run_id!r}"
                ),
            )
        if self._keyring is not None:
            try:
                self._keyring.verify(
                    frame.kid, frame.mac, frame.ns, frame.run, frame.producer, frame.records
                )
            except SignatureError as exc:
                self._reject(exc.reason, exc)
        if owners is not None:
            owner = owners.get(frame.run)
        if owner is not None and frame.producer != owner:
            self._reject(
                "foreign",
                DecodeError(
                    f"frame of run {frame.run} from producer {frame.producer!r}, "
                    f"not from the run's own {owner!r}"
                ),
            )
        if len(data) > self.max_frame_bytes:
            # rebuilt as placeholders, not refused: refusing would cost the run its
            # sequence (a gap) or, for a final frame, its end
            why = (
                f"<value omitted: its frame of {len(data)} bytes exceeds "
                f"max_frame_bytes={self.max_frame_bytes}>"
            )
            try:
                records = skeleton_records(frame, is_json, why)
            except DecodeError as exc:
                self._reject("malformed", exc)
            self.stats.oversized += 1
            self._rejected("oversized", DecodeError(why[1:-1]))
        else:
            try:
                records, lost = decode_records_partial(frame, is_json, self.validate)
            except DecodeError as exc:
                take_undecodable()  # (made before the records turned out not to be any)
                self._reject("malformed", exc)
            shapeless = [
                (i, f"record {i}: {reason}")
                for i, r in enumerate(records)
                if type(r) is Event and (reason := _langchain.malformed_event(r.event))
            ]
            if shapeless:  # lost like a record that did not decode: never handed on
                dropped = {i for i, _ in shapeless}
                records = [r for i, r in enumerate(records) if i not in dropped]
                lost = [*lost, *shapeless]
            placeholders = take_undecodable()
            if placeholders:
                self.stats.undecodable += len(placeholders)
                for p in placeholders:
                    self._log_once(
                        p.type,
                        p.reason.partition(":")[0],
                        "a value of type %s could not be rebuilt and arrived as an "
                        "eventbus.Undecodable (the rest of its event arrived): %s",
                        p.type,
                        p.reason,
                    )
            if lost:
                self.stats.lost_records += len(lost)
                self._log_once(
                    "record",
                    frame.run,
                    "run %s: %d record(s) of a frame could not be decoded (the others arrived): %s",
                    frame.run,
                    len(lost),
                    lost[0][1],
                )
                self.stats.frames += 1
                return PartialEnvelope(
                    frame.v,
                    frame.ns,
                    frame.run,
                    frame.producer,
                    records,
                    frame.kid,
                    frame.mac,
                    lost,
                )
        self.stats.frames += 1
        return Envelope(frame.v, frame.ns, frame.run, frame.producer, records, frame.kid, frame.mac)

    def _log_once(self, kind: str, detail: str, message: str, *args: Any) -> None:
        key = (kind, detail)
        if key in self._logged or len(self._logged) >= 1000:
            return
        self._logged.add(key)
        logger.warning(message, *args)

    def _reject(self, kind: str, exc: DecodeError) -> NoReturn:
        setattr(self.stats, kind, getattr(self.stats, kind) + 1)
        self._rejected(kind, exc)
        raise exc
