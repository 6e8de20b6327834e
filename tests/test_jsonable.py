"""The JSON form of the v2 stream (``eventbus.to_jsonable``) and its JSON Schema.

Real events: every case of the test corpus (tests/runnables.py) run by LangChain itself;
each event's JSON form validates against the committed schema, and LangChain objects come
out as their own ``model_dump()``.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import uuid
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import msgspec
import pytest
from graphs import GRAPHS
from langchain_core.documents import Document
from langchain_core.messages import AIMessageChunk, HumanMessage
from runnables import CASES, FIXED_UUID, odd_values

import eventbus
from eventbus._jsonable import dumps, json_schema, json_schema_text

pytestmark = pytest.mark.anyio

SCHEMA_FILE = Path(__file__).parent.parent / "docs" / "json-form.schema.json"


def _validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)  # type: ignore[no-any-return]


def test_committed_schema_is_the_generated_one() -> None:
    assert SCHEMA_FILE.read_text() == json_schema_text(), "run `make schema`"


async def _local_events(case: str) -> list[dict[str, Any]]:
    runnable, value, kwargs = (CASES | GRAPHS)[case]()
    with anyio.fail_after(60):
        return [e async for e in runnable.astream_events(value, version="v2", **kwargs)]


@pytest.mark.parametrize("case", [*CASES, *GRAPHS])
async def test_corpus_events_validate_against_the_schema(case: str) -> None:
    validator = _validator()
    events = await _local_events(case)
    assert events
    for event in events:
        form = eventbus.to_jsonable(event)
        # plain JSON: msgspec encodes it without hooks, and it survives a round trip
        assert json.loads(dumps(event)) == form
        errors = sorted(validator.iter_errors(form), key=str)
        assert not errors, f"{event['event']}: {errors[0]}"


async def test_langchain_objects_are_their_model_dump() -> None:
    events = await _local_events("tool_calling_model")
    chunks = [e["data"]["chunk"] for e in events if e["event"] == "on_chat_model_stream"]
    assert chunks and all(isinstance(c, AIMessageChunk) for c in chunks)
    for chunk in chunks:
        form = eventbus.to_jsonable(chunk)
        assert form == json.loads(json.dumps(chunk.model_dump()))
        assert form["type"] == "AIMessageChunk"
    assert any(eventbus.to_jsonable(c)["tool_call_chunks"] for c in chunks)
    doc = eventbus.to_jsonable(Document(page_content="p", metadata={"at": FIXED_UUID}))
    assert doc == {
        "id": None,
        "metadata": {"at": str(FIXED_UUID)},
        "page_content": "p",
        "type": "Document",
    }
    assert eventbus.to_jsonable([HumanMessage("hi")])[0]["type"] == "human"


def test_odd_values_have_their_documented_form() -> None:
    form = eventbus.to_jsonable(odd_values())
    assert form["tuple"] == [1, "two", [3.0, None]]
    assert form["uuid"] == "12345678-1234-5678-1234-567812345678"
    assert form["datetime"] == "2026-11-21T12:30:05.123456+00:00"
    assert form["naive"] == "2026-01-02T03:04:05"
    assert (form["date"], form["time"]) == ("2026-11-21", "23:59:01")
    assert form["delta"] == dt.timedelta(days=2, seconds=5, microseconds=7).total_seconds()
    assert form["decimal"] == "3.14159265358979323846"
    assert base64.b64decode(form["bytes"]) == b"\x00\xffbinary"
    assert sorted(form["set"]) == [1, 2, 3] and form["frozenset"] == ["a"]
    # non-string keys: the key's JSON text; a "$t" key is just a key here
    assert (form["1"], form["[1,2]"], form["null"]) == ("int key", "tuple key", "none key")
    assert form["$t"] == "a user key that looks like ours"
    assert form["big"] == 2**100
    assert form["lc_lookalike"] == {
        "lc": 1,
        "type": "constructor",
        "id": ["os", "system"],
        "kwargs": {},
    }
    assert form["unicode"] == "héllo wörld ✓ 🚀 中文 עברית"
    assert eventbus.to_jsonable({True: 1, uuid.UUID(int=1): 2, float("nan"): 3}) == {
        "true": 1,
        "00000000-0000-0000-0000-000000000001": 2,
        "null": 3,
    }
    assert eventbus.to_jsonable([decimal.Decimal("1.5"), float("inf")]) == ["1.5", None]


def test_exceptions_and_unrepresentable_values() -> None:
    form = eventbus.to_jsonable({"error": ValueError("bad", 2), "lock": object()})
    assert form["error"] == {
        "type": "Exception",
        "class": "ValueError",
        "module": "builtins",
        "message": "('bad', 2)",
        "args": ["bad", 2],
    }
    assert form["lock"]["type"] == "Unrepresentable"
    assert form["lock"]["class"] == "builtins.object"
    # a value decoded on the subscriber side keeps the worker's class name
    remote = eventbus.RemoteException("MyError", "app.errors", "oops", ("oops",))
    assert eventbus.to_jsonable(remote)["class"] == "MyError"
    # a value that arrived but could not be rebuilt
    bad = eventbus.Undecodable("lc.AIMessage", "{}", "content: field required")
    assert eventbus.to_jsonable({"x": bad}) == {
        "x": {
            "type": "Undecodable",
            "class": "lc.AIMessage",
            "repr": "{}",
            "reason": "content: field required",
        }
    }


def test_langgraph_values_carry_their_type() -> None:
    from langgraph.types import Command, Interrupt, Send

    assert eventbus.to_jsonable(Interrupt(value={"q": 1}, id="i1")) == {
        "type": "Interrupt",
        "value": {"q": 1},
        "id": "i1",
        "response_schema": None,
    }
    command = eventbus.to_jsonable(Command(goto="next", update={"a": (1, 2)}))
    assert (command["type"], command["goto"], command["update"]) == (
        "Command",
        "next",
        {"a": [1, 2]},
    )
    send = eventbus.to_jsonable(Send("node", {"x": 1}))
    assert (send["type"], send["node"], send["arg"]) == ("Send", "node", {"x": 1})


def test_lone_surrogates_are_replaced_when_encoded() -> None:
    text = "bad \udcff name"
    assert msgspec.json.decode(dumps({"path": text})) == {"path": "bad \ufffd name"}


def test_schema_is_valid_and_names_the_langchain_classes() -> None:
    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    defs = schema["$defs"]
    assert defs["AIMessageChunk"]["properties"]["type"]["const"] == "AIMessageChunk"
    bad = {
        "event": "on_chat_model_stream",
        "name": "m",
        "run_id": str(uuid.uuid4()),
        "parent_ids": [],
        "tags": [],
        "metadata": {},
        "data": {"chunk": {"content": 1}},
    }
    assert list(_validator().iter_errors(bad))  # a chunk that is not a message is refused
