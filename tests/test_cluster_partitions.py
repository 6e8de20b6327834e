"""Partitioned group streams (``partitions=P``) on one Redis node and on the Redis Cluster:
a group reads every partition, a run keeps its order, competing consumers share the
partitions, redelivery and dead letters work per partition, and P cannot change under a
live namespace."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Literal

import anyio
import pytest
import redis.asyncio as aioredis
from conftest import broker_url
from redis.asyncio.cluster import RedisCluster

from eventbus import ConfigurationError
from eventbus.transports import Delivery, GroupOptions, OutFrame, open_transport
from eventbus.transports.redis import RedisTransport

pytestmark = [pytest.mark.anyio, pytest.mark.redis]

WAIT = 20
RUNS, FRAMES = 24, 5


@pytest.fixture(
    params=[pytest.param("redis"), pytest.param("redis_cluster", marks=pytest.mark.redis_cluster)]
)
def base_url(request: pytest.FixtureRequest) -> str:
    return str(broker_url(request.param))


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


async def opened(url: str, namespace: str, **options: object) -> RedisTransport:
    t = open_transport(url, namespace, **options)
    assert isinstance(t, RedisTransport)
    await t.connect()
    return t


def frames_of(runs: list[str]) -> list[OutFrame]:
    # interleaved, the way concurrent runs publish
    return [OutFrame(run, f"{run}/{i}".encode()) for i in range(FRAMES) for run in runs]


async def take(
    t: RedisTransport, group: str, consumer: str, n: int, opts: GroupOptions, ack: bool = True
) -> list[Delivery]:
    out: list[Delivery] = []
    with anyio.fail_after(WAIT):
        async for d in t.consume(group, consumer, opts):
            out.append(d)
            if ack:
                await d.ack()
            if len(out) == n:
                break
    return out


def per_run(datas: list[bytes]) -> dict[str, list[int]]:
    runs: dict[str, list[int]] = defaultdict(list)
    for data in datas:
        run, _, i = data.decode().rpartition("/")
        runs[run].append(int(i))
    return runs


async def test_a_group_reads_every_partition_in_run_order(base_url: str, namespace: str) -> None:
    t = await opened(with_query(base_url, "partitions=4"), namespace)
    try:
        runs = [str(uuid.uuid4()) for _ in range(RUNS)]
        await t.publish(frames_of(runs))
        got = await take(t, "g", "c1", RUNS * FRAMES, GroupOptions(start="first"))
        assert per_run([d.data for d in got]) == {run: list(range(FRAMES)) for run in runs}
        # positions name their partition; 24 runs over 4 partitions use more than one
        partitions = {d.position.split(":")[0] for d in got}
        assert len(partitions) > 1 and partitions <= {"0", "1", "2", "3"}
        for d in got:  # a run's frames all come from its partition
            run = d.data.decode().rpartition("/")[0]
            assert d.position.split(":")[0] == str(t._layout.partition_of(run))
    finally:
        await t.aclose()


async def test_competing_consumers_share_partitions(base_url: str, namespace: str) -> None:
    t = await opened(with_query(base_url, "partitions=4"), namespace)
    try:
        runs = [str(uuid.uuid4()) for _ in range(RUNS)]
        await t.publish(frames_of(runs))
        opts = GroupOptions(start="first", prefetch=4)
        seen: dict[str, list[bytes]] = {"c1": [], "c2": []}
        done = asyncio.Event()

        async def worker(name: str) -> None:
            async for d in t.consume("work", name, opts):
                seen[name].append(d.data)
                await d.ack()
                await asyncio.sleep(0.002)  # the other consumer gets its turn
                if sum(map(len, seen.values())) >= RUNS * FRAMES:
                    done.set()

        tasks = [asyncio.create_task(worker(name)) for name in seen]
        try:
            with anyio.fail_after(WAIT):
                await done.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        got = seen["c1"] + seen["c2"]
        assert sorted(got) == sorted(f.data for f in frames_of(runs))  # each exactly once
        assert seen["c1"] and seen["c2"]
    finally:
        await t.aclose()


async def test_prefetch_is_shared_over_partitions(base_url: str, namespace: str) -> None:
    t = await opened(with_query(base_url, "partitions=4"), namespace)
    try:
        runs = [str(uuid.uuid4()) for _ in range(RUNS)]
        await t.publish(frames_of(runs))
        opts = GroupOptions(start="first", prefetch=4)  # one unsettled delivery per partition
        held: list[Delivery] = []
        four = asyncio.Event()

        async def hold() -> None:
            async for d in t.consume("slow", "c1", opts):
                held.append(d)
                if len(held) == 4:
                    four.set()

        task = asyncio.create_task(hold())
        try:
            with anyio.fail_after(WAIT):
                await four.wait()
            # more would come now if the loops overran their share; give them a read each
            await asyncio.sleep(0.3)
            assert len(held) == 4
            assert len({d.position.split(":")[0] for d in held}) == 4
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    finally:
        await t.aclose()


async def test_redelivery_and_dead_letters_per_partition(base_url: str, namespace: str) -> None:
    t = await opened(with_query(base_url, "partitions=4"), namespace)
    try:
        layout = t._layout
        # two runs in two different partitions
        first = str(uuid.uuid4())
        second = next(
            r
            for r in (str(uuid.uuid4()) for _ in range(100))
            if layout.partition_of(r) != layout.partition_of(first)
        )
        await t.publish([OutFrame(first, b"a-poison"), OutFrame(second, b"b-poison")])
        opts = GroupOptions(start="first", visibility_timeout=0.3, max_deliveries=2)
        once = await take(t, "dlq", "c1", 2, opts, ack=False)
        assert sorted(d.data for d in once) == [b"a-poison", b"b-poison"]
        again = await take(t, "dlq", "c2", 2, opts, ack=False)  # after the visibility timeout
        assert sorted(d.data for d in again) == [b"a-poison", b"b-poison"]
        assert all(d.deliveries == 2 for d in again)
        # not acked again: the next reclaim dead-letters both, in their own partitions
        with anyio.fail_after(WAIT):
            while len(dead := await t.dead_letters("dlq")) < 2:
                probe = asyncio.create_task(take(t, "dlq", "c3", 1, opts, ack=False))
                await asyncio.wait({probe}, timeout=0.2)
                assert not probe.done(), "a dead-lettered frame was delivered again"
                probe.cancel()
                await asyncio.gather(probe, return_exceptions=True)
        assert sorted(d.data for d in dead) == [b"a-poison", b"b-poison"]
        assert {d.position for d in dead} == {d.position for d in once}
        # delete_group clears the dead letters of every partition
        await t.delete_group("dlq")
        assert await t.dead_letters("dlq") == []
    finally:
        await t.aclose()


async def test_requeue_dead_letters_per_partition(base_url: str, namespace: str) -> None:
    """Dead letters of two partitions requeued (one by its prefixed position, then all)
    come back once each as first deliveries, and leave every partition's dead letters."""
    t = await opened(with_query(base_url, "partitions=4"), namespace)
    try:
        layout = t._layout
        first = str(uuid.uuid4())
        second = next(
            r
            for r in (str(uuid.uuid4()) for _ in range(100))
            if layout.partition_of(r) != layout.partition_of(first)
        )
        await t.publish([OutFrame(first, b"a-poison"), OutFrame(second, b"b-poison")])
        opts = GroupOptions(start="first", visibility_timeout=0.3, max_deliveries=1)
        for d in await take(t, "rq", "c1", 2, opts, ack=False):
            await d.reject("poison: test")
        dead = {d.data: d.position for d in await t.dead_letters("rq")}
        assert set(dead) == {b"a-poison", b"b-poison"}
        # a position without its partition, or of a partition that does not exist
        unprefixed = dead[b"a-poison"].partition(":")[2]
        assert await t.requeue_dead_letters("rq", [unprefixed, "9:" + unprefixed]) == 0
        assert await t.requeue_dead_letters("rq", [dead[b"a-poison"]]) == 1
        (back,) = await take(t, "rq", "c2", 1, opts)
        assert (back.data, back.deliveries, back.position) == (b"a-poison", 1, dead[b"a-poison"])
        assert await t.requeue_dead_letters("rq") == 1
        (rest,) = await take(t, "rq", "c2", 1, opts)
        assert (rest.data, rest.deliveries) == (b"b-poison", 1)
        assert await t.dead_letters("rq") == []
        assert [g.dead_letters for g in await t.groups()] == [0]
    finally:
        await t.aclose()


