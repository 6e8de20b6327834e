"""Failover on the local Redis Cluster (``.ci/redis-cluster.sh``) during a run and during
group consumption: counts of lost and duplicated events delivered to the application.

Each scenario publishes a run of custom events ("tick" i) through a Publisher, follows it
with a Subscriber and reads it through a consumer group, and fails the primary that holds
both the run's stream and its group stream partition while events flow:

* ``CLUSTER FAILOVER`` on the primary's replica (a coordinated handover): nothing is lost;
* the primary killed (SIGKILL) with ``wait_replicas=1``: every acknowledged batch was on
  the replica, nothing is lost (publishing stalls until the killed node is back as the new
  primary's replica, then carries on);
* the primary killed without ``WAIT``: the writes the replica had not received yet are
  lost (replication is asynchronous); a follower then raises SequenceGapError, never goes
  on silently, and never sees a duplicate.

Followers must see 0 duplicates; group consumers are at-least-once (duplicates counted).
The figures of each scenario go to ``.artifacts/cluster-failover.json``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from _cluster_run import WAIT, ticking_run
from conftest import broker_url, skip_unless_required
from redis.crc import key_slot

from eventbus.transports._redis_layout import Layout

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.redis,
    pytest.mark.redis_cluster,
    pytest.mark.slow,
    pytest.mark.timeout(240),
]

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_DIR = Path(os.environ.get("EVENTBUS_CLUSTER_DIR", "/tmp/eventbus-redis-cluster"))
ARTIFACT = ROOT / ".artifacts" / "cluster-failover.json"


def _nodes(port: int) -> dict[str, dict[str, Any]]:
    """CLUSTER NODES as {"host:port": {node_id, flags, master_id, slots: [(lo, hi)]}}."""
    text = subprocess.run(
        ["redis-cli", "-p", str(port), "CLUSTER", "NODES"],
        check=True,
        timeout=10,
        capture_output=True,
        text=True,
    ).stdout
    nodes: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        fields = line.split()
        slots = [tuple(map(int, (r.split("-") * 2)[:2])) for r in fields[8:] if "[" not in r]
        nodes[fields[1].split("@")[0]] = {
            "node_id": fields[0],
            "flags": fields[2].split(","),
            "master_id": fields[3],
            "slots": slots,
        }
    return nodes


def _owner(seed: int, key: str) -> tuple[int, list[int]]:
    """The port of the primary holding ``key``'s slot, and of its live replicas."""
    slot = key_slot(key.encode())
    nodes = _nodes(seed)
    for addr, info in nodes.items():
        if "master" not in info["flags"] or "fail" in info["flags"]:
            continue
        if any(lo <= slot <= hi for lo, hi in info["slots"]):
            replicas = [
                int(a.rsplit(":", 1)[1])
                for a, i in nodes.items()
                if i["master_id"] == info["node_id"] and "fail" not in i["flags"]
            ]
            return int(addr.rsplit(":", 1)[1]), replicas
    raise AssertionError(f"no primary holds slot {slot}")


def _owner_and_replica(seed: int, key: str) -> tuple[int, int]:
    """The ports of the primary holding ``key``'s slot and of one of its replicas, once
    the cluster lists one (after an earlier test's failover, it may take a moment)."""
    _until(lambda: bool(_owner(seed, key)[1]), f"a replica for the primary of {key}")
    primary, replicas = _owner(seed, key)
    return primary, replicas[0]


def _is_primary(port: int) -> bool:
    client = redis.Redis(port=port, socket_timeout=5)
    try:
        role = client.execute_command("ROLE")
        return bool(role[0] in (b"master", "master"))
    finally:
        client.close()


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {WAIT}s")
        time.sleep(0.1)  # polling a broker's state from a thread, bounded


def _cluster_script(action: str) -> None:
    subprocess.run(
        ["bash", str(ROOT / ".ci" / "redis-cluster.sh"), action],
        check=True,
        timeout=WAIT + 30,
        capture_output=True,
    )


def manual_failover(primary: int, replica: int) -> None:
    client = redis.Redis(port=replica, socket_timeout=5)
    try:
        client.execute_command("CLUSTER", "FAILOVER")
    finally:
        client.close()
    _until(lambda: _is_primary(replica), f"replica {replica} promoted")


