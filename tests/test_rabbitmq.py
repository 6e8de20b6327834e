"""RabbitMQ-specific behaviour: server-side topology, reconnects, crashed consumers, errors.

The byte-level contract is in test_transport_contract.py; these tests need a RabbitMQ with
``rabbitmqctl`` on the PATH (forced connection closes, topology inspection).
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aio_pika
import anyio
import pytest
from conftest import broker_url, skip_unless_required
from runnables import CASES

import eventbus
from eventbus import AuthenticationError, ConfigurationError, ConnectError, PublishError
from eventbus.transports import Delivery, Entry, GroupOptions, OutFrame, open_transport
from eventbus.transports.rabbitmq import RabbitMQTransport

pytestmark = [pytest.mark.rabbitmq, pytest.mark.anyio]

WAIT = 20  # seconds any single wait may take before the test fails
REPO = Path(__file__).resolve().parent.parent


def rabbitmqctl(*args: str) -> str:
    if shutil.which("rabbitmqctl") is None:
        skip_unless_required("rabbitmqctl is not on the PATH")
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


async def close_connections(namespace: str) -> int:
    """Force-close the broker's connections of this test's transports (named ``eventbus
    <namespace>``), as an operator or a failover does; never another client's."""

    def close() -> int:
        # (the JSON formatter prints pids in a form close_connection does not take)
        listed = rabbitmqctl("list_connections", "--no-table-headers", "pid", "client_properties")
        mine = f'{{"connection_name","eventbus {namespace}"}}'
        pids = [line.split("\t", 1)[0] for line in listed.splitlines() if mine in line]
        for pid in pids:
            rabbitmqctl("close_connection", pid, "test")
        return len(pids)

    closed = await anyio.to_thread.run_sync(close)
    assert closed, f"no connection of namespace {namespace} to close"
    return closed


def server_queues(namespace: str) -> dict[str, dict[str, Any]]:
    rows = json.loads(
        rabbitmqctl("list_queues", "name", "type", "durable", "arguments", "--formatter", "json")
    )
    out = {}
    for row in rows:
        if row["name"].startswith(f"eventbus.{namespace}."):
            row["arguments"] = {name: value for name, _type, value in row["arguments"]}
            out[row["name"]] = row
    return out


@pytest.fixture
def amqp_url() -> str:
    return broker_url("rabbitmq")


@pytest.fixture
async def cleanup(amqp_url: str, namespace: str) -> AsyncIterator[None]:
    """Delete every queue and the exchange of the test's namespace afterwards."""
    yield
    names = list(server_queues(namespace))
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel()
        for name in names:
            await channel.queue_delete(name, if_unused=False, if_empty=False)
        await channel.exchange_delete(f"eventbus.{namespace}")
    finally:
        await conn.close()


@pytest.fixture
async def transport(
    amqp_url: str, namespace: str, cleanup: None
) -> AsyncIterator[RabbitMQTransport]:
    t = open_transport(amqp_url, namespace)
    assert isinstance(t, RabbitMQTransport)
    await t.connect()
    try:
        yield t
    finally:
        await t.aclose()


def rid() -> str:
    return str(uuid.uuid4())


def seq_frames(run: str, start: int, n: int) -> list[OutFrame]:
    return [OutFrame(run, b"%06d" % i + b"." * 100) for i in range(start, start + n)]


def check_in_order_without_loss(seqs: list[int], n: int) -> None:
    """Re-published frames may repeat, but nothing is lost and nothing new arrives early."""
    fresh: list[int] = []
    for s in seqs:
        if not fresh or s > fresh[-1]:
            fresh.append(s)
        else:
            assert s in fresh, f"{s} arrived after {fresh[-1]} without having been seen before"
    assert fresh == list(range(n))


# -- 1. topology -----------------------------------------------------------------------


