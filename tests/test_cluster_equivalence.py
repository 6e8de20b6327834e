"""Remote ``astream_events`` equals the local one on a Redis Cluster too: the equivalence
tests of tests/test_equivalence.py and tests/test_graph_equivalence.py, collected here
again with the cluster's URL (``make redis-cluster``; see tests/test_cluster_contract.py).
"""

from __future__ import annotations

import pytest
from conftest import broker_url
from test_equivalence import *  # noqa: F403
from test_graph_equivalence import *  # noqa: F403

pytestmark = [pytest.mark.anyio, pytest.mark.redis, pytest.mark.redis_cluster]


@pytest.fixture
def url() -> str:
    return broker_url("redis_cluster")