async def test_changing_partitions_of_a_live_namespace_is_refused(
    base_url: str, namespace: str
) -> None:
    t = await opened(with_query(base_url, "partitions=4"), namespace)
    try:
        await t.publish(frames_of([str(uuid.uuid4())]))
        other = open_transport(with_query(base_url, "partitions=2"), namespace)
        with pytest.raises(ConfigurationError, match="has 4 group stream partition"):
            await other.connect()
        await other.aclose()
        # without the option, a client takes the namespace's own
        plain = await opened(base_url, namespace)
        try:
            assert plain._layout.partitions == 4
            got = await take(plain, "g", "c1", FRAMES, GroupOptions(start="first"))
            assert len(got) == FRAMES
        finally:
            await plain.aclose()
    finally:
        await t.aclose()


async def test_a_namespace_from_before_partitions_stays_unpartitioned(
    base_url: str, namespace: str
) -> None:
    t = await opened(with_query(base_url, "partitions=1"), namespace)
    run = str(uuid.uuid4())
    try:
        await t.publish(frames_of([run]))
        # what an older eventbus left: the group stream, no metadata
        await t._live_client().delete(t._layout.meta_key)
    finally:
        await t.aclose()
    asked = open_transport(with_query(base_url, "partitions=8"), namespace)
    with pytest.raises(ConfigurationError, match="cannot change"):
        await asked.connect()
    await asked.aclose()
    plain = await opened(base_url, namespace)
    try:
        assert plain._layout.partitions == 1
        got = await take(plain, "g", "c1", FRAMES, GroupOptions(start="first"))
        assert [d.data for d in got] == [f.data for f in frames_of([run])]
    finally:
        await plain.aclose()


