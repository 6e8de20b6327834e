"""LangGraph runs, remote equals local: subgraphs, ``Send``, ``Command``, interrupts,
policies, odd state values and every stream mode (``tests/graphs.py``), over every
transport, for a follower there before the run and one that comes after it ended."""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import Any

import anyio
import pytest
from _same import assert_same
from graphs import GRAPHS
from test_equivalence import collect

import eventbus

pytestmark = pytest.mark.anyio

WAIT = 60


async def snapshot(events: Any) -> Any:
    async for event in events:
        yield copy.deepcopy(event)


CASES = list(GRAPHS)


@pytest.mark.parametrize("case", CASES)
async def test_remote_graph_stream_equals_local(url: str, namespace: str, case: str) -> None:
    graph, value, kwargs = GRAPHS[case]()
    run_id = str(uuid.uuid4())
    config = {**kwargs.pop("config", {}), "run_id": run_id}
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as early_sub,
        eventbus.Subscriber(url, namespace) as late_sub,
    ):
        early = asyncio.create_task(collect(early_sub.astream_events(run_id)))
        # snapshots as the events are yielded: LangGraph mutates some objects after it
        # emitted them (add_messages assigns a ToolMessage its id), and what a consumer
        # sees is the event at that moment, which is also what the publisher encodes
        local = await collect(snapshot(pub.astream_events(graph, value, config=config, **kwargs)))
        late = await collect(late_sub.astream_events(run_id))
        early_events = await early
    assert len(local) > 3, "the graph produced almost no events"
    assert_same(early_events, local)
    assert_same(late, local)


async def test_failing_subgraph_node_fails_the_remote_run(url: str, namespace: str) -> None:
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class State(TypedDict):
        n: int

    def boom(state: State) -> dict[str, Any]:
        raise KeyError(f"no item {state['n']}")

    inner = StateGraph(State)
    inner.add_node("boom", boom)
    inner.add_edge(START, "boom")
    inner.add_edge("boom", END)
    outer = StateGraph(State)
    outer.add_node("inner", inner.compile())
    outer.add_edge(START, "inner")
    outer.add_edge("inner", END)
    graph = outer.compile()

    run_id = str(uuid.uuid4())
    local: list[Any] = []
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        with pytest.raises(KeyError):
            async for event in pub.astream_events(
                graph, {"n": 7}, config={"run_id": run_id}, stream_mode=["updates", "debug"]
            ):
                local.append(event)
        remote: list[Any] = []
        with anyio.fail_after(WAIT), pytest.raises(eventbus.RemoteRunError, match="no item 7"):
            async for event in sub.astream_events(run_id):
                remote.append(event)
    assert local, "no event before the failure"
    assert_same(remote, local)
