"""The transport contract (tests/test_transport_contract.py) on a Redis Cluster, and on
single-node Redis with a partitioned group stream.

The cluster is the local one of ``.ci/redis-cluster.sh`` (``make redis-cluster``), or
``EVENTBUS_TEST_REDIS_CLUSTER_URL``; without it these tests skip, and fail under
``EVENTBUS_REQUIRE_BROKERS=1``.
"""

from __future__ import annotations

import pytest
from conftest import broker_url
from test_transport_contract import *  # noqa: F403  (the contract's tests, collected here again)

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


def with_query(url: str, query: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{query}"


@pytest.fixture(
    params=[
        pytest.param("cluster", marks=pytest.mark.redis_cluster),
        pytest.param("cluster-p1", marks=pytest.mark.redis_cluster),
        pytest.param("partitioned"),
    ]
)
def url(request: pytest.FixtureRequest) -> str:
    """The cluster (default partitions: 8), the cluster with one group stream, and one
    Redis node with 4 partitions."""
    if request.param == "cluster":
        return broker_url("redis_cluster")
    if request.param == "cluster-p1":
        return with_query(broker_url("redis_cluster"), "partitions=1")
    return with_query(broker_url("redis"), "partitions=4")
