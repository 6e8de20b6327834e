"""Codec benchmark: encode and decode microseconds per event, eventbus vs the usual ways.

    python -m benchmarks codec [--quick]

Three events: a token event (``on_chat_model_stream`` with an ``AIMessageChunk`` and
LangGraph metadata), a chain end carrying a ``ChatPromptValue``, and a custom event with
nested data. Baselines run in the same process, interleaved: ``json`` (lossy: types
become strings or fail), ``pickle`` (exact but unsafe to decode), and LangChain's own
``dumpd``/``load`` (exact for LangChain objects, what a careful user writes today).

What a follower pays is measured too: a **packed frame** of 250 token events (what a
burst puts in one stream entry), encoded record by record and decoded whole, with the
decoded events **kept alive** (the last 8 frames, as a consumer holding a batch does), so
that CPython's cyclic garbage collector runs as it does in ``follow``; once with the
collector on (as in production) and once off (what it costs). The targets (5 µs to
encode, 10 µs to decode a token event) are judged on the worst repetition, the decode
target on the packed frame with the collector on.
"""

from __future__ import annotations

import gc
import json
import pickle
import statistics
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

from langchain_core.load import dumpd, load
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.prompt_values import ChatPromptValue

from eventbus._signing import Keyring
from eventbus._wire import Event, RecordEncoder, decode_envelope


def token_event() -> dict[str, Any]:
    root = str(uuid.uuid4())
    return {
        "event": "on_chat_model_stream",
        "run_id": str(uuid.uuid4()),
        "name": "ChatOpenAI",
        "tags": ["seq:step:2"],
        "metadata": {
            "langgraph_step": 1,
            "langgraph_node": "agent",
            "langgraph_triggers": ("branch:to:agent",),
            "langgraph_path": ("__pregel_pull", "agent"),
            "langgraph_checkpoint_ns": f"agent:{uuid.uuid4()}",
            "checkpoint_ns": f"agent:{uuid.uuid4()}",
            "ls_provider": "openai",
            "ls_model_name": "gpt-4o-mini",
            "ls_model_type": "chat",
            "ls_temperature": 0.0,
        },
        "data": {"chunk": AIMessageChunk(content=" bees", id=f"lc_run--{uuid.uuid4()}")},
        "parent_ids": [root, str(uuid.uuid4())],
    }


def prompt_end_event() -> dict[str, Any]:
    value = ChatPromptValue(
        messages=[
            SystemMessage(content="Answer briefly."),
            HumanMessage(content="How do bees talk?"),
        ]
    )
    return {
        "event": "on_prompt_end",
        "run_id": str(uuid.uuid4()),
        "name": "ChatPromptTemplate",
        "tags": ["seq:step:1"],
        "metadata": {},
        "data": {"output": value, "input": {"q": "How do bees talk?"}},
        "parent_ids": [str(uuid.uuid4())],
    }


def custom_event() -> dict[str, Any]:
    return {
        "event": "on_custom_event",
        "run_id": str(uuid.uuid4()),
        "name": "progress",
        "tags": [],
        "metadata": {"user": "u-1"},
        "data": {
            "type": "progress",
            "current": 3,
            "total": 10,
            "status": "indexing",
            "details": {"files": ["a.py", "b.py"], "sizes": [120, 4096], "ok": True, "ratio": 0.3},
        },
        "parent_ids": [str(uuid.uuid4())],
    }


EVENTS = {"token": token_event, "prompt_end": prompt_end_event, "custom": custom_event}


