"""The runnables ``eventbus demo`` runs, and its worker.

They live in the package (not in ``examples/``) so that the demo works from an installed
wheel. A fake streaming chat model stands in for a provider: no API key, no network.
Two runs are published, to show both ways LangChain code reports progress:

* ``graph``: a LangGraph graph whose ``gather`` node reports progress with
  ``get_stream_writer()`` and calls a tool, and whose ``write`` node streams tokens;
* ``chain``: prompt | chat model | parser behind a ``RunnableLambda`` that reports
  progress with ``adispatch_custom_event("progress", ...)``.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableLambda
from langchain_core.tools import tool

from ._publisher import Publisher

__all__ = ["ANSWER", "DemoRun", "chat_chain", "demo_runs", "research_graph", "run_worker"]

RunKind = Literal["graph", "chain"]

ANSWER = (
    "Bees communicate through a waggle dance that encodes the direction and distance "
    "of flowers relative to the sun."
)
CHAIN_ANSWER = "Ants leave pheromone trails that their nest mates follow to food."

# A short pause between progress steps, so that a person watching `eventbus demo` in a
# terminal sees the bars move; it is not used for any synchronisation.
STEP_PAUSE = 0.08


@tool
def search_notes(topic: str) -> str:
    """Look up field notes on a topic."""
    return f"3 field notes on {topic}"


class GraphState(TypedDict):
    topic: str
    notes: list[str]
    answer: str


def research_graph(steps: int = 5, pause: float = STEP_PAUSE) -> Any:
    """A LangGraph graph: progress through ``get_stream_writer()``, a tool call, tokens."""
    from langgraph.config import get_stream_writer
    from langgraph.graph import END, START, StateGraph

    model = GenericFakeChatModel(messages=iter([AIMessage(content=ANSWER)]), name="writer-model")

    async def gather(state: GraphState, config: RunnableConfig) -> dict[str, Any]:
        writer = get_stream_writer()
        found = await search_notes.ainvoke({"topic": state["topic"]}, config)
        notes = [found]
        for i in range(1, steps + 1):
            notes.append(f"note {i} on {state['topic']}")
            writer({"type": "progress", "current": i, "total": steps, "status": f"note {i}"})
            await asyncio.sleep(pause)
        return {"notes": notes}

    async def write(state: GraphState, config: RunnableConfig) -> dict[str, Any]:
        # config passed on explicitly: Python 3.10 has no contextvars in asyncio tasks'
        # callbacks for LangChain to find the parent run by itself
        message = await model.ainvoke(f"Write about {state['topic']} from {state['notes']}", config)
        return {"answer": message.content}

    graph = StateGraph(GraphState)
    graph.add_node("gather", gather)
    graph.add_node("write", write)
    graph.add_edge(START, "gather")
    graph.add_edge("gather", "write")
    graph.add_edge("write", END)
    return graph.compile(name="research_graph")


def chat_chain(
    answer: str = CHAIN_ANSWER, steps: int = 3, pause: float = STEP_PAUSE
) -> Runnable[Any, str]:
    """prompt | streaming chat model | parser, with custom progress events before it."""
    model = GenericFakeChatModel(messages=iter([AIMessage(content=answer)]), name="chat-model")
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{q}")])

    async def research(inputs: dict[str, Any], config: RunnableConfig) -> dict[str, Any]:
        for i in range(1, steps + 1):
            await adispatch_custom_event(
                "progress",
                {
                    "type": "progress",
                    "current": i,
                    "total": steps,
                    "status": f"reading source {i}",
                },
                config=config,
            )
            await asyncio.sleep(pause)
        return inputs

    return (
        RunnableLambda(research, name="research") | prompt | model | StrOutputParser()
    ).with_config(run_name="ask_chain")


@dataclass
class DemoRun:
    """One run the demo worker publishes, and what publishing it produced."""

    run_id: str
    kind: RunKind
    events: int = 0  # events published for this run
    output: Any = None


def demo_runs(run_ids: list[str]) -> list[DemoRun]:
    """The demo's runs, in the order the worker runs them (graph first, then chain)."""
    kinds: list[RunKind] = ["graph", "chain"]
    return [DemoRun(run_id, kind) for run_id, kind in zip(run_ids, kinds, strict=True)]


async def run_worker(url: str, namespace: str, runs: list[DemoRun]) -> None:
    """Publish every demo run, one after the other, recording what was published."""
    async with Publisher(url, namespace) as pub:
        for run in runs:
            before = pub.stats.events
            if run.kind == "graph":
                run.output = await pub.run(
                    research_graph(),
                    {"topic": "bees", "notes": [], "answer": ""},
                    config={"run_id": uuid.UUID(run.run_id)},
                    stream_mode=["updates", "custom"],
                )
            else:
                run.output = await pub.run(
                    chat_chain(),
                    {"q": "How do ants find food?"},
                    config={"run_id": uuid.UUID(run.run_id)},
                )
            run.events = pub.stats.events - before
