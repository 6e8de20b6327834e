"""The Publisher / Subscriber contract, over every transport."""

from __future__ import annotations

import asyncio
import io
import sys
import threading
import uuid
from typing import Any

import anyio
import msgspec
import pytest
from _same import assert_same
from langchain_core.runnables import RunnableLambda
from runnables import CASES, fake_chat

import eventbus
from eventbus._wire import End, Event, Heartbeat, encode_envelope
from eventbus.transports import OutFrame, open_transport

pytestmark = pytest.mark.anyio

WAIT = 30


async def collect(agen: Any) -> list[Any]:
    with anyio.fail_after(WAIT):
        return [x async for x in agen]


class Boom(RuntimeError):
    pass


def _explode(x: Any) -> Any:
    raise Boom(f"exploded on {x!r}")


async def test_run_error_is_raised_locally_and_remotely(url: str, namespace: str) -> None:
    chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(_explode)
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        local: list[Any] = []
        with pytest.raises(Boom):
            async for ev in pub.astream_events(chain, 1, config={"run_id": run_id}):
                local.append(ev)
        remote: list[Any] = []
        with pytest.raises(eventbus.RemoteRunError) as info:
            async for ev in sub.astream_events(run_id):
                remote.append(ev)
    assert_same(remote, local)
    err = info.value
    assert err.run_id == run_id
    assert err.type_name == "Boom"
    assert err.module == __name__
    assert err.message == "exploded on 2"
    assert "_explode" in err.traceback
    assert "Boom: exploded on 2" in err.traceback


async def test_run_propagates_the_original_exception(url: str, namespace: str) -> None:
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        with pytest.raises(Boom):
            await pub.run(RunnableLambda(_explode), "x")
        assert pub.last_run_id is not None
        with pytest.raises(eventbus.RemoteRunError, match="exploded on 'x'"):
            await collect(sub.follow(pub.last_run_id))


async def test_cancelled_run_ends_remotely_with_a_distinct_error(url: str, namespace: str) -> None:
    started = asyncio.Event()

    async def slow(x: Any) -> Any:
        started.set()
        await asyncio.Event().wait()  # until cancelled

    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        task = asyncio.create_task(pub.run(RunnableLambda(slow), 1, config={"run_id": run_id}))
        with anyio.fail_after(WAIT):
            await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(eventbus.RunCancelledError) as info:
            await collect(sub.astream_events(run_id))
    assert not isinstance(info.value, eventbus.RemoteRunError)
    assert "cancelled" in info.value.reason


async def test_breaking_out_of_the_tee_cancels_the_run_remotely(url: str, namespace: str) -> None:
    runnable, value, _ = CASES["prompt_model_parser"]()
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        seen = []
        events = pub.astream_events(runnable, value, config={"run_id": run_id})
        async for ev in events:
            seen.append(ev)
            if len(seen) == 3:
                break
        await events.aclose()
        remote = []
        with pytest.raises(eventbus.RunCancelledError, match="stopped iterating"):
            async for ev in sub.astream_events(run_id):
                remote.append(ev)
    assert_same(remote, seen)


async def test_heartbeats_keep_a_quiet_run_alive(url: str, namespace: str) -> None:
    release = asyncio.Event()

    async def quiet(x: Any) -> Any:
        await release.wait()
        return x

    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace, heartbeat_interval=0.1) as pub,
        eventbus.Subscriber(url, namespace, idle_timeout=1.0) as sub,
    ):
        follower = asyncio.create_task(collect(sub.follow(run_id)))
        run = asyncio.create_task(pub.run(RunnableLambda(quiet), 5, config={"run_id": run_id}))
        # the run stays quiet for 3 idle timeouts; only heartbeats keep the follower waiting
        await asyncio.wait({follower}, timeout=3.0)
        assert not follower.done(), follower.exception()
        assert pub.stats.heartbeats >= 10
        release.set()
        assert await run == 5
        items = await follower
    assert [i.event["event"] for i in items] == [
        "on_chain_start",
        "on_chain_stream",
        "on_chain_end",
    ]


