"""Signed frames: what the MAC costs per frame and per event, publisher and subscriber.

    python -m benchmarks signing [--quick]

Frames of 1, 13 and 40 token events (a busy run packs ~10-16 into one frame at the default
``linger``; 40 is a slow broker's batch), encoded by the publisher's ``RecordEncoder``
with and without a key, and decoded with and without verification. Each figure is the
fastest of several timings (the machine's load only ever adds time), so the differences
are the cost of HMAC-SHA256 over the frame and of carrying ``kid``/``mac``.
"""

from __future__ import annotations

import timeit
from typing import Any

from eventbus._signing import Keyring
from eventbus._wire import Event, RecordEncoder, decode_envelope

from .codec import token_event

RUN = "0192f0c6-8f0e-7a51-b1b2-6a0f7f0b9d11"
PRODUCER = "host:4242:9f1c2b3a"


def run(quick: bool = False) -> list[dict[str, Any]]:
    encoder = RecordEncoder("msgpack")
    keyring = Keyring({"bench": "k" * 32})
    record = encoder.encode_record(Event(1, 0.0, encoder.to_tree(token_event())))
    repeat = 3 if quick else 9
    rows = []
    for n in (1, 13, 40):
        records = [record] * n
        unsigned = encoder.encode_envelope("ns", RUN, PRODUCER, records)
        signed = encoder.encode_envelope("ns", RUN, PRODUCER, records, keyring)
        number = max(20, (2_000 if quick else 20_000) // n)

        def best(fn: Any, number: int = number) -> float:
            return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6

        enc_u = best(lambda r=records: encoder.encode_envelope("ns", RUN, PRODUCER, r))
        enc_s = best(lambda r=records: encoder.encode_envelope("ns", RUN, PRODUCER, r, keyring))
        dec_u = best(lambda f=unsigned: decode_envelope(f, max_bytes=1 << 30))
        dec_s = best(lambda f=signed: decode_envelope(f, max_bytes=1 << 30, keyring=keyring))
        rows.append(
            {
                "events_per_frame": n,
                "frame_bytes": len(signed),
                "encode_us": round(enc_u, 2),
                "encode_signed_us": round(enc_s, 2),
                "sign_us_per_event": round((enc_s - enc_u) / n, 2),
                "decode_us": round(dec_u, 2),
                "decode_verified_us": round(dec_s, 2),
                "verify_us_per_event": round((dec_s - dec_u) / n, 2),
            }
        )
    return rows


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| events/frame | frame bytes | encode µs | signed | + µs/event "
        "| decode µs | verified | + µs/event |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['events_per_frame']} | {r['frame_bytes']} | {r['encode_us']:.2f} "
            f"| {r['encode_signed_us']:.2f} | {r['sign_us_per_event']:.2f} "
            f"| {r['decode_us']:.2f} | {r['decode_verified_us']:.2f} "
            f"| {r['verify_us_per_event']:.2f} |"
        )
    return "\n".join(lines)