def _time(fn: Callable[[], Any], n: int) -> float:
    """Microseconds per call over one run of ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


TARGETS_US = {"encode": 5.0, "decode": 10.0}
PACKED = 250


def _packed(encoder: RecordEncoder, n_frames: int, repeats: int) -> list[dict[str, Any]]:
    events = [token_event() for _ in range(PACKED)]

    def encode() -> bytes:
        records = [
            encoder.encode_record(Event(i + 1, 0.0, encoder.to_tree(e)))
            for i, e in enumerate(events)
        ]
        return encoder.encode_envelope("ns", "run", "p", records)

    frame = encode()
    kept: list[Any] = []

    def decode() -> None:
        kept.append(decode_envelope(frame, max_bytes=1 << 30))
        if len(kept) > 8:
            del kept[0]

    assert [r.event for r in decode_envelope(frame, max_bytes=1 << 30).records] == events
    samples: dict[str, list[float]] = {"encode": [], "decode gc on": [], "decode gc off": []}
    for _ in range(repeats):
        samples["encode"].append(_time(encode, n_frames) / PACKED)
        samples["decode gc on"].append(_time(decode, n_frames) / PACKED)
        kept.clear()
        gc.disable()
        try:
            samples["decode gc off"].append(_time(decode, n_frames) / PACKED)
        finally:
            gc.enable()
            kept.clear()
    rows = []
    for label in ("decode gc on", "decode gc off"):
        encs, decs = samples["encode"], samples[label]
        rows.append(
            {
                "event": f"token, packed x{PACKED}, kept alive",
                "codec": f"eventbus msgpack, {label.replace('decode ', 'collector ')}",
                "encode_us": round(statistics.median(encs), 2),
                "encode_spread_us": round(max(encs) - min(encs), 2),
                "encode_worst_us": round(max(encs), 2),
                "decode_us": round(statistics.median(decs), 2),
                "decode_spread_us": round(max(decs) - min(decs), 2),
                "decode_worst_us": round(max(decs), 2),
                "bytes": round(len(frame) / PACKED),
            }
        )
    return rows


def _judge(row: dict[str, Any], which: str) -> None:
    limit = TARGETS_US[which]
    worst = row[f"{which}_worst_us"]
    row.setdefault("targets", []).append(
        {"what": which, "limit_us": limit, "worst_us": worst, "met": worst <= limit}
    )


def run(quick: bool = False) -> list[dict[str, Any]]:
    n, repeats = (2_000, 3) if quick else (20_000, 7)
    encoder = RecordEncoder("msgpack")
    keyring = Keyring({"bench": "k" * 32})
    results = []
    warnings.simplefilter("ignore")  # langchain's load() warns about its default allowlist
    for name, make in EVENTS.items():
        event = make()

        def eb_encode(event: dict[str, Any] = event) -> bytes:
            return encoder.encode_record(Event(1, 0.0, encoder.to_tree(event)))

        frame = encoder.encode_envelope("ns", "run", "p", [eb_encode()])

        def eb_decode(frame: bytes = frame) -> Any:
            return decode_envelope(frame, max_bytes=1 << 30).records[0].event

        assert eb_decode() == event, "eventbus round trip is not exact"
        dumped = json.dumps(dumpd(event))
        as_json = json.dumps(event, default=str)
        pickled = pickle.dumps(event)
        signed_frame = encoder.encode_envelope("ns", "run", "p", [eb_encode()], keyring)

        def eb_encode_signed(event: dict[str, Any] = event) -> bytes:
            # a whole one-event frame, signed: the worst case (a frame's MAC is shared by
            # the ~10-40 events a busy run packs into one frame)
            record = encoder.encode_record(Event(1, 0.0, encoder.to_tree(event)))
            return encoder.encode_envelope("ns", "run", "p", [record], keyring)

        def eb_decode_signed(frame: bytes = signed_frame) -> Any:
            return decode_envelope(frame, max_bytes=1 << 30, keyring=keyring).records[0].event

        assert eb_decode_signed() == event
        cases: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "eventbus msgpack": (eb_encode, eb_decode),
            "eventbus msgpack, one-event frame signed (HMAC-SHA256)": (
                eb_encode_signed,
                eb_decode_signed,
            ),
            "json.dumps(default=str) (lossy)": (
                lambda e=event: json.dumps(e, default=str),
                lambda s=as_json: json.loads(s),
            ),
            "pickle (unsafe to decode)": (
                lambda e=event: pickle.dumps(e),
                lambda p=pickled: pickle.loads(p),
            ),
            "langchain dumpd+json / json+load": (
                lambda e=event: json.dumps(dumpd(e)),
                lambda s=dumped: load(json.loads(s), allowed_objects="all"),
            ),
        }
        samples: dict[str, tuple[list[float], list[float]]] = {k: ([], []) for k in cases}
        # calls per timing: about `budget` seconds each (a 1 ms encoder gets fewer calls)
        budget = 0.02 if quick else 0.1
        calls = {
            label: tuple(
                max(50, min(n, int(budget / max(_time(fn, 20) * 1e-6, 1e-7)))) for fn in pair
            )
            for label, pair in cases.items()
        }
        for rep in range(repeats):  # interleaved: rep 1 of every codec, then rep 2, ...
            labels = list(cases)
            labels = labels[rep % len(labels) :] + labels[: rep % len(labels)]
            for label in labels:
                enc, dec = cases[label]
                samples[label][0].append(_time(enc, calls[label][0]))
                samples[label][1].append(_time(dec, calls[label][1]))
        for label, (enc, _dec) in cases.items():
            encs, decs = samples[label]
            results.append(
                {
                    "event": name,
                    "codec": label,
                    "encode_us": round(statistics.median(encs), 2),
                    "encode_spread_us": round(max(encs) - min(encs), 2),
                    "decode_us": round(statistics.median(decs), 2),
                    "decode_spread_us": round(max(decs) - min(decs), 2),
                    "encode_worst_us": round(max(encs), 2),
                    "decode_worst_us": round(max(decs), 2),
                    "bytes": len(enc()),
                }
            )
            if name == "token" and label == "eventbus msgpack":
                _judge(results[-1], "encode")
    packed = _packed(encoder, 8 if quick else 40, repeats)
    _judge(packed[0], "decode")
    return results + packed


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| event | codec | encode µs/event (± spread) | decode µs/event (± spread) "
        "| bytes/event | target (judged on the worst repetition) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        targets = "; ".join(
            f"{t['what']} ≤{t['limit_us']:g} µs: {'**met**' if t['met'] else '**missed**'} "
            f"(worst {t['worst_us']:.2f} µs)"
            for t in r.get("targets", [])
        )
        lines.append(
            f"| {r['event']} | {r['codec']} | {r['encode_us']:.2f} ±{r['encode_spread_us']:.2f} "
            f"| {r['decode_us']:.2f} ±{r['decode_spread_us']:.2f} | {r['bytes']} | {targets} |"
        )
    return "\n".join(lines)