async def test_dead_worker_is_detected_after_idle_timeout(url: str, namespace: str) -> None:
    # a "worker" that published one event and died: no end, no heartbeats (a real worker
    # killed with SIGKILL: test_processes.py)
    run_id = str(uuid.uuid4())
    t = open_transport(url, namespace)
    await t.connect()
    ev = {"event": "on_chain_start", "run_id": run_id, "name": "x", "tags": [], "metadata": {},
          "data": {"input": 1}, "parent_ids": []}  # fmt: skip
    frame = encode_envelope("msgpack", namespace, run_id, "dead", [Event(1, 0.0, ev)])
    await t.publish([OutFrame(run_id, frame)])
    await t.aclose()
    async with eventbus.Subscriber(url, namespace, idle_timeout=0.5) as sub:
        got = []
        with pytest.raises(eventbus.WorkerLostError) as info:
            async for item in sub.follow(run_id):
                got.append(item.event)
    assert got == [ev]
    assert info.value.idle_timeout == 0.5


async def test_start_timeout_for_a_run_that_never_starts(url: str, namespace: str) -> None:
    async with eventbus.Subscriber(url, namespace, start_timeout=0.3) as sub:
        with pytest.raises(eventbus.RunNotFoundError):
            await collect(sub.follow(uuid.uuid4()))


async def test_resume_after_any_event_exactly(url: str, namespace: str) -> None:
    runnable, value, _ = CASES["prompt_model_parser"]()
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace, max_frame_bytes=600) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        await pub.run(runnable, value, config={"run_id": run_id})
        items = await collect(sub.follow(run_id))
        assert pub.stats.frames > 3, "the test needs events packed in several frames"
        for i in range(len(items)):
            rest = await collect(sub.follow(run_id, after=items[i].id))
            assert [r.id for r in rest] == [x.id for x in items[i + 1 :]]
            assert_same([r.event for r in rest], [x.event for x in items[i + 1 :]])
        with pytest.raises(eventbus.InvalidResumeToken):
            await collect(sub.follow(run_id, after="garbage"))


async def test_sequence_gap_raises(url: str, namespace: str) -> None:
    run_id = str(uuid.uuid4())
    ev = {"event": "on_custom_event", "run_id": run_id, "name": "n", "tags": [], "metadata": {},
          "data": 1, "parent_ids": []}  # fmt: skip
    t = open_transport(url, namespace)
    await t.connect()
    frames = [
        encode_envelope("msgpack", namespace, run_id, "p", [Event(1, 0.0, ev)]),
        # records 2 and 3 were trimmed away
        encode_envelope("msgpack", namespace, run_id, "p", [Event(4, 0.0, ev), End(5, 0.0)]),
    ]
    await t.publish([OutFrame(run_id, f) for f in frames])
    await t.aclose()
    async with eventbus.Subscriber(url, namespace) as sub:
        with pytest.raises(eventbus.SequenceGapError) as info:
            await collect(sub.follow(run_id))
    assert (info.value.expected, info.value.got) == (2, 4)


