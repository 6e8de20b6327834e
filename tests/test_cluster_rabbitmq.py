"""RabbitMQ clusters: URLs listing several nodes, and the transport contract on the local
3-node cluster of ``.ci/rabbitmq-cluster.sh`` (``make rabbitmq-cluster``), with a node
stopped during a run and during group consumption (counts of lost and duplicated events).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import anyio
import pytest
from _cluster_run import ticking_run
from conftest import broker_url, skip_unless_required
from test_transport_contract import *  # noqa: F403  (the contract's tests, collected here again)

from eventbus import ConfigurationError
from eventbus.transports import open_transport
from eventbus.transports._rabbit_cluster import split_nodes

pytestmark = [pytest.mark.anyio]

ROOT = Path(__file__).resolve().parent.parent
CLUSTER_DIR = Path(os.environ.get("EVENTBUS_RABBIT_CLUSTER_DIR", "/tmp/eventbus-rabbitmq-cluster"))
WAIT = 120


@pytest.fixture(params=[pytest.param("rabbitmq_cluster", marks=pytest.mark.rabbitmq_cluster)])
def url(request: pytest.FixtureRequest) -> str:
    """The contract's URL: the local cluster, every node listed."""
    return str(broker_url(request.param))


def test_a_url_lists_nodes() -> None:
    urls, safe = split_nodes("amqp://u:secret@h1:5701,h2:5702,h3/vh?heartbeat=5")
    assert urls == [
        "amqp://u:secret@h1:5701/vh?heartbeat=5",
        "amqp://u:secret@h2:5702/vh?heartbeat=5",
        "amqp://u:secret@h3/vh?heartbeat=5",
    ]
    assert safe == "amqp://u:***@h1:5701,h2:5702,h3/vh?heartbeat=5"
    assert split_nodes("amqp://u:p@h1:5672/")[0] == ["amqp://u:p@h1:5672/"]
    t = open_transport("amqp://u:secret@h1:5701,h2:5702/", "ns")
    assert "secret" not in repr(t) and "h2:5702" in repr(t)


@pytest.mark.parametrize("bad", ["amqp://u:p@h1:5701,,h3/", "amqp://u:p@h1:5701,h2:x/"])
def test_a_bad_node_is_refused(bad: str) -> None:
    with pytest.raises(ConfigurationError):
        open_transport(bad, "ns")


@pytest.mark.rabbitmq
async def test_a_dead_node_in_the_list_is_skipped(namespace: str) -> None:
    live = broker_url("rabbitmq")
    creds, _, rest = live.partition("@")
    # port 9 (discard) refuses: the first node is down, the second serves
    t = open_transport(f"{creds}@127.0.0.1:9,{rest}", namespace)
    await t.connect()
    try:
        await t.publish([])  # a live connection
        assert t._link._node == 1  # type: ignore[attr-defined]
    finally:
        await t.aclose()


def _ctl(node: int, *args: str) -> None:
    env = dict(os.environ, HOME=str(CLUSTER_DIR / "home"))
    subprocess.run(
        ["/usr/lib/rabbitmq/bin/rabbitmqctl", "-n", f"ebus{node}@localhost", *args],
        check=True,
        timeout=WAIT,
        capture_output=True,
        env=env,
    )


@pytest.mark.rabbitmq
@pytest.mark.rabbitmq_cluster
@pytest.mark.slow
@pytest.mark.timeout(300)
async def test_a_node_stopped_during_a_run_and_group_consumption(namespace: str) -> None:
    """The node every client is connected to (the first listed) stops mid-run: clients
    reconnect to the next node; the follower sees every event once, the group every event
    at least once."""
    url = broker_url("rabbitmq_cluster")
    if not (CLUSTER_DIR / "home").exists():
        skip_unless_required(f"no cluster of .ci/rabbitmq-cluster.sh in {CLUSTER_DIR}")
    stopped: list[bool] = []

    def stop_first_node() -> None:
        _ctl(1, "stop_app")
        stopped.append(True)

    try:
        # publish_timeout: the stop may take the remaining nodes a while on a busy machine
        figures = await ticking_run(
            f"{url}?publish_timeout=120", namespace, str(uuid.uuid4()), stop_first_node
        )
    finally:
        if stopped:
            await anyio.to_thread.run_sync(_ctl, 1, "start_app")
    print("rabbitmq node stop:", figures)
    assert figures["follower_gap"] is None
    assert (figures["follower_lost"], figures["follower_duplicates"]) == (0, 0), figures
    assert figures["group_lost"] == 0, figures