def kill_primary(primary: int, replica: int) -> None:
    pid = int((CLUSTER_DIR / str(primary) / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    _until(lambda: _is_primary(replica), f"replica {replica} promoted after the kill")
    # the killed node comes back as the new primary's replica
    _cluster_script("start")


RESHARD_SLOTS = 50


def _port_id(seed: int) -> dict[int, str]:
    return {int(a.rsplit(":", 1)[1]): i["node_id"] for a, i in _nodes(seed).items()}


def reshard(primary: int, replica: int) -> None:
    """Move the primary's lowest RESHARD_SLOTS slots (the run's among them) to another
    primary, with redis-cli (MIGRATE key by key: MOVED and ASK while it runs)."""
    nodes = _nodes(primary)
    ids = _port_id(primary)
    target = next(
        int(a.rsplit(":", 1)[1])
        for a, i in nodes.items()
        if "master" in i["flags"] and i["slots"] and int(a.rsplit(":", 1)[1]) != primary
    )
    subprocess.run(
        ["redis-cli", "--cluster", "reshard", f"127.0.0.1:{primary}",
         "--cluster-from", ids[primary], "--cluster-to", ids[target],
         "--cluster-slots", str(RESHARD_SLOTS), "--cluster-yes"],
        check=True, timeout=WAIT, capture_output=True,
    )  # fmt: skip


def _pick_low_slot_run(namespace: str, seed: int) -> str:
    """A run id whose run stream is among the lowest RESHARD_SLOTS slots of its primary's
    first range (those redis-cli --cluster reshard moves first)."""
    starts = sorted(lo for i in _nodes(seed).values() if "master" in i["flags"]
                    for lo, _hi in i["slots"][:1])  # fmt: skip
    for _ in range(100_000):
        run_id = str(uuid.uuid4())
        slot = key_slot(f"eventbus:{{{namespace}:{run_id}}}:run".encode())
        if any(lo <= slot < lo + RESHARD_SLOTS for lo in starts):
            return run_id
    raise AssertionError("no run id in the lowest slots")


def _cluster_url(query: str) -> str:
    url = broker_url("redis_cluster")
    return f"{url}{'&' if '?' in url else '?'}{query}"


def _pick_run(namespace: str, seed: int) -> str:
    """A run id whose run stream and group stream partition have the same primary."""
    layout = Layout(namespace, 8)
    for _ in range(1000):
        run_id = str(uuid.uuid4())
        run_key = f"eventbus:{{{namespace}:{run_id}}}:run"
        events_key = layout.events_key(layout.partition_of(run_id))
        if _owner(seed, run_key)[0] == _owner(seed, events_key)[0]:
            return run_id
    raise AssertionError("no run id shares a primary with its partition")


def _record(name: str, figures: dict[str, Any]) -> None:
    ARTIFACT.parent.mkdir(exist_ok=True)
    data = json.loads(ARTIFACT.read_text()) if ARTIFACT.exists() else {}
    data[name] = figures
    ARTIFACT.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


async def _scenario(
    namespace: str,
    disrupt: Callable[[int, int], None],
    query: str = "",
    pick: Callable[[str, int], str] = _pick_run,
) -> dict[str, Any]:
    url = _cluster_url("publish_timeout=120" + (f"&{query}" if query else ""))
    seed = int(url.split(":")[2].split("/")[0])
    run_id = pick(namespace, seed)
    run_key = f"eventbus:{{{namespace}:{run_id}}}:run"
    primary, replica = _owner_and_replica(seed, run_key)
    figures = await ticking_run(url, namespace, run_id, lambda: disrupt(primary, replica))
    figures.update(primary=primary, replica=replica, owner_after=_owner(seed, run_key)[0])
    return figures


@pytest.fixture
def cluster_owned() -> None:
    """The kill scenarios need the cluster of .ci/redis-cluster.sh (its pid files)."""
    broker_url("redis_cluster")
    if not (CLUSTER_DIR / "7100" / "redis.pid").exists():
        skip_unless_required(f"no cluster of .ci/redis-cluster.sh in {CLUSTER_DIR}")


async def test_manual_failover_loses_nothing(namespace: str) -> None:
    figures = await _scenario(namespace, manual_failover)
    _record("manual_failover", figures)
    assert figures["follower_gap"] is None
    assert (figures["follower_lost"], figures["follower_duplicates"]) == (0, 0), figures
    assert figures["group_lost"] == 0, figures


async def test_killed_primary_with_wait_loses_nothing(namespace: str, cluster_owned: None) -> None:
    figures = await _scenario(namespace, kill_primary, "wait_replicas=1&wait_timeout=0.5")
    _record("killed_primary_wait_replicas_1", figures)
    assert figures["follower_gap"] is None
    assert (figures["follower_lost"], figures["follower_duplicates"]) == (0, 0), figures
    assert figures["group_lost"] == 0, figures


async def test_killed_primary_without_wait_never_loses_silently(
    namespace: str, cluster_owned: None
) -> None:
    figures = await _scenario(namespace, kill_primary)
    _record("killed_primary_no_wait", figures)
    assert figures["follower_duplicates"] == 0, figures
    # what the replica had not received when its primary died is lost; a follower that
    # misses events says so (SequenceGapError) instead of carrying on
    if figures["follower_lost"]:
        assert figures["follower_gap"] is not None, figures
    else:
        assert figures["follower_gap"] is None, figures


async def test_resharding_during_a_run_loses_nothing(namespace: str) -> None:
    figures = await _scenario(namespace, reshard, pick=_pick_low_slot_run)
    _record("resharding", figures)
    assert figures["owner_after"] != figures["primary"]  # the run's slot moved mid-run
    assert figures["follower_gap"] is None
    assert (figures["follower_lost"], figures["follower_duplicates"]) == (0, 0), figures
    assert figures["group_lost"] == 0, figures
