"""Remote ``astream_events`` equals the local one, value for value and type for type.

The oracle is LangChain itself: the worker's own ``astream_events`` (which the publisher
tees), and, for filters and ``astream``, separate local runs of the same deterministic
runnable compared with run ids normalised away.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import anyio
import pytest
from _same import assert_same
from runnables import CASES

import eventbus
from eventbus._codec import to_wire

pytestmark = pytest.mark.anyio

WAIT = 60


async def collect(agen: Any) -> list[Any]:
    with anyio.fail_after(WAIT):
        return [x async for x in agen]


@pytest.mark.parametrize("case", list(CASES))
async def test_remote_stream_equals_local(url: str, namespace: str, case: str) -> None:
    runnable, value, kwargs = CASES[case]()
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as early_sub,
        eventbus.Subscriber(url, namespace) as late_sub,
    ):
        # one follower is there before the run starts, one comes after it ended
        early = asyncio.create_task(collect(early_sub.astream_events(run_id)))
        local = await collect(
            pub.astream_events(runnable, value, config={"run_id": run_id}, **kwargs)
        )
        late = await collect(late_sub.astream_events(uuid.UUID(run_id)))
        early_events = await early
    assert local, "the runnable produced no events"
    assert local[0]["run_id"] == run_id
    assert_same(early_events, local)
    assert_same(late, local)


@pytest.mark.parametrize("case", ["prompt_model_parser", "parallel", "langgraph_graph"])
async def test_run_returns_what_ainvoke_returns(url: str, namespace: str, case: str) -> None:
    runnable, value, kwargs = CASES[case]()
    expected_runnable, _, _ = CASES[case]()
    config = {"run_id": uuid.uuid4()}
    async with eventbus.Publisher(url, namespace) as pub:
        output = await pub.run(runnable, value, config=config, **kwargs)
        assert pub.last_run_id == str(config["run_id"])
    expected = await expected_runnable.ainvoke(value)
    # equal, not always the same type: ainvoke of a StrOutputParser returns the message's
    # TextAccessor (a str subclass), the streamed run's end event its aggregated str
    assert output == expected


_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalised(events: list[Any]) -> Any:
    """The wire tree of the events with every UUID replaced by its first-seen index, so
    that two runs of the same deterministic runnable compare equal, types included (the
    wire tree names every type)."""
    seen: dict[str, str] = {}

    def sub(match: re.Match[str]) -> str:
        return seen.setdefault(match.group(0), f"<id{len(seen)}>")

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            return _UUID.sub(sub, x)
        if isinstance(x, dict):
            return {walk(k): walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(to_wire(events))


# per case, filters that each keep some of its events but not all (checked by the test): a
# filter that keeps nothing would compare two empty lists, one that keeps all proves nothing
FILTERS: dict[str, list[dict[str, Any]]] = {
    "tagged_nested": [
        {"include_names": ["inner"]},
        {"include_types": ["chain"], "exclude_names": ["outer"]},
        {"include_tags": ["inner-tag"]},
        {"include_tags": ["outer-tag"], "exclude_tags": ["inner-tag"]},
        {"exclude_names": ["RunnableSequence"], "exclude_tags": ["seq:step:1"]},
        {"include_names": ["times"], "include_types": ["parser"]},
    ],
    "custom_events": [
        {"include_types": ["progress"]},
        {"include_names": ["sync-progress"]},
        {"include_tags": ["seq:step:2"]},
        {"exclude_types": ["chain"]},
        {"exclude_names": ["RunnableSequence"], "exclude_tags": ["seq:step:1"]},
    ],
    "prompt_model_parser": [
        {"include_types": ["chat_model"]},
        {"include_names": ["StrOutputParser"]},
        {"include_tags": ["seq:step:2"]},
        {"exclude_types": ["chain"]},
        {"exclude_names": ["RunnableSequence"], "exclude_tags": ["seq:step:1"]},
        {"include_names": ["times"], "include_types": ["parser"]},
    ],
}


@pytest.mark.parametrize(
    ("case", "filters"),
    [
        pytest.param(case, f, id=f"{case}-{'-'.join(f'{k}={v[0]}' for k, v in f.items())}")
        for case, fs in FILTERS.items()
        for f in fs
    ],
)
async def test_filters_match_langchain(
    url: str, namespace: str, case: str, filters: dict[str, Any]
) -> None:
    oracle_all, value, kwargs = CASES[case]()
    oracle_filtered, _, _ = CASES[case]()
    runnable, _, _ = CASES[case]()
    unfiltered = await collect(oracle_all.astream_events(value, version="v2", **kwargs))
    expected = await collect(
        oracle_filtered.astream_events(value, version="v2", **kwargs, **filters)
    )
    assert 0 < len(expected) < len(unfiltered), "the filter must keep some events, not all"
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        await pub.run(runnable, value, config={"run_id": run_id}, **kwargs)
        remote_all = await collect(sub.astream_events(run_id))
        remote = await collect(sub.astream_events(run_id, **filters))
    assert normalised(remote_all) == normalised(unfiltered)
    assert normalised(remote) == normalised(expected)


async def test_publisher_tee_applies_filters_like_langchain(url: str, namespace: str) -> None:
    filters = {"include_types": ["chat_model", "parser"]}
    runnable, value, _ = CASES["prompt_model_parser"]()
    oracle, _, _ = CASES["prompt_model_parser"]()
    expected = await collect(oracle.astream_events(value, version="v2", **filters))
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        local = await collect(
            pub.astream_events(runnable, value, config={"run_id": run_id}, **filters)
        )
        everything = await collect(sub.astream_events(run_id))
    assert normalised(local) == normalised(expected)
    assert len(everything) > len(local)  # the full stream was published


async def test_astream_matches_local_graph_astream(url: str, namespace: str) -> None:
    runnable, value, kwargs = CASES["langgraph_graph"]()
    oracle, _, _ = CASES["langgraph_graph"]()
    expected = await collect(oracle.astream(value, **kwargs))
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        await pub.run(runnable, value, config={"run_id": run_id}, **kwargs)
        chunks = await collect(sub.astream(run_id))
    modes = [c[0] for c in chunks]
    assert {"updates", "custom", "messages"} <= set(modes)
    assert all(type(c) is tuple for c in chunks)
    assert normalised(chunks) == normalised(expected)


async def test_astream_of_a_chain_yields_its_output_chunks(url: str, namespace: str) -> None:
    runnable, value, _ = CASES["prompt_model_parser"]()
    oracle, _, _ = CASES["prompt_model_parser"]()
    expected = await collect(oracle.astream(value))
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        await pub.run(runnable, value, config={"run_id": run_id})
        chunks = await collect(sub.astream(run_id))
    assert chunks == expected
    assert "".join(chunks) == "the quick brown fox jumps"


async def test_json_codec_round_trips_too(url: str, namespace: str) -> None:
    runnable, value, _ = CASES["lambda_with_odd_values"]()
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace, codec="json") as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        local = await collect(pub.astream_events(runnable, value, config={"run_id": run_id}))
        remote = await collect(sub.astream_events(run_id))
    assert_same(remote, local)
