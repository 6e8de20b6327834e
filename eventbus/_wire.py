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

from ._codec import ext_hook, from_wire, to_msgpack_tree, to_wire
from ._exceptions import ConfigurationError, DecodeError

__all__ = [
    "SCHEMA_VERSION",
    "Cancelled",
    "End",
    "Envelope",
    "Event",
    "Failed",
    "Heartbeat",
    "Record",
    "RecordEncoder",
    "decode_envelope",
    "encode_envelope",
]

SCHEMA_VERSION = 1


class Event(msgspec.Struct, tag="event", tag_field="kind"):
    """One ``astream_events`` event; ``event`` is its codec wire tree."""

    seq: int
    ts: float
    event: Any


class End(msgspec.Struct, tag="end", tag_field="kind"):
    """The root run finished; nothing follows."""

    seq: int
    ts: float


class Failed(msgspec.Struct, tag="error", tag_field="kind"):
    """The root run raised; nothing follows."""

    seq: int
    ts: float
    type: str
    module: str
    message: str
    traceback: str


class Cancelled(msgspec.Struct, tag="cancelled", tag_field="kind"):
    """The root run was cancelled; nothing follows."""

    seq: int
    ts: float
    reason: str


class Heartbeat(msgspec.Struct, tag="heartbeat", tag_field="kind"):
    """The worker is alive. ``seq`` is that of the last record sent before it (it takes
    no number of its own), which lets a follower notice missing records early."""

    seq: int
    ts: float


Record = Union[Event, End, Failed, Cancelled, Heartbeat]  # noqa: UP007 - a runtime value


class Envelope(msgspec.Struct):
    """One frame: records of one run, in sequence order."""

    v: int
    ns: str
    run: str
    producer: str
    records: list[Record]


class _OutEnvelope(msgspec.Struct):
    # the same layout as Envelope, with records already encoded
    v: int
    ns: str
    run: str
    producer: str
    records: list[msgspec.Raw]


Codec = Literal["msgpack", "json"]


class RecordEncoder:
    """Encodes records and envelopes in one format; made once per publisher."""

    def __init__(self, codec: Codec = "msgpack") -> None:
        self._encoder: msgspec.msgpack.Encoder | msgspec.json.Encoder
        if codec == "msgpack":
            self._encoder = msgspec.msgpack.Encoder()
        elif codec == "json":
            self._encoder = msgspec.json.Encoder()
        else:  # a str from a config file is not checked by the Literal
            raise ConfigurationError(f"unknown codec {codec!r}: use 'msgpack' or 'json'")
        self.encode_record = self._encoder.encode
        self.encode_value = self._encoder.encode
        #: a Python value -> this format's value tree (see eventbus._codec)
        self.to_tree: Callable[[Any], Any] = to_msgpack_tree if codec == "msgpack" else to_wire

    def encode_envelope(self, ns: str, run: str, producer: str, records: list[bytes]) -> bytes:
        return self._encoder.encode(
            _OutEnvelope(SCHEMA_VERSION, ns, run, producer, [msgspec.Raw(r) for r in records])
        )


# MessagePack frames decode in one pass: msgspec calls ext_hook for each typed node
_msgpack_decoder = msgspec.msgpack.Decoder(Envelope, ext_hook=ext_hook)
_json_decoder = msgspec.json.Decoder(Envelope)


def decode_envelope(data: bytes, *, max_bytes: int) -> Envelope:
    """Decode one frame, its records' events rebuilt into Python values.

    Raises:
        DecodeError: oversized, malformed, truncated, forged, or a schema version this
            version cannot read.
    """
    if len(data) > max_bytes:
        raise DecodeError(f"frame of {len(data)} bytes exceeds max_frame_bytes={max_bytes}")
    try:
        if data[:1] == b"{":
            envelope = _json_decoder.decode(data)
            for record in envelope.records:
                if type(record) is Event:
                    record.event = from_wire(record.event, consume=True)
        else:
            envelope = _msgpack_decoder.decode(data)
    except DecodeError:
        raise
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        # (msgspec lets UnicodeDecodeError out for a msgpack str that is not UTF-8)
        raise DecodeError(f"malformed frame ({len(data)} bytes): {exc}") from exc
    except RecursionError as exc:  # nesting deeper than the stack allows
        raise DecodeError(f"malformed frame ({len(data)} bytes): nested too deeply") from exc
    except Exception as exc:  # whatever else forged bytes provoke is still a bad message
        raise DecodeError(f"malformed frame ({len(data)} bytes): {exc!r}") from exc
    if envelope.v != SCHEMA_VERSION:
        raise DecodeError(f"frame schema version {envelope.v} is not {SCHEMA_VERSION}")
    return envelope


def encode_envelope(codec: Codec, ns: str, run: str, producer: str, records: list[Record]) -> bytes:
    """Encode a frame from record Structs whose events are already value trees of that
    format (for tests and tools; publishers use RecordEncoder)."""
    enc = RecordEncoder(codec)
    return enc.encode_envelope(ns, run, producer, [enc.encode_record(r) for r in records])


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