@pytest.mark.redis_cluster
async def test_partitions_spread_over_the_cluster_primaries(namespace: str) -> None:
    url = broker_url("redis_cluster")
    t = await opened(url, namespace)  # the cluster's default: 8 partitions
    try:
        assert t._layout.partitions == 8
        client = t._live_client()
        assert isinstance(client, RedisCluster)
        owners = {
            client.get_node_from_key(t._layout.events_key(i)).name  # type: ignore[union-attr]
            for i in range(8)
        }
        assert len(owners) == 3  # every primary holds some
        runs = [str(uuid.uuid4()) for _ in range(RUNS)]
        await t.publish(frames_of(runs))
        # the frames are where the slot map says, on more than one primary (a key read
        # from a node that does not own it would be answered MOVED)
        counts: dict[str, int] = {}
        for node in client.get_primaries():
            direct = aioredis.Redis(host=node.host, port=node.port)
            try:
                for i in range(8):
                    key = t._layout.events_key(i)
                    if client.get_node_from_key(key) is node:  # type: ignore[comparison-overlap]
                        counts[node.name] = counts.get(node.name, 0) + await direct.xlen(key)
            finally:
                await direct.aclose()
        assert sum(counts.values()) == RUNS * FRAMES
        assert sum(1 for n in counts.values() if n) >= 2
    finally:
        await t.aclose()


async def test_groups_report_every_partition(base_url: str, namespace: str) -> None:
    """groups() of a partitioned namespace counts what every partition holds."""
    t = await opened(with_query(base_url, "partitions=4"), namespace)
    try:
        runs = [str(uuid.uuid4()) for _ in range(RUNS)]
        await t.publish([OutFrame(run, run.encode()) for run in runs])
        opts = GroupOptions(start="first", max_deliveries=5)
        got = await take(t, "g", "c1", RUNS, opts, ack=False)
        for d in got:
            await d.reject("no good")
        partitions = {t._layout.partition_of(run) for run in runs}
        assert len(partitions) > 1  # the dead letters are spread, not all in partition 0
        (info,) = await t.groups()
        assert (info.name, info.dead_letters, info.pending, info.consumers) == ("g", RUNS, 0, 1)
    finally:
        await t.aclose()


async def test_tap_reads_every_partition(base_url: str, namespace: str) -> None:
    """tap() of a partitioned namespace (what `eventbus runs` and a namespace `tail`
    read) sees every partition's frames, from the first or from now on."""
    t = await opened(with_query(base_url, "partitions=4"), namespace)
    try:
        runs = [str(uuid.uuid4()) for _ in range(RUNS)]
        await t.publish([OutFrame(run, b"old " + run.encode()) for run in runs])
        assert len({t._layout.partition_of(run) for run in runs}) > 1

        async def take_tap(start: Literal["first", "new"], n: int, then: object = None) -> set:
            got: set[bytes] = set()
            tap = t.tap(start)
            with anyio.fail_after(WAIT):
                async for entry in tap:
                    assert entry.position.partition(":")[0].isdigit()
                    got.add(entry.data)
                    if len(got) == n:
                        break
            await tap.aclose()  # type: ignore[attr-defined]
            return got

        assert await take_tap("first", RUNS) == {b"old " + r.encode() for r in runs}
        reader = asyncio.ensure_future(take_tap("new", RUNS))
        # "new" means frames published after the reader started: publish until it has
        # them all (a frame published before it read its starting points is not counted)
        with anyio.fail_after(WAIT):
            while not reader.done():
                await t.publish([OutFrame(run, b"new " + run.encode()) for run in runs])
                await asyncio.wait({reader}, timeout=0.2)
        assert reader.result() == {b"new " + r.encode() for r in runs}
    finally:
        await t.aclose()
