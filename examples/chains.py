"""The runnables the examples run: a chat chain with progress events, and a LangGraph graph.

A fake streaming chat model stands in for a provider, so the examples need no API key.
"""

from __future__ import annotations

from typing import Any, TypedDict

from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import Runnable, RunnableLambda

ANSWER = (
    "Bees communicate through a waggle dance that encodes the direction and distance "
    "of flowers relative to the sun."
)


def chat_chain(answer: str = ANSWER) -> Runnable[Any, str]:
    """prompt | streaming chat model | parser, with custom progress events around it."""
    model = GenericFakeChatModel(messages=iter([AIMessage(content=answer)]))
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{q}")])

    async def research(inputs: dict[str, Any]) -> dict[str, Any]:
        for i in range(1, 4):
            await adispatch_custom_event(
                "progress",
                {"type": "progress", "current": i, "total": 3, "status": f"reading source {i}"},
            )
        return inputs

    return RunnableLambda(research, name="research") | prompt | model | StrOutputParser()


class GraphState(TypedDict):
    topic: str
    notes: list[str]
    answer: str


def research_graph(steps: int = 5) -> Any:
    """A LangGraph graph that reports progress with get_stream_writer() and streams tokens."""
    from langgraph.config import get_stream_writer
    from langgraph.graph import END, START, StateGraph

    model = GenericFakeChatModel(messages=iter([AIMessage(content=ANSWER)]), name="writer-model")

    async def gather(state: GraphState) -> dict[str, Any]:
        writer = get_stream_writer()
        notes = []
        for i in range(1, steps + 1):
            notes.append(f"note {i} on {state['topic']}")
            writer({"type": "progress", "current": i, "total": steps, "status": f"note {i}"})
        return {"notes": notes}

    async def write(state: GraphState) -> dict[str, Any]:
        message = await model.ainvoke(f"Write about {state['topic']} from {state['notes']}")
        return {"answer": message.content}

    graph = StateGraph(GraphState)
    graph.add_node("gather", gather)
    graph.add_node("write", write)
    graph.add_edge(START, "gather")
    graph.add_edge("gather", "write")
    graph.add_edge("write", END)
    return graph.compile()
