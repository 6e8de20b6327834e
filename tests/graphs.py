"""LangGraph graphs for the equivalence tests: what LangGraph apps run, in every stream mode.

Each factory returns ``(graph, input, astream_events kwargs)``; graphs are deterministic
(fake chat models with native async streaming) so that two runs can be compared.
Subgraphs, ``Send`` fan-out (with a per-``Send`` timeout where LangGraph has it),
``Command`` routing, ``interrupt`` with a checkpointer, retry and cache policies, odd state
values, a failing node, and every ``stream_mode`` LangGraph has.
"""

# no `from __future__ import annotations`: LangGraph reads the nodes' and states' type hints
# at graph build time, and these classes are local to their factories
import dataclasses
import datetime as dt
import decimal
import enum
import operator
import uuid
from collections.abc import Callable
from typing import Annotated, Any, TypedDict

import pydantic
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from runnables import fake_chat

from eventbus import register_type

Case = tuple[Any, Any, dict[str, Any]]

ALL_MODES = ["values", "updates", "messages", "custom", "debug", "tasks", "checkpoints"]
FIXED = uuid.UUID("0192f0c6-8f0e-7a51-b1b2-000000000042")


class Colour(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: float


class Profile(pydantic.BaseModel):
    name: str
    joined: dt.datetime
    scores: tuple[int, ...] = ()


# user types arrive as themselves only when registered on both sides (unregistered: as
# dicts and values, documented); the tests' publisher and subscriber share this process
register_type(Point)
register_type(Profile)
register_type(Colour, encode=lambda c: c.value, decode=Colour)


def _writer(config: RunnableConfig) -> Any:
    from langgraph.config import get_stream_writer

    return get_stream_writer()


def subgraph_in_every_mode() -> Case:
    from langgraph.graph import END, START, StateGraph

    class Inner(TypedDict):
        topic: str
        notes: Annotated[list[str], operator.add]

    class Outer(TypedDict):
        topic: str
        notes: Annotated[list[str], operator.add]
        answer: str

    model = fake_chat("inner tokens stream", name="inner-model")

    async def research(state: Inner, config: RunnableConfig) -> dict[str, Any]:
        _writer(config)({"stage": "research", "at": (1, 2)})
        message = await model.ainvoke(state["topic"])
        return {"notes": [message.content]}

    inner = StateGraph(Inner)
    inner.add_node("research", research)
    inner.add_edge(START, "research")
    inner.add_edge("research", END)

    def answer(state: Outer) -> dict[str, Any]:
        return {"answer": " / ".join(state["notes"])}

    outer = StateGraph(Outer)
    outer.add_node("inner", inner.compile())
    outer.add_node("answer", answer)
    outer.add_edge(START, "inner")
    outer.add_edge("inner", "answer")
    outer.add_edge("answer", END)
    return outer.compile(), {"topic": "bees", "notes": []}, {"stream_mode": ALL_MODES}


def send_fan_out() -> Case:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Send

    class State(TypedDict):
        items: list[int]
        results: Annotated[list[Any], operator.add]

    def fan(state: State) -> list[Send]:
        sends = []
        for i in state["items"]:
            try:  # a per-Send timeout policy (LangGraph 1.2+)
                sends.append(Send("work", {"n": i}, timeout=30.0))  # type: ignore[call-arg]
            except TypeError:
                sends.append(Send("work", {"n": i}))
        return sends

    def work(arg: dict[str, int]) -> dict[str, Any]:
        return {"results": [(arg["n"], arg["n"] ** 2)]}

    graph = StateGraph(State)
    graph.add_node("work", work)
    graph.add_conditional_edges(START, fan, ["work"])
    graph.add_edge("work", END)
    return graph.compile(), {"items": [1, 2, 3], "results": []}, {"stream_mode": ALL_MODES}


def command_routing() -> Case:
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command

    class State(TypedDict):
        hops: Annotated[list[str], operator.add]

    def first(state: State) -> Command[Any]:
        return Command(goto="second", update={"hops": ["first"]})

    def second(state: State) -> Command[Any]:
        return Command(goto=END, update={"hops": ["second"]})

    graph = StateGraph(State)
    graph.add_node("first", first, destinations=("second",))
    graph.add_node("second", second, destinations=(END,))
    graph.add_edge(START, "first")
    return graph.compile(), {"hops": []}, {"stream_mode": ALL_MODES}


def interrupt_with_checkpointer() -> Case:
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    class State(TypedDict):
        question: str
        approved: Any

    def ask(state: State) -> dict[str, Any]:
        return {"approved": interrupt({"question": state["question"], "options": ("y", "n")})}

    graph = StateGraph(State)
    graph.add_node("ask", ask)
    graph.add_edge(START, "ask")
    graph.add_edge("ask", END)
    compiled = graph.compile(checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": "t-interrupt"}}
    return (
        compiled,
        {"question": "ship it?", "approved": None},
        {"stream_mode": ["values", "updates", "debug", "tasks"], "config": config},
    )


def odd_state_values() -> Case:
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        when: dt.datetime
        amount: decimal.Decimal
        tags: frozenset[str]
        blob: bytes
        pair: tuple[int, str]
        ident: uuid.UUID
        colour: Colour
        point: Point
        profile: Profile
        keyed: dict[Any, Any]

    def touch(state: State) -> dict[str, Any]:
        return {
            "amount": state["amount"] * 2,
            "pair": (state["pair"][0] + 1, state["pair"][1] + "!"),
            "keyed": {**state["keyed"], (1, "a"): {3, 4}, 7: None},
        }

    graph = StateGraph(State)
    graph.add_node("touch", touch)
    graph.add_edge(START, "touch")
    graph.add_edge("touch", END)
    start = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=5)))
    value = {
        "when": start,
        "amount": decimal.Decimal("1.10"),
        "tags": frozenset({"a", "b"}),
        "blob": b"\x00\xff",
        "pair": (1, "x"),
        "ident": FIXED,
        "colour": Colour.BLUE,
        "point": Point(1, -0.0),
        "profile": Profile(name="ada", joined=start, scores=(1, 2)),
        "keyed": {1.5: "float key", None: [1, (2,)]},
    }
    return graph.compile(), value, {"stream_mode": ALL_MODES}