async def test_duplicates_and_junk_are_skipped_and_counted(url: str, namespace: str) -> None:
    run_id = str(uuid.uuid4())
    ev = {"event": "on_custom_event", "run_id": run_id, "name": "n", "tags": [], "metadata": {},
          "data": [1, 2], "parent_ids": []}  # fmt: skip
    first = encode_envelope("msgpack", namespace, run_id, "p", [Event(1, 0.0, ev)])
    rest = encode_envelope(
        "msgpack", namespace, run_id, "p", [Event(2, 0.0, ev), Heartbeat(2, 0.0), End(3, 0.0)]
    )
    foreign = encode_envelope("msgpack", "other-ns", run_id, "p", [Event(2, 0.0, ev)])
    bad_uuid = msgspec.msgpack.Ext(1, msgspec.msgpack.encode(["uuid", 5]))
    forged = encode_envelope(
        "msgpack", namespace, run_id, "p", [Event(2, 0.0, {**ev, "data": [bad_uuid, 2]})]
    )
    t = open_transport(url, namespace)
    await t.connect()
    junk = [b"", b"\xc1", b"{not json", first[:-3], foreign, forged, b"\x00" * 1000]
    await t.publish([OutFrame(run_id, f) for f in [first, *junk, first, first, rest]])
    await t.aclose()
    async with eventbus.Subscriber(url, namespace) as sub:
        items = await collect(sub.follow(run_id))
        # the forged value costs that value only: its event arrives, with a placeholder
        assert [i.event["data"][1] for i in items] == [2, 2]
        assert items[0].event["data"][0] == 1
        assert isinstance(items[1].event["data"][0], eventbus.Undecodable)
        assert items[1].event["data"][0].type == "uuid.UUID"
        assert sub.stats.duplicates == 3  # first, twice again; rest's event #2
        assert sub.stats.malformed == 5
        assert sub.stats.foreign == 1
        assert sub.stats.undecodable == 1


async def test_oversized_frames_arrive_as_placeholders_and_the_run_goes_on(
    url: str, namespace: str
) -> None:
    runnable, value, _ = CASES["large_and_unicode"]()
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace, max_frame_bytes=100_000, idle_timeout=5) as sub,
        eventbus.Subscriber(url, namespace) as whole,
    ):
        await pub.run(runnable, value, config={"run_id": run_id})
        items = await collect(sub.follow(run_id))  # no SequenceGapError, a normal end
        expected = await collect(whole.follow(run_id))
    assert sub.stats.oversized >= 1
    assert [i.id for i in items] == [i.id for i in expected]
    placeholders = 0
    for got, want in zip(items, expected, strict=True):
        assert (got.event["event"], got.event["run_id"]) == (
            want.event["event"],
            want.event["run_id"],
        )
        values = list(got.event["data"].values())
        if values and all(isinstance(v, eventbus.Unrepresentable) for v in values):
            placeholders += 1
            assert "max_frame_bytes=100000" in values[0].repr
            assert got.event["data"].keys() == want.event["data"].keys()
        else:
            assert_same([got.event], [want.event])
    assert placeholders >= 1


class _Weird:
    def __repr__(self) -> str:
        return "<weird thing>"


async def test_unrepresentable_values_become_placeholders(url: str, namespace: str) -> None:
    handle = io.StringIO("file-like")
    chain = RunnableLambda(
        lambda x: {"ok": x, "weird": _Weird(), "file": handle, "lock": threading.Lock()}
    )
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        output = await pub.run(chain, 7, config={"run_id": run_id})
        events = await collect(sub.astream_events(run_id))
    assert output["ok"] == 7
    remote = events[-1]["data"]["output"]
    assert remote["ok"] == 7
    assert remote["weird"] == eventbus.Unrepresentable(f"{__name__}._Weird", "<weird thing>")
    assert remote["file"].type == "_io.StringIO"
    assert "lock" in remote["lock"].repr


async def test_oversized_events_are_replaced_and_the_run_goes_on(url: str, namespace: str) -> None:
    chain = RunnableLambda(lambda x: "y" * 50_000) | RunnableLambda(len)
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace, max_event_bytes=20_000) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        assert await pub.run(chain, 1, config={"run_id": run_id}) == 50_000
        events = await collect(sub.astream_events(run_id))
    assert pub.stats.oversized_events >= 1
    assert events[-1]["data"]["output"] == 50_000
    shrunk = [e for e in events if isinstance(e["data"].get("output"), eventbus.Unrepresentable)]
    assert shrunk and "max_event_bytes" in shrunk[0]["data"]["output"].repr


