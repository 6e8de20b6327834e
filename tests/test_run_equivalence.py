"""``Publisher.run`` drives the runnable itself, without ``astream_events``' queue and
generator (``eventbus._direct``): what it publishes must still be what a local
``astream_events(version="v2")`` of the same runnable yields, event for event, type for
type. The oracle is a separate local run of the same deterministic runnable (or graph),
snapshotted as its events are yielded, compared with run ids (and the ids derived from
them) normalised away."""

from __future__ import annotations

import copy
import json
import re
import uuid
from typing import Any

import pytest
from graphs import GRAPHS
from runnables import CASES
from test_equivalence import FILTERS, collect, normalised

import eventbus

pytestmark = pytest.mark.anyio

# LangGraph's interrupt ids and checkpoint/task digests are hex digests of per-run ids
_DIGEST = re.compile(r"\b[0-9a-f]{32}\b")
# checkpoints' and debug events' timestamps
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00")
# runnables whose own event order varies from run to run (their steps run in threads)
ORDER_VARIES = {"parallel", "send_fan_out"}


def _stable(events: list[Any]) -> Any:
    tree = normalised(events)
    seen: dict[str, str] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, str):
            x = _TIMESTAMP.sub("<ts>", x)
            return _DIGEST.sub(lambda m: seen.setdefault(m.group(0), f"<d{len(seen)}>"), x)
        if isinstance(x, dict):
            return {walk(k): walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(tree)


def _masked(events: list[Any]) -> list[str]:
    """Each event with every id masked, sorted: for runnables whose own event order varies
    from run to run (threads of a RunnableParallel)."""
    tree = normalised(events)
    masked = [re.sub(r"<id\d+>", "<id>", json.dumps(e, sort_keys=True)) for e in tree]
    return sorted(_TIMESTAMP.sub("<ts>", _DIGEST.sub("<d>", m)) for m in masked)


def assert_equivalent(case: str, remote: list[Any], expected: list[Any], again: list[Any]) -> None:
    """``remote`` is what LangChain yields; ``again``, a second local run, tells whether
    LangChain's own order is stable (then it must be the same) or not."""
    assert remote, "nothing was published"
    if case not in ORDER_VARIES and _stable(again) == _stable(expected):
        assert _stable(remote) == _stable(expected)
    else:
        assert _masked(remote) == _masked(expected)


async def _snapshots(events: Any) -> Any:
    async for event in events:
        yield copy.deepcopy(event)


async def _local(runnable: Any, value: Any, config: dict[str, Any], **kwargs: Any) -> Any:
    stream = runnable.astream_events(value, config, version="v2", **kwargs)
    return await collect(_snapshots(stream))


async def _published(
    url: str, namespace: str, runnable: Any, value: Any, config: dict[str, Any], **kwargs: Any
) -> tuple[Any, list[Any]]:
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        output = await pub.run(runnable, value, config={**config, "run_id": run_id}, **kwargs)
        return output, await collect(sub.astream_events(run_id))


@pytest.mark.parametrize("case", list(CASES))
async def test_run_publishes_what_astream_events_yields(
    url: str, namespace: str, case: str
) -> None:
    oracle, value, kwargs = CASES[case]()
    expected = await _local(oracle, value, {}, **kwargs)
    again = await _local(CASES[case]()[0], value, {}, **kwargs)
    _, remote = await _published(url, namespace, CASES[case]()[0], value, {}, **kwargs)
    assert_equivalent(case, remote, expected, again)


@pytest.mark.parametrize("case", list(GRAPHS))
async def test_run_publishes_what_a_graph_yields(url: str, namespace: str, case: str) -> None:
    oracle, value, kwargs = GRAPHS[case]()
    config = kwargs.pop("config", {})
    expected = await _local(oracle, value, copy.deepcopy(config), **kwargs)
    again = await _local(GRAPHS[case]()[0], value, copy.deepcopy(config), **kwargs)
    graph = GRAPHS[case]()[0]
    _, remote = await _published(url, namespace, graph, value, copy.deepcopy(config), **kwargs)
    assert len(expected) > 3
    assert_equivalent(case, remote, expected, again)


@pytest.mark.parametrize(
    ("case", "filters"),
    [
        pytest.param(case, f, id=f"{case}-{'-'.join(f'{k}={v[0]}' for k, v in f.items())}")
        for case, fs in FILTERS.items()
        for f in fs
    ],
)
async def test_run_with_filters_publishes_what_astream_events_yields(
    url: str, namespace: str, case: str, filters: dict[str, Any]
) -> None:
    oracle, value, kwargs = CASES[case]()
    expected = await _local(oracle, value, {}, **kwargs, **filters)
    again = await _local(CASES[case]()[0], value, {}, **kwargs, **filters)
    runnable = CASES[case]()[0]
    _, remote = await _published(url, namespace, runnable, value, {}, **kwargs, **filters)
    assert_equivalent(case, remote, expected, again)


def _bound() -> Any:
    chain, value, kwargs = CASES["prompt_model_parser"]()
    configured = chain.with_config(run_name="named", tags=["bound-tag"], metadata={"m": 1})
    return configured.bind(), value, kwargs


async def test_run_of_a_binding_publishes_what_astream_events_yields(
    url: str, namespace: str
) -> None:
    # a binding forwards astream_events to its bound runnable with its config merged in
    expected = await _local(_bound()[0], "x", {})
    again = await _local(_bound()[0], "x", {})
    _, remote = await _published(url, namespace, _bound()[0], "x", {})
    assert remote[0]["name"] == "named"
    assert_equivalent("bound", remote, expected, again)


async def test_run_skips_langchains_event_queue(
    url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import langchain_core.runnables.base as base

    def no_queue(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Publisher.run went through astream_events' queue")

    oracle, value, kwargs = CASES["langgraph_graph"]()
    expected = await _local(oracle, value, {}, **kwargs)
    monkeypatch.setattr(base, "_astream_events_implementation_v2", no_queue)
    graph = CASES["langgraph_graph"]()[0]
    output, remote = await _published(url, namespace, graph, value, {}, **kwargs)
    assert _stable(remote) == _stable(expected)
    assert output == expected[-1]["data"]["output"]


async def test_run_of_a_runnable_without_v2_events_raises_as_langchain_does(
    url: str, namespace: str
) -> None:
    from langchain_core.runnables import RunnableLambda

    each = RunnableLambda(lambda x: x + 1).map()  # RunnableEach: no astream_events
    with pytest.raises(NotImplementedError, match="RunnableEach"):
        await _published(url, namespace, each, [1, 2], {})


async def test_a_runnable_raising_cancelled_itself_ends_as_in_langchain(
    url: str, namespace: str
) -> None:
    import asyncio

    from langchain_core.runnables import RunnableLambda

    async def gives_up(x: str) -> str:
        raise asyncio.CancelledError  # not a cancel of the run's task

    def make() -> Any:
        return RunnableLambda(gives_up, name="gives-up")

    # v2 runs the runnable in a task of its own, whose CancelledError it swallows: the
    # iterator just ends
    expected = await _local(make(), "x", {})
    output, remote = await _published(url, namespace, make(), "x", {})
    assert output is None
    assert _stable(remote) == _stable(expected)
