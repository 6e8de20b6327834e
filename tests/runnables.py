"""Runnable shapes for the equivalence suites: each factory builds a fresh runnable and its
input, deterministic so that two runs differ only in their run ids."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.callbacks.manager import adispatch_custom_event, dispatch_custom_event
from langchain_core.documents import Document
from langchain_core.language_models import BaseChatModel, GenericFakeChatModel
from langchain_core.language_models.fake import FakeStreamingListLLM
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolCall, ToolCallChunk
from langchain_core.output_parsers import JsonOutputParser, StrOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import (
    Runnable,
    RunnableGenerator,
    RunnableLambda,
    RunnableParallel,
    RunnablePassthrough,
)
from langchain_core.tools import tool

Case = tuple[Runnable[Any, Any], Any, dict[str, Any]]  # runnable, input, astream kwargs

FIXED_UUID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def odd_values() -> dict[Any, Any]:
    return {
        "tuple": (1, "two", (3.0, None)),
        "uuid": FIXED_UUID,
        "datetime": dt.datetime(2026, 11, 21, 12, 30, 5, 123456, tzinfo=dt.UTC),
        "naive": dt.datetime(2026, 1, 2, 3, 4, 5),
        "date": dt.date(2026, 11, 21),
        "time": dt.time(23, 59, 1),
        "delta": dt.timedelta(days=2, seconds=5, microseconds=7),
        "decimal": decimal.Decimal("3.14159265358979323846"),
        "bytes": b"\x00\xffbinary",
        "set": {1, 2, 3},
        "frozenset": frozenset({"a"}),
        1: "int key",
        (1, 2): "tuple key",
        None: "none key",
        "$t": "a user key that looks like ours",
        "big": 2**100,
        "lc_lookalike": {"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {}},
        "unicode": "héllo wörld ✓ 🚀 中文 עברית",
    }


def fake_chat(text: str = "the quick brown fox jumps", *, name: str | None = None) -> Any:
    return GenericFakeChatModel(messages=iter([AIMessage(content=text)]), name=name)


class StreamingToolModel(BaseChatModel):
    """A chat model with a native async stream that streams text, then a tool call in
    pieces (``tool_call_chunks``), then usage metadata: what real providers send."""

    @property
    def _llm_type(self) -> str:
        return "streaming-tool-fake"

    def _chunks(self) -> list[AIMessageChunk]:
        return [
            AIMessageChunk(content="Let me "),
            AIMessageChunk(content="compute."),
            AIMessageChunk(
                content="",
                tool_call_chunks=[
                    ToolCallChunk(name="multiply", args='{"a": 6', id="call-1", index=0)
                ],
            ),
            AIMessageChunk(
                content="",
                tool_call_chunks=[ToolCallChunk(name=None, args=', "b": 7}', id=None, index=0)],
            ),
            AIMessageChunk(
                content="",
                usage_metadata={"input_tokens": 12, "output_tokens": 9, "total_tokens": 21},
                response_metadata={"finish_reason": "tool_calls", "model_name": "fake-1"},
                chunk_position="last",
            ),
        ]

    def _generate(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> ChatResult:
        message = sum(self._chunks()[1:], self._chunks()[0])
        return ChatResult(generations=[ChatGeneration(message=message)])

    async def _astream(
        self, messages: Any, stop: Any = None, run_manager: Any = None, **kw: Any
    ) -> AsyncIterator[ChatGenerationChunk]:
        for chunk in self._chunks():
            if run_manager is not None:
                await run_manager.on_llm_new_token(
                    str(chunk.content), chunk=ChatGenerationChunk(message=chunk)
                )
            yield ChatGenerationChunk(message=chunk)


def tool_calling_model() -> Case:
    chain = StreamingToolModel() | RunnableLambda(
        lambda m: [(c["name"], c["args"]) for c in m.tool_calls]
    )
    return chain, [HumanMessage(content="6 times 7?")], {}


def prompt_model_parser() -> Case:
    prompt = ChatPromptTemplate.from_messages([("system", "be brief"), ("human", "{q}")])
    return prompt | fake_chat() | StrOutputParser(), {"q": "tell me"}, {}


def lambda_with_odd_values() -> Case:
    return RunnableLambda(lambda x: {**odd_values(), "x": x}, name="odd"), {"in": (1, 2)}, {}


def parallel() -> Case:
    chain = RunnableParallel(
        upper=RunnableLambda(lambda s: s.upper()),
        length=RunnableLambda(len),
        same=RunnablePassthrough(),
    )
    return chain, "parallel input", {}


async def _agen(chunks: AsyncIterator[str]) -> AsyncIterator[str]:
    async for chunk in chunks:
        for word in chunk.split():
            yield word + "|"


def generator() -> Case:
    return RunnableLambda(lambda x: x) | RunnableGenerator(_agen), "a b c d e", {}


@tool
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def tool_in_chain() -> Case:
    call = ToolCall(name="multiply", args={"a": 6, "b": 7}, id="call-1", type="tool_call")
    return RunnableLambda(lambda _: call) | multiply, "go", {}


class _Retriever(BaseRetriever):
    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        return [
            Document(page_content=f"{query} {i}", metadata={"i": i, "src": ("a", i)}, id=str(i))
            for i in range(3)
        ]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        return self._get_relevant_documents(query, run_manager=run_manager.get_sync())


def retriever_chain() -> Case:
    prompt = PromptTemplate.from_template("context: {docs}")
    chain = (
        {"docs": _Retriever(), "q": RunnablePassthrough()}
        | prompt
        | FakeStreamingListLLM(responses=["an llm answer"])
    )
    return chain, "bees", {}


async def _async_custom(x: str) -> str:
    for i in range(3):
        await adispatch_custom_event(
            "progress", {"type": "progress", "current": i, "total": 3, "at": (i, FIXED_UUID)}
        )
    return x * 2


def _sync_custom(x: str) -> str:
    dispatch_custom_event("sync-progress", {"step": 1, "payload": b"raw"})
    return x + "!"


def custom_events() -> Case:
    chain = RunnableLambda(_async_custom) | RunnableLambda(_sync_custom)
    return chain.with_config(tags=["custom"], metadata={"owner": "tests"}), "ab", {}


def json_parser() -> Case:
    text = '{"name": "eventbus", "tags": ["a", "b"], "nested": {"n": 1.5}}'
    return fake_chat(text) | JsonOutputParser(), "x", {}


def large_and_unicode() -> Case:
    big = "ü🚀" * 300_000  # about 2 MB of UTF-8
    return RunnableLambda(lambda x: {"big": big, "x": x}), "λ-input ✓", {}


def tagged_nested() -> Case:
    inner = RunnableLambda(lambda x: x + 1).with_config(
        run_name="inner", tags=["inner-tag"], metadata={"k": "v"}
    )
    outer = (inner | RunnableLambda(lambda x: x * 10).with_config(run_name="times")).with_config(
        run_name="outer", tags=["outer-tag"]
    )
    return outer, 4, {}


def langgraph_graph() -> Case:
    from typing import TypedDict

    from langgraph.config import get_stream_writer
    from langgraph.graph import END, START, StateGraph

    class State(TypedDict):
        topic: str
        answer: str

    model = fake_chat("graphs stream tokens", name="graph-model")

    async def think(state: State) -> dict[str, Any]:
        writer = get_stream_writer()
        for i in range(3):
            writer({"type": "progress", "current": i + 1, "total": 3, "status": f"step {i + 1}"})
        message = await model.ainvoke(state["topic"])
        return {"answer": message.content}

    def finish(state: State) -> dict[str, Any]:
        return {"answer": state["answer"].upper()}

    graph = StateGraph(State)
    graph.add_node("think", think)
    graph.add_node("finish", finish)
    graph.add_edge(START, "think")
    graph.add_edge("think", "finish")
    graph.add_edge("finish", END)
    compiled = graph.compile()
    return compiled, {"topic": "bees"}, {"stream_mode": ["updates", "custom", "messages"]}


CASES: dict[str, Callable[[], Case]] = {
    f.__name__: f
    for f in (
        prompt_model_parser,
        tool_calling_model,
        lambda_with_odd_values,
        parallel,
        generator,
        tool_in_chain,
        retriever_chain,
        custom_events,
        json_parser,
        large_and_unicode,
        tagged_nested,
        langgraph_graph,
    )
}
