"""The wire format: msgspec Structs, and the one Encoder/Decoder of each kind.

A broker message (a *frame*) is an :class:`Envelope`: who sent it (schema version,
namespace, root run id, producer id) and a list of records of that run, each a tagged
union member with the run's sequence number and a timestamp. Records are encoded one
by one when they happen (so a published event is a snapshot, and its size is known)
and embedded in the envelope as ``msgspec.Raw`` without being encoded again.

MessagePack is the default; JSON is available (``Publisher(codec="json")``) for
debugging and for consumers in other languages. Decoders tell them apart by the first
byte: a JSON envelope starts with ``{``, which is never the first byte of a MessagePack
map. See ``docs/wire-format.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, Union

import msgspec

from ._codec import (
    Unrepresentable,
    encode_tree,
    ext_hook,
    ext_hook_trusted,
    from_wire,
    to_msgpack_tree,
    to_wire,
)
from ._exceptions import ConfigurationError, DecodeError
from ._signing import Keyring

__all__ = [
    "SCHEMA_VERSION",
    "Cancelled",
    "End",
    "Envelope",
    "Event",
    "Failed",
    "Frame",
    "Heartbeat",
    "PartialEnvelope",
    "Record",
    "RecordEncoder",
    "decode_envelope",
    "decode_frame",
    "encode_envelope",
    "skeleton_records",
]

SCHEMA_VERSION = 1


class _Numbered(msgspec.Struct):
    # what every record has, first in its array: the run's sequence number and a timestamp
    seq: int
    ts: float


class Event(_Numbered, tag="event", tag_field="kind"):
    """One ``astream_events`` event; ``event`` is its codec wire tree."""

    event: Any


class End(_Numbered, tag="end", tag_field="kind"):
    """The root run finished; nothing follows."""


class Failed(_Numbered, tag="error", tag_field="kind"):
    """The root run raised; nothing follows."""

    type: str
    module: str
    message: str
    traceback: str


class Cancelled(_Numbered, tag="cancelled", tag_field="kind"):
    """The root run was cancelled; nothing follows."""

    reason: str


class Heartbeat(_Numbered, tag="heartbeat", tag_field="kind"):
    """The worker is alive. ``seq`` is that of the last record sent before it (it takes
    no number of its own), which lets a follower notice missing records early."""


Record = Union[Event, End, Failed, Cancelled, Heartbeat]  # noqa: UP007 - a runtime value


class Envelope(msgspec.Struct):
    """One frame: records of one run, in sequence order.

    ``kid`` and ``mac``: the key id and the MAC of a signed frame (``eventbus._signing``),
    over the key id, ``ns``, ``run``, ``producer`` and the bytes of ``records`` as sent;
    absent (empty) in an unsigned frame."""

    v: int
    ns: str
    run: str
    producer: str
    records: list[Record]
    kid: str = ""
    mac: bytes = b""


class Frame(msgspec.Struct, omit_defaults=True):
    """A frame's outer layer, its records not decoded yet (``records`` is their bytes,
    exactly as signed). Publishers encode it too: an unsigned frame then has no kid/mac
    keys at all, byte for byte what readers before signing read."""

    v: int
    ns: str
    run: str
    producer: str
    records: msgspec.Raw
    kid: str = ""
    mac: bytes = b""


class _EventHead(msgspec.Struct):
    # what an oversized frame's event keeps: its identity, not its values
    event: str = ""
    name: str = ""
    run_id: str = ""
    tags: list[str] = []
    parent_ids: list[str] = []
    data: dict[str, msgspec.Raw] = {}


class _EventSkeleton(_Numbered, tag="event", tag_field="kind"):
    event: msgspec.Raw


_Skeleton = Union[_EventSkeleton, End, Failed, Cancelled, Heartbeat]  # noqa: UP007


Codec = Literal["msgpack", "json"]


class RecordEncoder:
    """Encodes records and envelopes in one format; made once per publisher."""

    def __init__(self, codec: Codec = "msgpack") -> None:
        encoder: msgspec.msgpack.Encoder | msgspec.json.Encoder
        if codec == "msgpack":
            encoder = msgspec.msgpack.Encoder()
        elif codec == "json":
            encoder = msgspec.json.Encoder()
        else:  # a str from a config file is not checked by the Literal
            raise ConfigurationError(f"unknown codec {codec!r}: use 'msgpack' or 'json'")
        self._encode = encoder.encode
        self._msgpack = codec == "msgpack"
        #: a Python value -> this format's value tree (see eventbus._codec)
        self.to_tree: Callable[[Any], Any] = to_msgpack_tree if codec == "msgpack" else to_wire

    def encode_record(self, record: Any) -> bytes:
        """A record's (or a value tree's) bytes; never raises for a tree ``to_tree`` made
        (a value the format refuses is carried repaired: see ``eventbus._codec.encode_tree``).
        """
        return encode_tree(record, self._encode, self._msgpack)

    def snapshot(self, tree: Any) -> msgspec.Raw:
        """A value tree encoded now, for :meth:`encode_event` to embed later as it is (what
        is published is then the value as it was at this moment)."""
        return msgspec.Raw(encode_tree(tree, self._encode, self._msgpack))

    def encode_event(self, seq: int, ts: float, tree: Any) -> bytes:
        """An :class:`Event` record's bytes; never raises for a tree ``to_tree`` made (or a
        :meth:`snapshot`)."""
        try:
            return self._encode(Event(seq, ts, tree))
        except Exception:  # rare: repair the tree value by value, keep the event
            return self._encode(Event(seq, ts, self.snapshot(tree)))

    def encode_envelope(
        self,
        ns: str,
        run: str,
        producer: str,
        records: list[bytes],
        keyring: Keyring | None = None,
    ) -> bytes:
        """A frame of already encoded records; signed when ``keyring`` is given."""
        body = self._encode([msgspec.Raw(r) for r in records])
        if keyring is None:
            envelope = Frame(SCHEMA_VERSION, ns, run, producer, msgspec.Raw(body))
        else:
            kid, mac = keyring.sign(ns, run, producer, body)
            envelope = Frame(SCHEMA_VERSION, ns, run, producer, msgspec.Raw(body), kid, mac)
        return self._encode(envelope)


# MessagePack frames' records decode in one pass: msgspec calls ext_hook per typed node
_msgpack_frame = msgspec.msgpack.Decoder(Frame)
_json_frame = msgspec.json.Decoder(Frame)
# (ext_hook never raises: a value that cannot be rebuilt becomes an Undecodable in place)
_msgpack_records = msgspec.msgpack.Decoder(list[Record], ext_hook=ext_hook)
_msgpack_records_trusted = msgspec.msgpack.Decoder(list[Record], ext_hook=ext_hook_trusted)
_json_records = msgspec.json.Decoder(list[Record])
# one by one: the fallback for records that do not all decode, so that the others (an end
# record above all) still arrive
_msgpack_raw_list = msgspec.msgpack.Decoder(list[msgspec.Raw])
_json_raw_list = msgspec.json.Decoder(list[msgspec.Raw])
_msgpack_record = msgspec.msgpack.Decoder(Record, ext_hook=ext_hook)
_msgpack_record_trusted = msgspec.msgpack.Decoder(Record, ext_hook=ext_hook_trusted)
_json_record = msgspec.json.Decoder(Record)
_msgpack_skeleton = msgspec.msgpack.Decoder(list[_Skeleton])
_json_skeleton = msgspec.json.Decoder(list[_Skeleton])
_msgpack_head = msgspec.msgpack.Decoder(_EventHead)
_json_head = msgspec.json.Decoder(_EventHead)


def _malformed(data: bytes | msgspec.Raw, exc: BaseException) -> DecodeError:
    size = len(data)
    if isinstance(exc, (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError)):
        # (msgspec lets UnicodeDecodeError out for a msgpack str that is not UTF-8)
        return DecodeError(f"malformed frame ({size} bytes): {exc}")
    if isinstance(exc, RecursionError):  # nesting deeper than the stack allows
        return DecodeError(f"malformed frame ({size} bytes): nested too deeply")
    # whatever else forged bytes provoke is still a bad message
    return DecodeError(f"malformed frame ({size} bytes): {exc!r}")


def decode_frame(data: bytes) -> tuple[Frame, bool]:
    """A frame's outer layer (a cheap pass: records are skipped, not decoded), and whether
    it is JSON.

    Raises:
        DecodeError: malformed, or a schema version this version cannot read.
    """
    is_json = data[:1] == b"{"
    try:
        frame = (_json_frame if is_json else _msgpack_frame).decode(data)
    except Exception as exc:
        raise _malformed(data, exc) from exc
    if frame.v != SCHEMA_VERSION:
        raise DecodeError(f"frame schema version {frame.v} is not {SCHEMA_VERSION}")
    return frame, is_json


def decode_records_partial(
    frame: Frame, is_json: bool, validate: bool = True
) -> tuple[list[Record], list[tuple[int, str]]]:
    """The frame's records, their events rebuilt into Python values (a value that cannot
    be rebuilt becomes an ``eventbus.Undecodable`` in its place: see
    ``eventbus._codec.take_undecodable``), and the records that could not be decoded
    (forged or corrupted bytes): their index in the frame and why. ``validate``: rebuilt
    pydantic models must pass their class' validation (False: trusted frames, skip it).

    Raises:
        DecodeError: the records are not an array at all.
    """
    try:
        if is_json:
            records = _json_records.decode(frame.records)
            for record in records:
                if type(record) is Event:
                    record.event = from_wire(record.event, consume=True, validate=validate)
        else:
            decoder = _msgpack_records if validate else _msgpack_records_trusted
            records = decoder.decode(frame.records)
        return records, []
    except Exception:  # maybe one bad record: the others still count
        pass
    try:
        items = (_json_raw_list if is_json else _msgpack_raw_list).decode(frame.records)
    except Exception as exc:
        raise _malformed(frame.records, exc) from exc
    one = _json_record if is_json else _msgpack_record if validate else _msgpack_record_trusted
    records = []
    lost: list[tuple[int, str]] = []
    for i, item in enumerate(items):
        try:
            record = one.decode(item)
            if is_json and type(record) is Event:
                record.event = from_wire(record.event, consume=True, validate=validate)
        except Exception as exc:
            lost.append((i, f"record {i}: {type(exc).__name__}: {exc}"))
            continue
        records.append(record)
    return records, lost


def skeleton_records(frame: Frame, is_json: bool, why: str) -> list[Record]:
    """The frame's records with every event's ``data`` values replaced by
    :class:`~eventbus.Unrepresentable` placeholders saying ``why`` (and its ``metadata``
    left empty): for a frame too large to rebuild, so that its run still goes on with
    every sequence number accounted for.

    Raises:
        DecodeError: the records themselves are malformed.
    """
    try:
        skeleton = (_json_skeleton if is_json else _msgpack_skeleton).decode(frame.records)
    except Exception as exc:
        raise _malformed(frame.records, exc) from exc
    placeholder = Unrepresentable("eventbus.Oversized", why)
    records: list[Record] = []
    for record in skeleton:
        if type(record) is not _EventSkeleton:
            records.append(record)  # type: ignore[arg-type]
            continue
        try:
            head = (_json_head if is_json else _msgpack_head).decode(record.event)
        except Exception:  # an event that is not a plain StreamEvent map: keep nothing
            head = _EventHead(data={"eventbus": msgspec.Raw(b"")})
        event = {
            "event": head.event,
            "name": head.name,
            "run_id": head.run_id,
            "tags": head.tags,
            "metadata": {},
            "parent_ids": head.parent_ids,
            "data": {key: placeholder for key in head.data},
        }
        records.append(Event(record.seq, record.ts, event))
    return records


class PartialEnvelope(Envelope):
    """A frame some of whose records could not be decoded (forged or corrupted bytes):
    ``lost`` says which (their index in the frame) and why; the others are in
    ``records``."""

    lost: list[tuple[int, str]] = []


def decode_envelope(
    data: bytes, *, max_bytes: int, keyring: Keyring | None = None, validate: bool = True
) -> Envelope:
    """Decode one frame, its records' events rebuilt into Python values (for tests and
    tools; subscribers decode in steps, see ``eventbus._inbound.FrameReader``).

    Raises:
        DecodeError: oversized, malformed, truncated, forged, or a schema version this
            version cannot read.
        SignatureError: ``keyring`` given and the frame is unsigned or badly signed.
    """
    if len(data) > max_bytes:
        raise DecodeError(f"frame of {len(data)} bytes exceeds max_frame_bytes={max_bytes}")
    frame, is_json = decode_frame(data)
    if keyring is not None:
        keyring.verify(frame.kid, frame.mac, frame.ns, frame.run, frame.producer, frame.records)
    records, lost = decode_records_partial(frame, is_json, validate)
    if lost:
        return PartialEnvelope(
            frame.v, frame.ns, frame.run, frame.producer, records, frame.kid, frame.mac, lost
        )
    return Envelope(frame.v, frame.ns, frame.run, frame.producer, records, frame.kid, frame.mac)


def encode_envelope(
    codec: Codec,
    ns: str,
    run: str,
    producer: str,
    records: list[Record],
    keyring: Keyring | None = None,
) -> bytes:
    """Encode a frame from record Structs whose events are already value trees of that
    format (for tests and tools; publishers use RecordEncoder)."""
    enc = RecordEncoder(codec)
    return enc.encode_envelope(ns, run, producer, [enc.encode_record(r) for r in records], keyring)


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a frame, generated from the Structs (``docs/wire-format.md``).

    Descriptions are normalised with :func:`inspect.cleandoc`: msgspec versions differ in
    how much of a docstring's indentation they keep (0.23 keeps it, 0.22 did not), and the
    committed schema must not depend on which one is installed."""
    import inspect

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: inspect.cleandoc(v) if k == "description" and isinstance(v, str) else clean(v)
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    schema: dict[str, Any] = clean(msgspec.json.schema(Envelope))
    return schema


def json_schema_text() -> str:
    """The schema as committed in ``docs/wire-format.schema.json``."""
    import json

    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