async def test_consumer_groups_fan_out_and_compete(url: str, namespace: str) -> None:
    runs = [str(uuid.uuid4()) for _ in range(3)]
    received: dict[str, list[eventbus.Message]] = {"audit": [], "w1": [], "w2": []}
    members = {"audit": ["audit"], "work": ["w1", "w2"]}
    complete = {"audit": asyncio.Event(), "work": asyncio.Event()}
    total = 0  # records per group: every event of every run, plus each run's end

    async def consume(sub: eventbus.Subscriber, group: str, name: str) -> None:
        async for msg in sub.consume(group, name, start="first", prefetch=10):
            received[name].append(msg)
            await msg.ack()
            # competing consumers see a run out of order: wait for every record, not the end
            seen = {(m.run_id, m.seq) for n in members[group] for m in received[n]}
            if len(seen) == total:
                complete[group].set()

    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        for run_id in runs:
            runnable, value, _ = CASES["prompt_model_parser"]()
            await pub.run(runnable, value, config={"run_id": run_id})
        expected = {r: await collect(sub.astream_events(r)) for r in runs}
        total = sum(len(events) + 1 for events in expected.values())
        tasks = [
            asyncio.create_task(consume(sub, "audit", "audit")),
            asyncio.create_task(consume(sub, "work", "w1")),
            asyncio.create_task(consume(sub, "work", "w2")),
        ]
        try:
            with anyio.fail_after(WAIT):
                await complete["audit"].wait()
                await complete["work"].wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def by_run(msgs: list[eventbus.Message]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {r: [] for r in runs}
        for m in sorted(msgs, key=lambda m: (m.run_id, m.seq)):
            if m.kind == "event":
                out[m.run_id].append(m.event)
        return out

    assert_same(by_run(received["audit"]), expected)
    assert [m.kind for m in received["audit"] if m.kind != "event"] == ["end"] * len(runs)
    assert_same(by_run(received["w1"] + received["w2"]), expected)
    work_ids = [(m.run_id, m.seq) for m in received["w1"] + received["w2"]]
    assert len(work_ids) == len(set(work_ids)), "a message was delivered twice in one group"


async def test_group_messages_carry_run_errors(url: str, namespace: str) -> None:
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        with pytest.raises(Boom):
            await pub.run(RunnableLambda(_explode), 3)
        with anyio.fail_after(WAIT):
            async for msg in sub.consume("errors", "c", start="first"):
                await msg.ack()
                if msg.kind != "event":
                    break
    assert msg.kind == "error"
    assert isinstance(msg.error, eventbus.RemoteRunError)
    assert msg.error.type_name == "Boom"
    assert msg.run_id == pub.last_run_id


async def test_malformed_group_messages_are_dead_lettered_not_fatal(
    url: str, namespace: str
) -> None:
    t = open_transport(url, namespace)
    await t.connect()
    run_id = str(uuid.uuid4())
    await t.publish([OutFrame(run_id, b"\x93garbage"), OutFrame(run_id, b"{}")])
    await t.aclose()
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        await pub.run(RunnableLambda(lambda x: x), 1)
        kinds = []
        with anyio.fail_after(WAIT):
            async for msg in sub.consume("robust", "c", start="first"):
                kinds.append(msg.kind)
                await msg.ack()
                if msg.kind == "end":
                    break
        assert kinds[-1] == "end" and "event" in kinds
        assert sub.stats.malformed == 2
        # rejected (dead-lettered) before the consumer moved on to the next delivery
        dead = await sub.dead_letters("robust")
    assert [d.data for d in dead] == [b"\x93garbage", b"{}"]
    assert all("malformed" in d.reason for d in dead)


async def test_backpressure_bounds_the_buffer(url: str, namespace: str) -> None:
    runnable, value, _ = CASES["prompt_model_parser"]()
    run_id = str(uuid.uuid4())
    async with (
        eventbus.Publisher(url, namespace, max_buffer_bytes=1, linger=0.01) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        local = await collect(pub.astream_events(runnable, value, config={"run_id": run_id}))
        remote = await collect(sub.astream_events(run_id))
    assert pub.stats.backpressure_waits > 0
    assert_same(remote, local)


async def test_backpressure_pauses_a_node_that_streams_without_root_chunks(
    namespace: str,
) -> None:
    """A LangGraph node dispatching events in a loop gives the graph's root stream no
    chunk until it returns: the run must be paused where the events are made, not let
    them pile up unpublished while the writer cannot keep up."""
    from langchain_core.callbacks.manager import adispatch_custom_event
    from langgraph.graph import END, START, StateGraph
    from typing_extensions import TypedDict

    class State(TypedDict):
        n: int

    total = 2_000
    made = 0

    async def node(state: State) -> State:
        nonlocal made
        for i in range(total):
            made = i + 1
            await adispatch_custom_event("tick", {"i": i, "pad": "x" * 100})
        return {"n": total}

    builder = StateGraph(State)
    builder.add_node("loop", node)
    builder.add_edge(START, "loop")
    builder.add_edge("loop", END)
    graph = builder.compile()
    run_id = str(uuid.uuid4())
    gate = asyncio.Event()
    entered = asyncio.Event()
    budget = 4_000
    async with (
        eventbus.Publisher("memory://", namespace, max_buffer_bytes=budget) as pub,
        eventbus.Subscriber("memory://", namespace) as sub,
    ):
        publish = pub._transport.publish

        async def gated(frames: Any) -> None:
            entered.set()
            await gate.wait()
            await publish(frames)

        pub._transport.publish = gated  # type: ignore[method-assign]
        task = asyncio.create_task(pub.run(graph, {"n": 0}, config={"run_id": run_id}))
        try:
            with anyio.fail_after(10):
                await entered.wait()
                for _ in range(200):  # (bounded: the node makes an event per turn at most)
                    await asyncio.sleep(0)
                    if pub.stats.backpressure_waits:
                        break
            assert pub.stats.backpressure_waits > 0
            assert made < total  # paused inside the node
            assert pub._buffered <= budget + 1_000  # (one event over the budget at most)
        finally:
            gate.set()
        with anyio.fail_after(20):
            await task
            remote = await collect(sub.astream_events(run_id))
    ticks = [e["data"]["i"] for e in remote if e["event"] == "on_custom_event"]
    assert ticks == list(range(total))


async def test_many_concurrent_runs_on_one_publisher(url: str, namespace: str) -> None:
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        ids = [str(uuid.uuid4()) for _ in range(20)]

        async def one(run_id: str) -> list[Any]:
            runnable, value, _ = CASES["prompt_model_parser"]()
            return await collect(pub.astream_events(runnable, value, config={"run_id": run_id}))

        locals_ = await asyncio.gather(*(one(r) for r in ids))
        for run_id, local in zip(ids, locals_, strict=True):
            assert_same(await collect(sub.astream_events(run_id)), local)


async def test_bad_input_gives_clear_errors(namespace: str) -> None:
    with pytest.raises(eventbus.ConfigurationError, match="unknown URL scheme"):
        eventbus.Publisher("kafka://localhost", namespace)
    with pytest.raises(eventbus.ConfigurationError, match="not a broker URL"):
        eventbus.Subscriber("localhost:6379", namespace)
    with pytest.raises(eventbus.ConfigurationError, match="invalid namespace"):
        eventbus.Publisher("memory://", "has space")
    with pytest.raises(eventbus.ConfigurationError, match="codec"):
        eventbus.Publisher("memory://", namespace, codec="xml")  # type: ignore[arg-type]
    async with eventbus.Subscriber("memory://", namespace) as sub:
        with pytest.raises(eventbus.ConfigurationError, match="not a UUID"):
            await collect(sub.follow("not-a-run"))
        with pytest.raises(eventbus.ConfigurationError, match="invalid group"):
            await collect(sub.consume("bad group", "c"))
    pub = eventbus.Publisher("memory://", namespace)
    with pytest.raises(eventbus.PublishError, match="not open"):
        await pub.run(RunnableLambda(lambda x: x), 1)


def test_missing_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch, namespace: str) -> None:
    import eventbus.transports as transports

    monkeypatch.delitem(sys.modules, "eventbus.transports.redis", raising=False)
    monkeypatch.setitem(sys.modules, "redis", None)  # makes `import redis` fail
    with pytest.raises(eventbus.MissingDependencyError, match=r"eventbus\[redis\]"):
        transports.open_transport("redis://localhost", namespace)


def test_password_never_appears_in_errors_or_attributes(namespace: str) -> None:
    with pytest.raises(eventbus.ConfigurationError) as info:
        eventbus.Publisher("kafka://user:s3cret@host:1/", namespace)
    assert "s3cret" not in str(info.value)
    pub = eventbus.Publisher("memory://user:s3cret@name", namespace)
    assert "s3cret" not in pub.url and "***" in pub.url


def test_sync_publisher_and_callback_handler(url: str, namespace: str) -> None:
    runnable, value, _ = CASES["prompt_model_parser"]()
    run_id = str(uuid.uuid4())
    with eventbus.SyncPublisher(url, namespace) as pub:
        output = pub.run(runnable, value, config={"run_id": run_id})
        streamed = list(pub.stream_events(RunnableLambda(lambda x: x * 2), 21))
        # code that calls invoke itself, with the handler
        handler = pub.callback_handler()
        chain = RunnableLambda(lambda x: x + 1) | RunnableLambda(lambda x: x * 3)
        invoked = chain.invoke(1, config={"callbacks": [handler], "run_id": uuid.uuid4()})
        pub.flush()
        handler_run = pub.last_run_id
    assert output == "the quick brown fox jumps"
    assert streamed[-1]["data"]["output"] == 42
    assert invoked == 6

    async def read(run: str) -> list[Any]:
        async with eventbus.Subscriber(url, namespace) as sub:
            return await collect(sub.astream_events(run))

    remote = anyio.run(read, run_id)
    assert remote[-1]["data"]["output"] == "the quick brown fox jumps"
    assert handler_run is not None
    handled = anyio.run(read, handler_run)
    assert handled[0]["event"] == "on_chain_start"
    assert handled[0]["data"]["input"] == 1
    assert handled[-1]["event"] == "on_chain_end"
    assert handled[-1]["data"] == {"output": 6}


async def test_callback_handler_with_ainvoke_matches_local_handler_events(
    url: str, namespace: str
) -> None:
    model = fake_chat("handler path tokens")
    run_id = uuid.uuid4()
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        handler = pub.callback_handler()
        result = await model.ainvoke("hi", config={"callbacks": [handler], "run_id": run_id})
        await pub.flush()
        events = await collect(sub.astream_events(run_id))
    names = [e["event"] for e in events]
    assert names[0] == "on_chat_model_start" and names[-1] == "on_chat_model_end"
    assert "on_chat_model_stream" in names
    assert events[-1]["data"]["output"] == result
    assert type(events[-1]["data"]["output"]) is type(result)


async def test_callback_handler_publishes_root_errors(url: str, namespace: str) -> None:
    run_id = uuid.uuid4()
    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        handler = pub.callback_handler()
        with pytest.raises(Boom):
            await RunnableLambda(_explode).ainvoke(
                1, config={"callbacks": [handler], "run_id": run_id}
            )
        await pub.flush()
        with pytest.raises(eventbus.RemoteRunError, match="exploded on 1"):
            await collect(sub.astream_events(run_id))


@pytest.mark.parametrize("preload", [True, False])
def test_a_subscriber_imports_langchain_when_it_connects_unless_told_not_to(
    preload: bool,
) -> None:
    """The import (~0.4 s) happens at connect, not under the first events of a live run;
    a short-lived reader (preload=False, the command line) leaves it to first use."""
    import subprocess

    script = (
        "import asyncio, sys, eventbus\n"
        "async def main():\n"
        f"    async with eventbus.Subscriber('memory://', 'p', preload={preload}):\n"
        "        print('langchain_core.messages' in sys.modules)\n"
        "asyncio.run(main())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == str(preload)