async def test_topology_on_the_server(transport: RabbitMQTransport, namespace: str) -> None:
    run = rid()
    await transport.publish([OutFrame(run, b"a"), OutFrame(run, b"hb", fanout=False)])
    with anyio.fail_after(WAIT):
        async for d in transport.consume("topo", "c1", GroupOptions(start="first")):
            await d.ack()
            break

    queues = server_queues(namespace)
    prefix = f"eventbus.{namespace}"
    log_q = queues[f"{prefix}.log"]
    assert log_q["type"] == "stream" and log_q["durable"]
    assert log_q["arguments"]["x-max-age"] == "3600s"
    assert log_q["arguments"]["x-stream-max-segment-size-bytes"] == 8 * 1024 * 1024
    assert queues[f"{prefix}.registry"]["type"] == "stream"
    run_q = queues[transport.run_queue(run)]
    assert run_q["type"] == "stream" and run_q["durable"]
    group_q = queues[f"{prefix}.group.topo"]
    assert group_q["type"] == "quorum" and group_q["durable"]
    dead_q = queues[f"{prefix}.group.topo.dead"]
    assert dead_q["type"] == "classic" and dead_q["durable"]
    assert f"{prefix}.group.topo.lock" not in queues  # only lives while the group is created

    exchanges = json.loads(
        rabbitmqctl("list_exchanges", "name", "type", "durable", "--formatter", "json")
    )
    assert {"name": prefix, "type": "topic", "durable": True} in exchanges
    bindings = json.loads(
        rabbitmqctl(
            "list_bindings", "source_name", "destination_name", "routing_key", "--formatter", "json"
        )
    )
    ours = {
        (b["destination_name"], b["routing_key"]) for b in bindings if b["source_name"] == prefix
    }
    assert ours == {
        (f"{prefix}.log", "f.#"),
        (f"{prefix}.group.topo", "f.#"),
        (transport.run_queue(run), f"*.{run}"),
    }


async def test_unsafe_run_ids_are_hashed_into_names(transport: RabbitMQTransport) -> None:
    run = "a.b#*/ü " + "x" * 300
    await transport.publish([OutFrame(run, b"1"), OutFrame(run, b"2", final=True)])
    assert len(transport.run_queue(run)) < 255
    got: list[Entry] = []
    with anyio.fail_after(WAIT):
        async for entry in transport.follow(run):
            got.append(entry)
            if len(got) == 2:
                break
    assert [e.data for e in got] == [b"1", b"2"]


async def test_followers_attach_while_the_publisher_creates_the_streams(
    transport: RabbitMQTransport, amqp_url: str, namespace: str
) -> None:
    """RabbitMQ 3.10 answers a second declare of a stream before the stream runs; a
    consumer attached then is refused ("does not have a replica on the local node") or
    its connection is closed. Followers (each its own connection, as in separate
    services) and the publisher race like this whenever followers are there before the
    run: nothing may fail or be lost."""
    followers = [open_transport(amqp_url, namespace) for _ in range(3)]
    runs = [rid() for _ in range(120)]

    async def follow(follower: Any, run: str) -> bytes:
        async for entry in follower.follow(run):
            return bytes(entry.data)
        raise AssertionError("follow ended")

    try:
        for follower in followers:
            await follower.connect()
        with anyio.fail_after(WAIT * 2):
            for start in range(0, len(runs), 20):  # twenty new runs at once, six times
                batch = runs[start : start + 20]
                got = await asyncio.gather(
                    *(follow(f, run) for run in batch for f in followers),
                    *(transport.publish([OutFrame(run, run.encode())]) for run in batch),
                )
                want = [run.encode() for run in batch for _ in followers]
                assert got[: len(want)] == want
    finally:
        for follower in followers:
            await follower.aclose()


async def test_a_channel_the_broker_closed_is_not_reopened_under_its_number(
    amqp_url: str,
) -> None:
    """A follower's probe of a run that has not started closes its channel (404); aiormq
    frees the number before its Close-Ok is out, and a channel opened at once under the
    same number made the broker close the connection ("second 'channel.open' seen") or
    left the new channel reporting itself closed (a publish refused "(None, None)")."""
    from eventbus.transports._rabbit_link import open_channel

    conn = await aio_pika.connect(amqp_url)
    try:
        with anyio.fail_after(WAIT):
            seen = []
            for _ in range(5):
                channel = await open_channel(conn, confirms=False)
                seen.append(channel.number)
                with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                    await channel.declare_queue(f"missing-{uuid.uuid4()}", passive=True)
            channel = await open_channel(conn, confirms=False)
            seen.append(channel.number)
            await channel.declare_queue("", exclusive=True)  # the channel works
        assert len(set(seen)) == len(seen), seen
    finally:
        await conn.close()


# -- 2. forced connection closes -------------------------------------------------------


