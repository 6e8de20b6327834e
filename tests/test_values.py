"""Never lose a frame: every value either arrives, or becomes a placeholder in its place.

* property tests (hypothesis): whatever a walker encodes, decoding never raises, the
  frame's end record arrives, and values the docs call exact come back exact (run on the
  compiled and on the pure-Python codec: ``make test`` reruns this file with
  ``EVENTBUS_PURE_PYTHON=1``; ``CI=true`` derandomises them, see conftest.py);
* the cases of issue #10 as regression tests over every transport, against LangChain's
  own local ``astream_events``;
* a frame with one poisoned value still delivers its other events, and a run's end.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import uuid
from typing import Any

import anyio
import msgspec
import pydantic
import pytest
from _same import assert_same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.documents import Document
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda

import eventbus
from eventbus import Undecodable, Unrepresentable, register_type
from eventbus._codec import MAX_INT_DIGITS, take_undecodable
from eventbus._wire import End, Event, RecordEncoder, decode_envelope, encode_envelope
from eventbus.transports import OutFrame, open_transport

WAIT = 60
MAX = 1 << 30
_N = int(os.environ.get("EVENTBUS_CODEC_EXAMPLES", "0"))
PROPERTY = settings(
    max_examples=_N or 300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# ---------------------------------------------------------------------------------------
# the types the strategies draw from


class Color(enum.Enum):
    RED = "red"
    TWO = 2


class Plain(pydantic.BaseModel):
    """Registered, with a private attribute."""

    a: int = 0
    b: str = ""
    _secret: str = pydantic.PrivateAttr(default="none")


class FrozenModel(pydantic.BaseModel, frozen=True):
    """Registered, frozen: hashable, so a set member or a dict key."""

    x: int = 0
    y: str = ""


class LooseModel(pydantic.BaseModel):
    """Not registered: arrives as a dict."""

    n: int = 0


@dataclasses.dataclass(frozen=True)
class FrozenPoint:
    """Registered frozen dataclass."""

    x: int
    y: int


@dataclasses.dataclass(frozen=True)
class LoosePoint:
    """Not registered, frozen: hashable here, a dict (unhashable) on arrival."""

    x: int


@dataclasses.dataclass
class Box:
    """Registered, not frozen."""

    items: list[Any]


register_type(Plain, tag="test_values.Plain")
register_type(FrozenModel, tag="test_values.FrozenModel")
register_type(FrozenPoint, tag="test_values.FrozenPoint")
register_type(Box, tag="test_values.Box")


def plain(a: int, b: str, secret: str | None) -> Plain:
    made = Plain(a=a) if b == "" else Plain(a=a, b=b)  # (model_fields_set differs)
    if secret is not None:
        made._secret = secret
    return made


# every code point, lone surrogates included (hypothesis' text() leaves them out)
ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
TEXT = st.text(ANY_CHAR, max_size=8) | st.sampled_from(["\udcff", "a\ud800b", "\ud83d\ude00"])
LIMIT_INTS = [
    2**63 - 1,
    2**63,
    2**64 - 1,
    2**64,
    -(2**63),
    -(2**63) - 1,
    10 ** (MAX_INT_DIGITS - 1),  # the most digits an int node holds
    -(10**MAX_INT_DIGITS - 1),  # 4,300 digits and a sign (issue #10)
    10**MAX_INT_DIGITS - 1,
]
OVER_LIMIT_INTS = [10**MAX_INT_DIGITS, -(10**MAX_INT_DIGITS)]  # 4,301 digits: placeholders


def _pick(values: list[int]) -> st.SearchStrategy[int]:
    # (by index, in a named function: hypothesis would repr the list, and repr() refuses
    # ints of more than 4,300 digits)
    def pick(i: int) -> int:
        return values[i]

    return st.integers(0, len(values) - 1).map(pick)


INTS = st.integers() | _pick(LIMIT_INTS)
FLOATS = st.floats(allow_nan=True, allow_infinity=True) | st.just(-0.0)
FINITE = st.floats(allow_nan=False, allow_infinity=False)


def _langgraph() -> st.SearchStrategy[Any]:
    from langgraph import types as lg

    policies = [lg.RetryPolicy(), lg.RetryPolicy(retry_on=(ValueError, KeyError))]
    policies += [lg.CachePolicy(ttl=5), lg.Overwrite([1])]
    timeout = getattr(lg, "TimeoutPolicy", None)
    sends = st.builds(lambda n, a: lg.Send(n, a), TEXT, st.integers())
    if timeout is not None:  # langgraph >= 1.2
        policies.append(timeout(run_timeout=2.0, idle_timeout=1.5))
        sends |= st.builds(
            lambda n, t: lg.Send(n, {"x": n}, timeout=t),
            TEXT,
            st.floats(min_value=0.001, max_value=1e6),
        )
    interrupts = st.builds(lambda v: lg.Interrupt(value=v, id="i1"), TEXT)
    commands = st.builds(lambda g: lg.Command(goto=g, update={"k": 1}), TEXT)
    return st.sampled_from(policies) | sends | interrupts | commands


def _hashables(leaf: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return (
        leaf
        | st.builds(FrozenModel, x=st.integers(), y=TEXT)
        | st.builds(FrozenPoint, x=st.integers(), y=st.integers())
        | st.sampled_from(list(Color))
        | st.tuples(leaf, leaf)
        | st.frozensets(leaf, max_size=3)
    )


EXACT_LEAF = st.none() | st.booleans() | INTS | TEXT | st.binary(max_size=8) | st.uuids()


def exact_values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    """Values the docs promise come back equal and of the same type."""
    leaf = EXACT_LEAF | floats
    keys = _hashables(EXACT_LEAF).filter(lambda k: type(k) is not Color)
    return st.recursive(
        leaf
        | st.builds(plain, st.integers(), TEXT, st.none() | TEXT)
        | st.builds(FrozenModel, x=st.integers(), y=TEXT)
        | st.builds(FrozenPoint, x=st.integers(), y=st.integers())
        | _langgraph(),
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.tuples(inner, inner)
            | st.dictionaries(TEXT, inner, max_size=4)
            | st.dictionaries(keys, inner, max_size=3)
            | st.sets(keys, max_size=3)
            | st.builds(Box, st.lists(inner, max_size=3))
        ),
        max_leaves=12,
    )


def any_values(floats: st.SearchStrategy[float]) -> st.SearchStrategy[Any]:
    """Anything, lossy kinds included: unregistered models and dataclasses (also as set
    members and dict keys, where their dicts cannot go), enums, over-limit ints."""
    odd = (
        st.builds(LooseModel, n=st.integers())
        | st.builds(LoosePoint, x=st.integers())
        | st.sampled_from(list(Color))
        | _pick(OVER_LIMIT_INTS)
        | st.builds(lambda: object())
    )
    keys = _hashables(EXACT_LEAF | st.builds(LoosePoint, x=st.integers()))
    return st.recursive(
        exact_values(floats) | odd,
        lambda inner: (
            st.lists(inner, max_size=4)
            | st.dictionaries(keys, inner, max_size=3)
            | st.sets(keys, max_size=3)
            | st.frozensets(keys, max_size=3)
        ),
        max_leaves=12,
    )


def through_frame(value: Any, codec: Any) -> Any:
    """``value`` as an event through a whole frame, with an end record after it; the
    frame must decode and the end arrive."""
    enc = RecordEncoder(codec)
    event = enc.encode_event(1, 0.0, enc.to_tree({"data": value}))
    frame = enc.encode_envelope("ns", "run", "p", [event, enc.encode_record(End(2, 0.0))])
    envelope = decode_envelope(frame, max_bytes=MAX)
    assert [type(r) for r in envelope.records] == [Event, End]
    assert not getattr(envelope, "lost", [])
    return envelope.records[0].event["data"]


# ---------------------------------------------------------------------------------------
# properties


@PROPERTY
@given(any_values(FLOATS))
def test_decoding_what_was_encoded_never_raises_msgpack(value: Any) -> None:
    through_frame(value, "msgpack")
    take_undecodable()


@PROPERTY
@given(any_values(FINITE))
def test_decoding_what_was_encoded_never_raises_json(value: Any) -> None:
    through_frame(value, "json")
    take_undecodable()


@PROPERTY
@given(exact_values(FLOATS))
def test_exact_values_come_back_exact_msgpack(value: Any) -> None:
    assert_same(through_frame(value, "msgpack"), value)
    assert take_undecodable() == []


@PROPERTY
@given(exact_values(FINITE))  # (JSON carries no NaN nor infinity)
def test_exact_values_come_back_exact_json(value: Any) -> None:
    assert_same(through_frame(value, "json"), value)
    assert take_undecodable() == []


@pytest.mark.parametrize("codec", ["msgpack", "json"])
@pytest.mark.parametrize("value", LIMIT_INTS, ids=lambda v: f"{v.bit_length()}bits")
def test_ints_at_every_limit_are_exact(value: int, codec: str) -> None:
    for v in (value, value + 1, value - 1):
        if abs(v) < 10**MAX_INT_DIGITS:
            assert_same(through_frame(v, codec), v)


@pytest.mark.parametrize("codec", ["msgpack", "json"])
def test_ints_over_the_limit_are_placeholders(codec: str) -> None:
    for v in OVER_LIMIT_INTS:
        got = through_frame(v, codec)
        assert type(got) is Unrepresentable and got.type == "builtins.int"
        assert "4301 digits" in got.repr


def test_private_attributes_and_fields_set_are_carried() -> None:
    sent = plain(1, "", "s3cret")
    for codec in ("msgpack", "json"):
        got = through_frame(sent, codec)
        assert_same(got, sent)
        assert got._secret == "s3cret"
        assert got.model_fields_set == sent.model_fields_set == {"a"}
        assert got == sent


def test_unregistered_dataclass_as_set_member_or_key_is_a_placeholder() -> None:
    value = {"set": {LoosePoint(1), 2}, "keys": {LoosePoint(1): "a", "b": 2}}
    for codec in ("msgpack", "json"):
        got = through_frame(value, codec)
        (member,) = [m for m in got["set"] if m != 2]
        assert type(member) is Undecodable and "set member" in member.reason
        assert list(got["keys"].values()) == ["a", 2]
        assert type(next(iter(got["keys"]))) is Undecodable
        assert len(take_undecodable()) == 2


def test_invalid_langchain_payload_is_a_placeholder_unless_trusted() -> None:
    forged = AIMessage.model_construct(content=None)  # what validation refuses
    enc = RecordEncoder("msgpack")
    data = enc.encode_event(1, 0.0, enc.to_tree({"data": [forged, 1]}))
    frame = enc.encode_envelope("ns", "run", "p", [data])
    got = decode_envelope(frame, max_bytes=MAX).records[0].event["data"]
    assert type(got[0]) is Undecodable and "ValidationError" in got[0].reason
    assert got[0].type == "langchain_core.messages.ai.AIMessage"
    assert got[1] == 1
    assert len(take_undecodable()) == 1
    trusted = decode_envelope(frame, max_bytes=MAX, validate=False).records[0].event["data"]
    assert type(trusted[0]) is AIMessage


class Positive(pydantic.BaseModel):
    n: int

    @pydantic.field_validator("n")
    @classmethod
    def _positive(cls, n: int) -> int:
        if n <= 0:
            raise ValueError("must be positive")
        return n


register_type(Positive, tag="test_values.Positive")


def test_registered_model_that_its_validation_refuses_is_a_placeholder() -> None:
    got = through_frame([Positive.model_construct(n=-1), Positive(n=2)], "msgpack")
    assert type(got[0]) is Undecodable and "must be positive" in got[0].reason
    assert_same(got[1], Positive(n=2))
    assert len(take_undecodable()) == 1


def test_encoding_failures_degrade_the_value_only() -> None:
    class Exploding:
        @property
        def __dict__(self) -> Any:  # type: ignore[override]
            raise RuntimeError("boom")

        def __repr__(self) -> str:
            raise RuntimeError("no repr either")

    for codec in ("msgpack", "json"):
        got = through_frame({"bad": Exploding(), "good": (1, "\udcff")}, codec)
        assert type(got["bad"]) is Unrepresentable
        assert_same(got["good"], (1, "\udcff"))


def test_nan_inf_and_negative_zero_are_exact_in_msgpack() -> None:
    got = through_frame([math.nan, math.inf, -math.inf, -0.0], "msgpack")
    assert math.isnan(got[0]) and got[1:3] == [math.inf, -math.inf]
    assert math.copysign(1.0, got[3]) == -1.0


# ---------------------------------------------------------------------------------------
# regression: each case of issue #10 over every transport, against local astream_events


def _surrogate_document() -> Any:
    # what os.listdir gives for a non-UTF-8 file name on a POSIX file system
    name = os.fsdecode(b"caf\xe9.txt")
    return [Document(page_content="x", metadata={"source": name, name: 1})]


def _send_with_timeout() -> Any:
    from langgraph.types import Send

    try:
        return {"goto": [Send("work", {"n": 1}, timeout=2.5)]}
    except TypeError:  # langgraph < 1.2: no per-Send timeout
        return {"goto": [Send("work", {"n": 1})]}


CASES: dict[str, Any] = {
    "send_with_timeout": _send_with_timeout,
    "dataclass_set_member_and_key": lambda: {
        "set": {LoosePoint(1), 2},
        "key": {LoosePoint(2): "v"},
    },
    "negative_int_of_4300_digits": lambda: {"n": -(10**MAX_INT_DIGITS - 1)},
    "lone_surrogates_in_document": _surrogate_document,
    "private_attributes": lambda: {"m": plain(3, "", "p")},
}
# what arrives instead of the local value (a documented placeholder), where not exact
PLACEHOLDERS = {"dataclass_set_member_and_key"}


async def _collect(agen: Any) -> list[Any]:
    with anyio.fail_after(WAIT):
        return [x async for x in agen]


@pytest.mark.anyio
@pytest.mark.parametrize("case", list(CASES))
async def test_issue_10_cases_arrive(url: str, namespace: str, case: str) -> None:
    make = CASES[case]
    runnable = RunnableLambda(lambda x: make())
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace, idle_timeout=WAIT) as sub,
    ):
        local = await _collect(pub.astream_events(runnable, 1, config={"run_id": run_id}))
        remote = await _collect(sub.astream_events(run_id))
        output = await pub.run(RunnableLambda(lambda x: make()), 1)  # run() does not raise
    assert len(remote) == len(local) == 3
    if case not in PLACEHOLDERS:
        assert_same(remote, local)
        assert sub.stats.undecodable == 0
        assert_same(output, make())
        return
    # the unregistered dataclass: a dict on arrival, which no set or dict key can hold
    assert_same(remote[:1], local[:1])
    chunk = remote[1]["data"]["chunk"]
    assert {type(m) for m in chunk["set"]} == {int, Undecodable}
    assert type(next(iter(chunk["key"]))) is Undecodable
    assert sub.stats.undecodable == 4  # stream and end events, two each


def test_sync_publisher_and_callback_handler_survive_surrogates() -> None:
    url = f"memory://{uuid.uuid4().hex}"
    with eventbus.SyncPublisher(url, "ns") as pub:
        assert_same(
            pub.run(RunnableLambda(lambda x: _surrogate_document()), 1), _surrogate_document()
        )
        handler = pub.callback_handler()
        out = RunnableLambda(lambda x: _surrogate_document()).invoke(1, {"callbacks": [handler]})
        pub.flush()
        assert_same(out, _surrogate_document())
        assert pub.stats.events == 5  # run(): 3 events; invoke with a handler: 2


# ---------------------------------------------------------------------------------------
# a poisoned frame


def _event(run_id: str, data: Any) -> dict[str, Any]:
    return {"event": "on_custom_event", "run_id": run_id, "name": "n", "tags": [],
            "metadata": {}, "data": data, "parent_ids": []}  # fmt: skip


@pytest.mark.anyio
async def test_a_poisoned_value_costs_that_value_not_its_frame(url: str, namespace: str) -> None:
    run_id = str(uuid.uuid4())
    poison = msgspec.msgpack.Ext(1, msgspec.msgpack.encode(["uuid", "not a uuid"]))
    records = [
        Event(1, 0.0, _event(run_id, [1])),
        Event(2, 0.0, _event(run_id, [poison, 2])),
        Event(3, 0.0, _event(run_id, [3])),
        End(4, 0.0),
    ]
    frame = encode_envelope("msgpack", namespace, run_id, "p", records)
    t = open_transport(url, namespace)
    await t.connect()
    await t.publish([OutFrame(run_id, frame)])
    await t.aclose()
    async with eventbus.Subscriber(url, namespace, idle_timeout=WAIT) as sub:
        items = await _collect(sub.follow(run_id))  # ends normally: the end arrived
        got = [i.event["data"] for i in items]
        assert got[0] == [1] and got[2] == [3]
        assert type(got[1][0]) is Undecodable and got[1][1] == 2
        assert sub.stats.undecodable == 1 and sub.stats.malformed == 0
        group = [m async for m in _take(sub.consume("g", "c", start="first"), 4)]
        assert [m.kind for m in group] == ["event", "event", "event", "end"]


async def _take(agen: Any, n: int) -> Any:
    with anyio.fail_after(WAIT):
        async for item in agen:
            yield item
            await item.ack()
            n -= 1
            if n == 0:
                break
    await agen.aclose()


@pytest.mark.anyio
async def test_a_bad_record_is_named_not_blamed_on_retention(url: str, namespace: str) -> None:
    run_id = str(uuid.uuid4())
    enc = RecordEncoder("msgpack")
    good = enc.encode_event(1, 0.0, _event(run_id, [1]))
    bad = msgspec.msgpack.encode({"kind": "event", "seq": "two"})  # not a record
    end = enc.encode_record(End(3, 0.0))
    frame = enc.encode_envelope(namespace, run_id, "p", [good, bad, end])
    t = open_transport(url, namespace)
    await t.connect()
    await t.publish([OutFrame(run_id, frame)])
    await t.aclose()
    async with eventbus.Subscriber(url, namespace, idle_timeout=WAIT) as sub:
        seen: list[Any] = []
        with pytest.raises(eventbus.SequenceGapError) as err:
            with anyio.fail_after(WAIT):
                async for item in sub.follow(run_id):
                    seen.append(item.event["data"])
        assert seen == [[1]]
        assert "could not be decoded" in str(err.value)
        assert f"of run {run_id}" in str(err.value)
        assert "retention" not in str(err.value)
        assert sub.stats.lost_records == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    "shapeless",
    [
        "not a dict",
        {"event": "on_chain_start", "run_id": 1, "name": "n", "data": {}},
        {"event": "on_chain_start", "run_id": "r", "name": "n", "data": [1]},
        {"event": "drop table", "run_id": "r", "name": "n", "data": {}},
    ],
    ids=["str", "int-run-id", "list-data", "not-a-callback"],
)
async def test_an_event_that_is_no_stream_event_is_lost_not_a_crash(
    url: str, namespace: str, shapeless: Any
) -> None:
    # a frame forged or corrupted at the broker can hold any value where an event goes;
    # astream_events must not hand it to the filter (it crashed on data that was no dict)
    run_id = str(uuid.uuid4())
    enc = RecordEncoder("msgpack")
    records = [
        enc.encode_event(1, 0.0, shapeless),
        enc.encode_event(2, 0.0, _event(run_id, {"ok": 2})),
        enc.encode_record(End(3, 0.0)),
    ]
    t = open_transport(url, namespace)
    await t.connect()
    await t.publish([OutFrame(run_id, enc.encode_envelope(namespace, run_id, "p", records))])
    await t.aclose()
    async with eventbus.Subscriber(url, namespace, idle_timeout=WAIT) as sub:
        with pytest.raises(eventbus.SequenceGapError, match="could not be decoded") as err:
            with anyio.fail_after(WAIT):
                async for _ in sub.astream_events(run_id):
                    pass
        assert "retention" not in str(err.value)
        assert sub.stats.lost_records == 1
        assert sub.stats.events == 0