def tool_loop_with_messages() -> Case:
    from langgraph.graph import END, START, StateGraph
    from langgraph.graph.message import add_messages

    class State(TypedDict):
        messages: Annotated[list[AnyMessage], add_messages]

    model = fake_chat("the answer is 42", name="agent-model")

    def call_tool(state: State) -> dict[str, Any]:
        call = {
            "name": "lookup",
            "args": {"q": "life", "k": 3},
            "id": "call-1",
            "type": "tool_call",
        }
        return {"messages": [AIMessage(content="", tool_calls=[call])]}

    def run_tool(state: State) -> dict[str, Any]:
        call = state["messages"][-1].tool_calls[0]  # type: ignore[union-attr]
        return {"messages": [ToolMessage(content="42", tool_call_id=call["id"], name="lookup")]}

    async def answer(state: State) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    graph = StateGraph(State)
    graph.add_node("call_tool", call_tool)
    graph.add_node("run_tool", run_tool)
    graph.add_node("answer", answer)
    graph.add_edge(START, "call_tool")
    graph.add_edge("call_tool", "run_tool")
    graph.add_edge("run_tool", "answer")
    graph.add_edge("answer", END)
    return (
        graph.compile(),
        {"messages": [HumanMessage(content="what is life?", id="h-1")]},
        {"stream_mode": ["messages", "updates", "values"]},
    )


def policies() -> Case:
    from langgraph.cache.memory import InMemoryCache
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import CachePolicy, RetryPolicy

    class State(TypedDict):
        n: int

    attempts = {"flaky": 0}

    def flaky(state: State) -> dict[str, Any]:
        attempts["flaky"] += 1
        if attempts["flaky"] < 2:
            raise ConnectionError("first try fails")  # (RetryPolicy retries these)
        return {"n": state["n"] + 1}

    def cached(state: State) -> dict[str, Any]:
        return {"n": state["n"] * 10}

    graph = StateGraph(State)
    graph.add_node("flaky", flaky, retry_policy=RetryPolicy(initial_interval=0.01, jitter=False))
    graph.add_node("cached", cached, cache_policy=CachePolicy(ttl=60))
    graph.add_edge(START, "flaky")
    graph.add_edge("flaky", "cached")
    graph.add_edge("cached", END)
    return graph.compile(cache=InMemoryCache()), {"n": 1}, {"stream_mode": ALL_MODES}


GRAPHS: dict[str, Callable[[], Case]] = {
    f.__name__: f
    for f in (
        subgraph_in_every_mode,
        send_fan_out,
        command_routing,
        interrupt_with_checkpointer,
        odd_state_values,
        tool_loop_with_messages,
        policies,
    )
}