async def test_publish_loop_survives_forced_close(
    transport: RabbitMQTransport, namespace: str
) -> None:
    run = rid()
    size = 5
    progress = asyncio.Event()
    closed = asyncio.Event()
    first_conn = transport._conn
    batches = 0

    async def publisher() -> None:
        nonlocal batches
        extra = 20  # batches after the close returned: they publish across the reconnect
        while extra:  # bounded: fail_after below, and 20 batches once the close is done
            await transport.publish(seq_frames(run, batches * size, size))
            batches += 1
            if batches == 10:
                progress.set()
            if closed.is_set():
                extra -= 1

    task = asyncio.create_task(publisher())
    with anyio.fail_after(WAIT):
        await progress.wait()
        await close_connections(namespace)
        closed.set()
        await task
    assert transport._conn is not first_conn, "the connection was not replaced"

    n = batches * size
    seqs: list[int] = []
    with anyio.fail_after(WAIT):
        async for entry in transport.follow(run):
            seqs.append(int(entry.data[:6]))
            if seqs[-1] == n - 1:
                break
    check_in_order_without_loss(seqs, n)


async def test_follow_survives_forced_close(
    transport: RabbitMQTransport, amqp_url: str, namespace: str
) -> None:
    run = rid()
    n = 300
    follower = open_transport(amqp_url, namespace)
    await follower.connect()
    entries: list[Entry] = []
    halfway = asyncio.Event()

    async def follow() -> None:
        async for entry in follower.follow(run):
            entries.append(entry)
            if len(entries) == 60:
                halfway.set()
            if int(entry.data[:6]) == n - 1:
                return

    async def publish() -> None:
        for b in range(0, n, 3):
            await transport.publish(seq_frames(run, b, 3))
            if b >= 90:
                await halfway.wait()

    try:
        with anyio.fail_after(WAIT):
            follow_task = asyncio.create_task(follow())
            publish_task = asyncio.create_task(publish())
            await halfway.wait()
            await close_connections(namespace)
            await asyncio.gather(follow_task, publish_task)
    finally:
        await follower.aclose()
    offsets = [int(e.position) for e in entries]
    assert offsets == sorted(set(offsets)), "an entry was yielded twice or out of order"
    check_in_order_without_loss([int(e.data[:6]) for e in entries], n)


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("EVENTBUS_TEST_RESTART_BROKER") != "1",
    reason="restarts the RabbitMQ application (set EVENTBUS_TEST_RESTART_BROKER=1)",
)
async def test_follow_and_consume_survive_a_broker_restart(
    transport: RabbitMQTransport, amqp_url: str, namespace: str
) -> None:
    run, n = rid(), 40
    sub = open_transport(amqp_url, namespace)
    await sub.connect()
    followed: list[bytes] = []
    consumed: list[bytes] = []
    halfway = asyncio.Event()

    async def follow() -> None:
        async for entry in sub.follow(run):
            followed.append(entry.data)
            if len(followed) == n:
                return

    async def consume() -> None:
        async for d in sub.consume("restart", "c1", GroupOptions(start="first")):
            consumed.append(d.data)
            await d.ack()
            if len(set(consumed)) >= n // 2:
                halfway.set()
            if len(set(consumed)) == n:
                return

    try:
        await transport.publish([OutFrame(run, b"%d" % i) for i in range(n // 2)])
        tasks = [asyncio.create_task(follow()), asyncio.create_task(consume())]
        with anyio.fail_after(60):
            await halfway.wait()
            await anyio.to_thread.run_sync(rabbitmqctl, "stop_app")
            await anyio.to_thread.run_sync(rabbitmqctl, "start_app")
            await anyio.to_thread.run_sync(rabbitmqctl, "await_startup")
            await transport.publish([OutFrame(run, b"%d" % i) for i in range(n // 2, n)])
            await asyncio.gather(*tasks)
    finally:
        await sub.aclose()
    assert followed == [b"%d" % i for i in range(n)]
    assert sorted(set(consumed)) == sorted(b"%d" % i for i in range(n))


# -- 3. a consumer process killed while holding deliveries -----------------------------

CONSUMER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from eventbus.transports import GroupOptions, open_transport

    async def main() -> None:
        url, namespace, group = sys.argv[1:4]
        t = open_transport(url, namespace)
        await t.connect()
        opts = GroupOptions(start="first", prefetch=10, visibility_timeout=600, max_deliveries=2)
        async for d in t.consume(group, "doomed", opts):
            print(d.data.decode(), d.deliveries, flush=True)  # never acked

    asyncio.run(main())
    """
)


async def test_killed_consumer_process_loses_nothing(
    transport: RabbitMQTransport, amqp_url: str, namespace: str, tmp_path: Path
) -> None:
    group = "crash"
    opts = GroupOptions(start="first", prefetch=10, visibility_timeout=600, max_deliveries=2)
    run = rid()
    names = [f"job-{i}" for i in range(5)]
    await transport.publish([OutFrame(run, name.encode()) for name in names])

    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(script), amqp_url, namespace, group,
        stdout=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    held: list[str] = []
    try:
        assert proc.stdout is not None
        with anyio.fail_after(WAIT):
            while len(held) < len(names):
                line = await proc.stdout.readline()
                assert line, "the consumer process exited early"
                data, deliveries = line.decode().split()
                assert deliveries == "1"
                held.append(data)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    assert sorted(held) == names

    # the survivor gets everything the dead process held; it acks all but one, which comes
    # back after the survivor's (short) visibility timeout
    survivor_opts = GroupOptions(start="first", visibility_timeout=0.5, max_deliveries=2)
    got: dict[str, int] = {}
    with anyio.fail_after(WAIT):
        async for d in transport.consume(group, "survivor", survivor_opts):
            got[d.data.decode()] = d.deliveries
            if d.data != b"job-0":
                await d.ack()
            if len(got) == len(names):
                break
    assert got == dict.fromkeys(names, 2)

    # job-0 was delivered twice and never acked: it goes to the dead letters, not to us.
    # Each probe watches 0.5 s (the visibility timeout) for a delivery that must not come;
    # the probes follow each other until the frame is dead, so a wrong one lands in a probe
    with anyio.fail_after(WAIT):
        while not await transport.dead_letters(group):
            probe = asyncio.create_task(take_one(transport, group, opts))
            await asyncio.wait({probe}, timeout=0.5)
            assert not probe.done(), "a frame past max_deliveries was delivered again"
            probe.cancel()
            await asyncio.gather(probe, return_exceptions=True)
    dead = await transport.dead_letters(group)
    assert [d.data for d in dead] == [b"job-0"]
    # 2, or more when a probe consumer was cancelled with job-0 prefetched but not yet
    # handled: a quorum queue (3.10) counts every return as a delivery
    assert dead[0].deliveries >= 2
    assert dead[0].reason == f"not acked after {dead[0].deliveries} deliveries"
    assert await transport.dead_letters(group) == dead  # reading does not remove


async def take_one(transport: RabbitMQTransport, group: str, opts: GroupOptions) -> Delivery:
    async for d in transport.consume(group, "probe", opts):
        return d
    raise AssertionError("consume ended")


async def test_hung_consumer_loses_its_frame_after_the_visibility_timeout(
    transport: RabbitMQTransport,
) -> None:
    opts = GroupOptions(start="first", visibility_timeout=0.5, max_deliveries=5)
    run = rid()
    await transport.publish([OutFrame(run, b"slow")])
    hung = transport.consume("vis", "hung", opts)
    with anyio.fail_after(WAIT):
        first = await hung.__anext__()
    try:
        with anyio.fail_after(WAIT):
            second = await take_one(transport, "vis", opts)  # another consumer, same group
        assert second.data == b"slow" and second.deliveries == 2
        await first.ack()  # too late: dropped without breaking anything
        await second.ack()
    finally:
        await hung.aclose()  # type: ignore[attr-defined]


async def published_run(pub: eventbus.Publisher, sub: eventbus.Subscriber) -> tuple[str, int]:
    """Publish one run; its id and how many records a group gets of it (events + end)."""
    run = rid()
    runnable, value, _ = CASES["prompt_model_parser"]()
    await pub.run(runnable, value, config={"run_id": run})
    with anyio.fail_after(WAIT):
        events = [e async for e in sub.astream_events(run)]
    return run, len(events) + 1


async def test_settles_after_a_connection_loss_are_dropped_and_nothing_is_lost(
    amqp_url: str, namespace: str, cleanup: None
) -> None:
    """Issue 11: ack() of deliveries received before a connection loss raised aiormq's
    ChannelInvalidStateError and the consume loop died. Now the settles are dropped, the
    loop carries on, and the held frames come back."""
    seen: list[tuple[int, bool]] = []  # (seq, redelivered) of every record handed to us
    held: list[eventbus.Message] = []
    holding = asyncio.Event()
    complete = asyncio.Event()
    total = 0

    async def consume(sub: eventbus.Subscriber) -> None:
        opts: dict[str, Any] = {"start": "first", "prefetch": 5, "visibility_timeout": 600}
        async for msg in sub.consume("held", "c1", **opts):
            seen.append((msg.seq, msg.redelivered))
            if len(held) < 3 and not holding.is_set():
                held.append(msg)  # not settled until the connection is gone
                if len(held) == 3:
                    holding.set()
                continue
            await msg.ack()
            back = {seq for seq, again in seen if again}
            if len({seq for seq, _ in seen}) == total and {m.seq for m in held} <= back:
                complete.set()

    async with (
        eventbus.Publisher(amqp_url, namespace) as pub,
        eventbus.Subscriber(amqp_url, namespace) as sub,
    ):
        _, total = await published_run(pub, sub)
        task = asyncio.create_task(consume(sub))
        try:
            with anyio.fail_after(WAIT * 2):
                await holding.wait()
                await close_connections(namespace)  # this test's connections only
                for msg in held:
                    await msg.ack()  # dropped: the frame comes back
                await complete.wait()
            assert not task.done(), "the consume loop died"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    distinct = {seq for seq, _ in seen}
    lost = total - len(distinct)
    duplicated = len(seen) - len(distinct)
    assert lost == 0 and distinct == set(range(1, total + 1))  # seqs count from 1
    assert {m.seq for m in held} <= {seq for seq, again in seen if again}
    assert duplicated >= len(held)  # the held ones at least, redelivered


async def test_a_deleted_group_queue_is_declared_again(
    amqp_url: str, namespace: str, cleanup: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11: a consumer whose group queue was deleted retried in a hot loop and never
    consumed again (its probe looked at the dead-letter queue). Now the queue is declared
    again with its binding, with one warning, and a later run arrives whole."""
    group = "vanishing"
    got: dict[str, set[int]] = {}
    counts: dict[str, int] = {}
    complete: dict[str, asyncio.Event] = {}

    async def consume(sub: eventbus.Subscriber) -> None:
        async for msg in sub.consume(group, "c1", start="first", prefetch=10):
            got.setdefault(msg.run_id, set()).add(msg.seq)
            await msg.ack()
            if msg.run_id in counts and len(got[msg.run_id]) == counts[msg.run_id]:
                complete[msg.run_id].set()

    caplog.set_level("WARNING", logger="eventbus.transports.rabbitmq")
    async with (
        eventbus.Publisher(amqp_url, namespace) as pub,
        eventbus.Subscriber(amqp_url, namespace) as sub,
    ):
        first, counts_first = await published_run(pub, sub)
        counts[first] = counts_first
        complete[first] = asyncio.Event()
        if len(got.get(first, ())) == counts_first:
            complete[first].set()
        task = asyncio.create_task(consume(sub))
        try:
            with anyio.fail_after(WAIT * 3):
                await complete[first].wait()
                queue = f"eventbus.{namespace}.group.{group}"
                conn = await aio_pika.connect(amqp_url)  # an operator's own connection
                try:
                    channel = await conn.channel()
                    await channel.queue_delete(queue, if_unused=False, if_empty=False)
                finally:
                    await conn.close()
                # the consumer notices (a broker cancel) and declares the queue again
                while queue not in await anyio.to_thread.run_sync(server_queues, namespace):
                    assert not task.done(), "the consume loop died"
                second = rid()
                complete[second] = asyncio.Event()
                runnable, value, _ = CASES["prompt_model_parser"]()
                await pub.run(runnable, value, config={"run_id": second})
                events = [e async for e in sub.astream_events(second)]
                counts[second] = len(events) + 1
                if len(got.get(second, ())) == counts[second]:
                    complete[second].set()
                await complete[second].wait()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    # 0 lost of the run after the incident (seqs count from 1)
    assert got[second] == set(range(1, counts[second] + 1))
    vanished = [r for r in caplog.records if "vanished" in r.getMessage()]
    assert len(vanished) == 1, [r.getMessage() for r in vanished]


async def test_reject_keeps_order_of_dead_letters(transport: RabbitMQTransport) -> None:
    opts = GroupOptions(start="first")
    run = rid()
    await transport.publish([OutFrame(run, b"%d" % i) for i in range(5)])
    with anyio.fail_after(WAIT):
        seen = 0
        async for d in transport.consume("rejects", "c1", opts):
            await d.reject(f"bad {d.data.decode()}")
            seen += 1
            if seen == 5:
                break
    dead = await transport.dead_letters("rejects", count=3)
    assert [(d.data, d.reason, d.deliveries) for d in dead] == [
        (b"0", "bad 0", 1),
        (b"1", "bad 1", 1),
        (b"2", "bad 2", 1),
    ]
    assert [d.data for d in await transport.dead_letters("rejects")] == [
        b"%d" % i for i in range(5)
    ]


async def test_sweep_deletes_expired_run_streams(
    amqp_url: str, namespace: str, cleanup: None
) -> None:
    t = open_transport(amqp_url, namespace, retention=0.2, sweep_interval=3600)
    assert isinstance(t, RabbitMQTransport)
    await t.connect()
    try:
        done, running = rid(), rid()
        await t.publish([OutFrame(done, b"x", final=True), OutFrame(running, b"y")])
        assert t.run_queue(done) in server_queues(namespace)
        with anyio.fail_after(WAIT):
            while True:  # bounded by fail_after; each round trips through the broker
                if await t.sweep() == [done]:
                    break
        queues = server_queues(namespace)
        assert t.run_queue(done) not in queues
        assert t.run_queue(running) in queues
    finally:
        await t.aclose()


async def test_delete_namespace_removes_everything(
    amqp_url: str, namespace: str, cleanup: None
) -> None:
    t = open_transport(amqp_url, namespace)
    assert isinstance(t, RabbitMQTransport)
    await t.connect()
    try:
        run = rid()
        await t.publish([OutFrame(run, b"x")])
        with anyio.fail_after(WAIT):
            async for d in t.consume("doomed", "c1", GroupOptions(start="first")):
                await d.reject("for the dead letters")
                break
        assert len(server_queues(namespace)) == 5  # run, log, registry, group, dead letters
        await t.delete_namespace()
        assert server_queues(namespace) == {}
        exchanges = rabbitmqctl("list_exchanges", "name")
        assert f"eventbus.{namespace}\n" not in exchanges
    finally:
        await t.aclose()


# -- 4. errors -------------------------------------------------------------------------


def with_credentials(url: str, user: str, password: str, vhost: str | None = None) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = f"{user}:{password}@{parts.hostname}:{parts.port or 5672}"
    path = parts.path if vhost is None else "/" + vhost
    return urlunsplit((parts.scheme, netloc, path, parts.query, ""))


async def test_wrong_password_is_an_authentication_error(amqp_url: str, namespace: str) -> None:
    secret = "not-the-password-" + uuid.uuid4().hex[:6]
    t = open_transport(with_credentials(amqp_url, "guest", secret), namespace)
    with anyio.fail_after(WAIT), pytest.raises(AuthenticationError) as info:
        await t.connect()
    assert secret not in str(info.value) and "***" in str(info.value)
    await t.aclose()


async def test_unknown_vhost_is_an_authentication_error(amqp_url: str, namespace: str) -> None:
    parts_user = amqp_url.split("://", 1)[1].split("@", 1)[0]
    user, password = parts_user.split(":", 1)
    t = open_transport(with_credentials(amqp_url, user, password, "no-such-vhost"), namespace)
    with anyio.fail_after(WAIT), pytest.raises(AuthenticationError) as info:
        await t.connect()
    assert f":{password}@" not in str(info.value) and "***" in str(info.value)
    await t.aclose()


async def test_unreachable_broker_is_a_connect_error_quickly(namespace: str) -> None:
    with socket_closed_port() as port:
        t = open_transport(f"amqp://guest:guest@127.0.0.1:{port}/", namespace, publish_timeout=0.5)
        with anyio.fail_after(5), pytest.raises(ConnectError):
            await t.connect()
        with anyio.fail_after(5), pytest.raises(PublishError):
            await t.publish([OutFrame(rid(), b"x")])
        await t.aclose()


def socket_closed_port() -> Any:
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed() -> Iterator[int]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        yield port  # nothing listens on it any more

    return closed()


@pytest.mark.parametrize(
    ("query", "kwargs"),
    [
        ("?bogus=1", {}),
        ("", {"bogus": 1}),
        ("?publish_timeout=soon", {}),
        ("", {"persistent": "maybe"}),
        ("", {"retention": -1}),
    ],
)
async def test_bad_options_are_configuration_errors(
    amqp_url: str, namespace: str, query: str, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ConfigurationError):
        open_transport(amqp_url.rstrip("/") + "/" + query, namespace, **kwargs)


async def test_aio_pika_options_pass_through(amqp_url: str, namespace: str, cleanup: None) -> None:
    t = open_transport(amqp_url + "?heartbeat=5&name=eventbus-test", namespace, persistent=False)
    await t.connect()
    try:
        run = rid()
        await t.publish([OutFrame(run, b"x")])
        with anyio.fail_after(WAIT):
            async for entry in t.follow(run):
                assert entry.data == b"x"
                break
    finally:
        await t.aclose()
