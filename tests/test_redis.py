"""Redis Streams transport: what the byte-level contract suite cannot see.

Server-side retention, connection kills, a consumer SIGKILLed in another process, a
flushed database, error translation, and prompt cancellation.

The server may be shared (several suites use db 15 at once), so connection kills target
this test's own connections by client name instead of ``CLIENT KILL TYPE normal``, and
the FLUSHDB test flushes a scratch database (``EVENTBUS_TEST_REDIS_SCRATCH_DB``, default
14), not the one the other tests use.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import anyio
import pytest
import redis.asyncio as aioredis
from conftest import broker_url, skip_unless_required

from eventbus import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    PublishError,
    TransportError,
)
from eventbus.transports import Delivery, Entry, GroupOptions, OutFrame, open_transport
from eventbus.transports.redis import RedisTransport

pytestmark = [pytest.mark.redis, pytest.mark.anyio]

WAIT = 20  # seconds any single wait may take before the test fails
ROOT = Path(__file__).resolve().parents[1]


def rid() -> str:
    return str(uuid.uuid4())


def run_key(ns: str, run_id: str) -> str:
    return f"eventbus:{{{ns}:{run_id}}}:run"


def events_key(ns: str) -> str:
    return f"eventbus:{{{ns}}}:events"


def dead_key(ns: str, group: str) -> str:
    return f"eventbus:{{{ns}}}:dead:{group}"


@pytest.fixture
def url() -> str:
    return broker_url("redis")


@pytest.fixture
async def raw(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url, protocol=2)
    try:
        yield client
    finally:
        await client.aclose()


async def opened(url: str, namespace: str, **options: object) -> RedisTransport:
    t = open_transport(url, namespace, **options)
    assert isinstance(t, RedisTransport)
    await t.connect()
    return t


async def kill_clients(raw: aioredis.Redis, name: str) -> int:
    """CLIENT KILL the connections named ``name`` (never the raw client, never others')."""
    killed = 0
    for client in await raw.client_list():
        if client.get("name") == name:
            killed += await raw.execute_command(  # type: ignore[no-untyped-call]
                "CLIENT", "KILL", "ID", client["id"], "SKIPME", "yes"
            )
    return killed


# -- 1. retention, observed on the server ---------------------------------------------


async def test_ttls_and_trimming_on_the_server(
    url: str, namespace: str, raw: aioredis.Redis
) -> None:
    t = await opened(url, namespace, retention=3600, abandon_after=7200, maxlen=100)
    try:
        live, done = rid(), rid()
        await t.publish([OutFrame(live, b"a"), OutFrame(done, b"b")])
        await t.publish([OutFrame(done, b"c", final=True)])
        assert 7190 <= await raw.ttl(run_key(namespace, live)) <= 7200
        assert 3590 <= await raw.ttl(run_key(namespace, done)) <= 3600
        # a batch that ends a run sets the retention TTL even after earlier frames in it
        both = rid()
        await t.publish([OutFrame(both, b"x"), OutFrame(both, b"y", final=True)])
        assert 3590 <= await raw.ttl(run_key(namespace, both)) <= 3600

        # the group stream is capped (approximately: whole macro nodes of 100 entries)
        for i in range(20):
            await t.publish([OutFrame(live, b"%d" % (i * 50 + j)) for j in range(50)])
        length = await raw.xlen(events_key(namespace))
        assert 100 <= length <= 100 + 150, length
        assert await raw.ttl(events_key(namespace)) == -1  # it holds the groups: no TTL
        # ... while the run stream keeps everything
        assert await raw.xlen(run_key(namespace, live)) == 1 + 20 * 50
    finally:
        await t.aclose()


async def test_dead_letters_are_capped(url: str, namespace: str, raw: aioredis.Redis) -> None:
    t = await opened(url, namespace, dead_maxlen=20)
    try:
        run = rid()
        n = 300
        await t.publish([OutFrame(run, b"%d" % i) for i in range(n)])
        got = 0
        with anyio.fail_after(WAIT):
            async for d in t.consume("cap", "c1", GroupOptions(start="first")):
                await d.reject("test")
                got += 1
                if got == n:
                    break
        length = await raw.xlen(dead_key(namespace, "cap"))
        assert 20 <= length <= 20 + 150, length
        dead = await t.dead_letters("cap", count=5)
        assert len(dead) == 5 and all(d.reason == "test" and d.deliveries == 1 for d in dead)
    finally:
        await t.aclose()


# -- 2. connections killed under a publisher and a follower ----------------------------


async def test_publish_survives_killed_connections(
    url: str, namespace: str, raw: aioredis.Redis
) -> None:
    name = f"{namespace}-pub"
    t = await opened(url, namespace, client_name=name, publish_timeout=20)
    run = rid()
    n, per_batch = 600, 3
    kills = 0
    finished = anyio.Event()

    async def killer() -> None:
        nonlocal kills
        while not finished.is_set():
            kills += await kill_clients(raw, name)
            await anyio.sleep(0.003)  # pacing the chaos, not synchronising

    try:
        with anyio.fail_after(WAIT * 2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(killer)
                for i in range(0, n, per_batch):
                    await t.publish(
                        [
                            OutFrame(run, b"%d" % j, final=j == n - 1)
                            for j in range(i, i + per_batch)
                        ]
                    )
                finished.set()
    finally:
        await t.aclose()
    assert kills >= 3, "the test did not kill anything"
    rows: Any = await raw.xrange(run_key(namespace, run))
    stored = [int(f[b"data"]) for _, f in rows]
    # Nothing lost, nothing reordered; a retried batch may append again a prefix of
    # itself that the killed attempt had already appended (the core de-duplicates by
    # sequence number): so a frame is either the next one or a repeat of an earlier one.
    expected = 0
    for value in stored:
        assert value <= expected, f"frame {value} before frame {expected}: lost or reordered"
        if value == expected:
            expected += 1
    assert expected == n


async def test_a_refused_or_cancelled_batch_leaves_publishing_in_step(
    url: str, namespace: str, raw: aioredis.Redis
) -> None:
    # publish packs a batch's commands and reads their replies itself: a batch whose
    # replies were not all read (a refusal half-way, a cancellation) must not leave a
    # reply behind for the next batch to take as its own
    t = await opened(url, namespace, publish_timeout=5)
    good, bad = rid(), rid()
    await raw.set(run_key(namespace, bad), "not a stream")
    try:
        with pytest.raises(PublishError, match="WRONGTYPE"):
            await t.publish([OutFrame(bad, b"b0"), OutFrame(good, b"g0")])
        big = b"x" * 200_000
        for i in range(20):
            task = asyncio.create_task(t.publish([OutFrame(good, big), OutFrame(good, big)]))
            for _ in range(i % 4):  # cancel at a different point of the batch each time
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        await t.publish([OutFrame(good, b"g1"), OutFrame(good, b"g2", final=True)])
    finally:
        await t.aclose()
    rows: Any = await raw.xrange(run_key(namespace, good))
    small = [f[b"data"] for _, f in rows if f[b"data"] != big]
    assert small == [b"g0", b"g1", b"g2"]
    assert await raw.pttl(run_key(namespace, good)) > 0  # the final frame's TTL was set


async def test_follow_survives_killed_connections(
    url: str, namespace: str, raw: aioredis.Redis
) -> None:
    name = f"{namespace}-follow"
    follower = await opened(url, namespace, client_name=name)
    publisher = await opened(url, namespace)
    run = rid()
    n = 200
    got: list[Entry] = []
    kills = 0

    async def follow() -> None:
        async for entry in follower.follow(run):
            got.append(entry)
            if len(got) == n:
                return

    async def publish() -> None:
        for i in range(n):
            await publisher.publish([OutFrame(run, b"%d" % i)])
            await anyio.sleep(0.002)  # spread the frames over many reads

    async def killer(done: anyio.Event) -> None:
        nonlocal kills
        while not done.is_set():
            kills += await kill_clients(raw, name)
            await anyio.sleep(0.01)  # pacing the kills, not synchronising

    try:
        done = anyio.Event()
        with anyio.fail_after(WAIT * 2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(killer, done)
                tg.start_soon(publish)
                await follow()
                done.set()
    finally:
        await follower.aclose()
        await publisher.aclose()
    assert kills >= 3, "the test did not kill anything"
    stored: Any = await raw.xrange(run_key(namespace, run))
    assert [e.data for e in got] == [b"%d" % i for i in range(n)]
    assert [e.position for e in got] == [i.decode() for i, _ in stored]


async def test_follow_resumes_inclusive_from_any_position(url: str, namespace: str) -> None:
    t = await opened(url, namespace)
    try:
        run = rid()
        await t.publish([OutFrame(run, b"%d" % i) for i in range(5)])
        entries: list[Entry] = []
        with anyio.fail_after(WAIT):
            async for e in t.follow(run):
                entries.append(e)
                if len(entries) == 5:
                    break
            for k, start in enumerate(entries):
                async for e in t.follow(run, start=start.position):
                    assert e == entries[k]
                    break
        with pytest.raises(ConfigurationError):
            async for _ in t.follow(run, start="not-an-id"):
                pass
    finally:
        await t.aclose()


# -- 3. a consumer SIGKILLed in another process -----------------------------------------

CHILD = """
import asyncio, sys
from eventbus.transports import GroupOptions, open_transport

async def main(url, namespace, group):
    t = open_transport(url, namespace)
    await t.connect()
    opts = GroupOptions(start="first", prefetch=5, visibility_timeout=1.0, max_deliveries=3)
    async for d in t.consume(group, "doomed", opts):
        print(d.position, d.data.decode(), flush=True)  # and never ack

asyncio.run(main(*sys.argv[1:4]))
"""


async def test_sigkilled_consumer_entries_go_to_the_survivor(url: str, namespace: str) -> None:
    t = await opened(url, namespace)
    group = "crash"
    opts = GroupOptions(start="first", prefetch=20, visibility_timeout=1.0, max_deliveries=3)
    run = rid()
    frames = [b"poison"] + [b"good-%d" % i for i in range(1, 10)]
    await t.publish([OutFrame(run, f) for f in frames])
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        url,
        namespace,
        group,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        held: dict[str, bytes] = {}
        assert child.stdout is not None
        with anyio.fail_after(WAIT):
            while len(held) < 5:  # prefetch=5: the child holds five, un-acked
                line = (await child.stdout.readline()).decode().split()
                assert line, "the child consumer exited early"
                held[line[0]] = line[1].encode()
        assert held[min(held)] == b"poison"
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()

    received: list[Delivery] = []
    good = {f for f in frames if f != b"poison"}
    acked: set[bytes] = set()

    async def survive() -> None:
        async for d in t.consume(group, "survivor", opts):
            received.append(d)
            if d.data != b"poison":  # the poison is never acked
                await d.ack()
                acked.add(d.data)

    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(survive)
                # bounded poll: nothing to wait on but the server's own dead letters
                for _ in range(WAIT * 10):
                    if acked == good and await t.dead_letters(group):
                        break
                    await anyio.sleep(0.1)
                tg.cancel_scope.cancel()
    finally:
        await t.aclose()
    by_position = {d.position: d for d in received}
    for position, data in held.items():  # everything the dead child held arrived
        assert by_position[position].data == data
        assert by_position[position].deliveries >= 2
    # the frames the child never got came to the survivor first, exactly once
    fresh = [d for d in received if d.position not in held]
    assert sorted(d.data for d in fresh) == sorted(good - set(held.values()))
    assert all(d.deliveries == 1 for d in fresh)
    poison = [d.deliveries for d in received if d.data == b"poison"]
    assert poison == [2, 3]  # the child had the first delivery; never a fourth
    t2 = await opened(url, namespace)
    try:
        dead = await t2.dead_letters(group)
    finally:
        await t2.aclose()
    assert [(d.data, d.deliveries, d.position) for d in dead] == [(b"poison", 3, min(held))]
    assert "deliver" in dead[0].reason


# -- 4. the database flushed under a running consumer ------------------------------------


def scratch_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        skip_unless_required("the FLUSHDB test needs a redis:// URL to pick a scratch database")
    db = os.environ.get("EVENTBUS_TEST_REDIS_SCRATCH_DB", "14")
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


async def commandstat(raw: aioredis.Redis, command: str) -> int:
    stats = await raw.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


async def test_flushdb_under_a_consumer(namespace: str) -> None:
    url = scratch_url(broker_url("redis"))
    raw = aioredis.Redis.from_url(url, protocol=2)
    t = await opened(url, namespace, block=0.5)
    got: list[bytes] = []
    first = anyio.Event()
    arrived = anyio.Event()
    run = rid()

    async def consume() -> None:
        async for d in t.consume("survives-flush", "c1", GroupOptions(start="new")):
            got.append(d.data)
            await d.ack()
            first.set()
            if d.data == b"after":
                arrived.set()

    try:
        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                while not first.is_set():  # the group exists once the consumer made it
                    await t.publish([OutFrame(run, b"before")])
                    with anyio.move_on_after(0.05):
                        await first.wait()
                await raw.flushdb()
                # count XREADGROUP calls over a window with no frames at all: the
                # consumer must block, not spin, after it recreated its group
                calls = await commandstat(raw, "xreadgroup")
                await anyio.sleep(1.0)
                calls = await commandstat(raw, "xreadgroup") - calls
                await t.publish([OutFrame(run, b"after")])
                await arrived.wait()
                tg.cancel_scope.cancel()
    finally:
        await t.aclose()
        await raw.aclose()
    assert got[-1] == b"after" and set(got) == {b"before", b"after"}
    # block=0.5 s: a handful of calls a second, not thousands (other clients of the
    # scratch database could add some, hence the slack)
    assert calls <= 200, calls


# -- 5. errors -------------------------------------------------------------------------


async def test_wrong_password_is_an_authentication_error(url: str, namespace: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        skip_unless_required("needs a redis:// URL")
    secret = "s3cr3t-Pw-9f2c"
    host = parts.hostname or "127.0.0.1"
    bad = f"{parts.scheme}://:{secret}@{host}:{parts.port or 6379}{parts.path}"
    t = open_transport(bad, namespace)
    with anyio.fail_after(WAIT), pytest.raises(AuthenticationError) as info:
        await t.connect()
    assert "***" in str(info.value)
    assert secret not in str(info.value)
    assert secret not in repr(info.value.__cause__)
    assert secret not in repr(t)
    # with a user name, the ACL path (WRONGPASS) maps the same way
    t = open_transport(f"{parts.scheme}://nobody:{secret}@{host}:{parts.port or 6379}/0", namespace)
    with anyio.fail_after(WAIT), pytest.raises(AuthenticationError) as info:
        await t.connect()
    assert secret not in str(info.value)


async def test_unreachable_is_a_connect_error_at_once(namespace: str) -> None:
    t = open_transport("redis://127.0.0.1:1/0", namespace)
    with anyio.fail_after(6), pytest.raises(ConnectError):
        await t.connect()


@pytest.mark.parametrize(
    ("query", "options"),
    [
        ("?bogus=1", {}),
        ("", {"bogus": 1}),
        ("?maxlen=lots", {}),
        ("", {"retention": -1}),
        ("?protocol=3", {}),  # the transport pins RESP2
        ("?socket_timeout=5", {}),  # see RedisTransport: it would break cancellation
    ],
)
async def test_bad_options_are_configuration_errors(
    url: str, namespace: str, query: str, options: dict[str, object]
) -> None:
    with pytest.raises(ConfigurationError):
        open_transport(url + query, namespace, **options)


async def test_bad_database_is_a_configuration_error(url: str, namespace: str) -> None:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        skip_unless_required("needs a redis:// URL")
    t = open_transport(urlunsplit((parts.scheme, parts.netloc, "/999", "", "")), namespace)
    with anyio.fail_after(WAIT), pytest.raises(ConfigurationError):
        await t.connect()


async def test_options_from_the_query_string(url: str, namespace: str) -> None:
    sep = "&" if "?" in url else "?"
    t = open_transport(f"{url}{sep}retention=7200&maxlen=50&abandon_after=100", namespace)
    assert isinstance(t, RedisTransport)
    assert (t.options.retention, t.options.maxlen, t.options.abandon_after) == (7200, 50, 100)


# -- prompt cancellation (redis-py's socket_timeout path swallows it on Python < 3.12) ---


async def test_cancellation_is_prompt_at_any_moment(url: str, namespace: str) -> None:
    t = await opened(url, namespace)
    rng = random.Random(7)
    run = rid()
    await t.publish([OutFrame(run, b"x")])

    async def drain_follow() -> None:
        async for _ in t.follow(run):
            pass

    async def drain_group() -> None:
        async for d in t.consume("cancel", "c1", GroupOptions(start="first")):
            await d.ack()

    try:
        for i in range(60):
            task = asyncio.create_task(drain_follow() if i % 2 else drain_group())
            await asyncio.sleep(rng.uniform(0, 0.004))
            task.cancel()
            done, _ = await asyncio.wait({task}, timeout=2)
            assert done, (
                f"iteration {i}: a cancelled {'follow' if i % 2 else 'consume'} kept running"
            )
    finally:
        await t.aclose()


async def test_prefetch_bounds_unacked_deliveries(url: str, namespace: str) -> None:
    t = await opened(url, namespace)
    try:
        run = rid()
        await t.publish([OutFrame(run, b"%d" % i) for i in range(10)])
        opts = GroupOptions(start="first", prefetch=3, visibility_timeout=60)
        send, receive = anyio.create_memory_object_stream[Delivery](100)

        async def take() -> None:
            async for d in t.consume("pf", "c1", opts):
                await send.send(d)

        async def nothing_more(within: float) -> None:
            with anyio.move_on_after(within):
                extra = await receive.receive()
                pytest.fail(f"got {extra.data!r} beyond prefetch")

        with anyio.fail_after(WAIT):
            async with anyio.create_task_group() as tg:
                tg.start_soon(take)
                held = [await receive.receive() for _ in range(3)]
                await nothing_more(0.5)
                await held[0].ack()  # one slot frees: exactly one more arrives
                assert (await receive.receive()).data == b"3"
                await nothing_more(0.3)
                tg.cancel_scope.cancel()
        send.close()
        receive.close()
    finally:
        await t.aclose()


async def test_close_stops_followers_consumers_and_publishing(
    url: str, namespace: str, raw: aioredis.Redis
) -> None:
    name = f"{namespace}-closing"
    t = await opened(url, namespace, client_name=name)
    run = rid()

    async def follow() -> None:
        async for _ in t.follow(run):
            pass

    async def consume() -> None:
        async for _ in t.consume("closing", "c1", GroupOptions()):
            pass

    tasks = [asyncio.create_task(follow()), asyncio.create_task(consume())]
    # close them while they are blocked in XREAD / XREADGROUP on the server (what the
    # server says, polled: the transport has no readiness signal of its own)
    with anyio.fail_after(WAIT):
        while True:
            blocked = {
                c["cmd"]
                for c in await raw.client_list()
                if c.get("name") == name and "b" in c.get("flags", "")
            }
            if {"xread", "xreadgroup"} <= blocked:
                break
            await asyncio.sleep(0.01)  # a bounded poll of the server's state
    await t.aclose()
    with anyio.fail_after(5):
        for task in tasks:
            with pytest.raises(TransportError):
                await task
    with pytest.raises(PublishError):
        await t.publish([OutFrame(run, b"x")])


async def test_publish_without_connect_connects_lazily(url: str, namespace: str) -> None:
    t = open_transport(url, namespace)
    try:
        run = rid()
        await t.publish([OutFrame(run, b"x", final=True)])
        with anyio.fail_after(WAIT):
            async for e in t.follow(run):
                assert e.data == b"x"
                break
    finally:
        await t.aclose()


# -- a Redis restart without persistence (a private server, started and stopped here) ---


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, Callable[[], None], Callable[[], None]]]:
    """A redis-server of our own on a free port: (url, start, stop)."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_unless_required("redis-server is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs: list[subprocess.Popen[bytes]] = []

    def start() -> None:
        procs.append(
            subprocess.Popen(
                [
                    binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(tmp_path),
                ],
                stdout=subprocess.DEVNULL,
            )
        )

    def stop() -> None:
        for proc in procs:
            proc.kill()
            proc.wait()
        procs.clear()

    start()
    try:
        yield f"redis://127.0.0.1:{port}/0", start, stop
    finally:
        stop()


@pytest.mark.slow
async def test_redis_restart_without_persistence(
    namespace: str, private_redis: tuple[str, Callable[[], None], Callable[[], None]]
) -> None:
    url, start, stop = private_redis
    with anyio.fail_after(WAIT):
        while True:  # wait for the private server to listen
            try:
                probe = await opened(url, namespace)
                break
            except ConnectError:
                await anyio.sleep(0.05)
    await probe.aclose()
    pub = await opened(url, namespace, publish_timeout=15)
    sub = await opened(url, namespace)
    fol = await opened(url, namespace)
    run = rid()
    n, outage_at = 40, 15
    consumed: set[int] = set()
    followed: list[int] = []
    all_consumed, all_followed = anyio.Event(), anyio.Event()
    # frames published before the crash are lost with it unless already read: wait for them
    consumed_before, followed_before = anyio.Event(), anyio.Event()

    async def consume() -> None:
        async for d in sub.consume("g", "c", GroupOptions(start="first")):
            consumed.add(int(d.data))
            await d.ack()
            if len(consumed) == outage_at:
                consumed_before.set()
            if len(consumed) == n:
                all_consumed.set()

    async def follow() -> None:
        async for e in fol.follow(run):
            followed.append(int(e.data))
            if len(followed) == outage_at:
                followed_before.set()
            if len(followed) == n:
                all_followed.set()

    try:
        with anyio.fail_after(WAIT * 2):
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                tg.start_soon(follow)
                for i in range(n):
                    if i == outage_at:
                        await consumed_before.wait()
                        await followed_before.wait()
                        stop()  # SIGKILL: everything in memory is gone
                        asyncio.get_running_loop().call_later(1.0, start)
                    await pub.publish([OutFrame(run, b"%d" % i)])  # blocks through the outage
                    await anyio.sleep(0.01)  # pacing, so reads interleave with publishes
                await all_consumed.wait()
                await all_followed.wait()
                tg.cancel_scope.cancel()
    finally:
        for t in (pub, sub, fol):
            await t.aclose()
    assert consumed == set(range(n))  # the group was recreated and missed nothing new
    assert followed == list(range(n))  # the follower went on in the new stream
