"""Test fixtures: brokers found by env var, then localhost, then testcontainers.

``EVENTBUS_TEST_REDIS_URL`` / ``EVENTBUS_TEST_AMQP_URL`` name the brokers; without them
the local defaults are tried, then testcontainers when a Docker engine answers. With
``EVENTBUS_REQUIRE_BROKERS=1`` (set by ``.ci/run``) a missing broker fails the test
instead of skipping it.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import socket
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit

import pytest
from hypothesis import settings

if TYPE_CHECKING:
    from eventbus.transports import Transport

# Property tests: in CI (``CI`` set, as CI services and .ci/run do) the examples are
# derived from each test's name, so a run says the same thing every time; anywhere, a
# failure prints the blob that reproduces it (``@reproduce_failure``)
settings.register_profile("ci", derandomize=True, print_blob=True, database=None)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

DEFAULT_URLS = {
    "redis": "redis://127.0.0.1:6379/15",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    # started by .ci/redis-cluster.sh (make redis-cluster)
    "redis_cluster": "redis://127.0.0.1:7100/0?cluster=1",
    # started by .ci/rabbitmq-cluster.sh (make rabbitmq-cluster)
    "rabbitmq_cluster": "amqp://guest:guest@127.0.0.1:5701,127.0.0.1:5702,127.0.0.1:5703/",
}
ENV_VARS = {
    "redis": "EVENTBUS_TEST_REDIS_URL",
    "rabbitmq": "EVENTBUS_TEST_AMQP_URL",
    "redis_cluster": "EVENTBUS_TEST_REDIS_CLUSTER_URL",
    "rabbitmq_cluster": "EVENTBUS_TEST_AMQP_CLUSTER_URL",
}

# Every transport the contract suites run over. A broker joins here when its transport lands.
TRANSPORTS = [
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis"),
    pytest.param("rabbitmq", id="rabbitmq"),
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _reachable(url: str) -> bool:
    if "," in url:  # a cluster's nodes: all of them
        head, _, rest = url.partition("@")
        hosts, sep, tail = rest.partition("/")
        return all(_reachable(f"{head}@{host}{sep}{tail}") for host in hosts.split(","))
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return os.path.exists(parts.path)
    port = parts.port or {"redis": 6379, "rediss": 6379, "amqp": 5672, "amqps": 5671}.get(
        parts.scheme, 0
    )
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


@functools.cache  # probed once per session
def _docker_answers() -> bool:
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return False
    # docker-py leaves a unix socket to the garbage collector when the engine does not
    # answer: collected later, its ResourceWarning would fail whichever test was running
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            import docker  # type: ignore[import-untyped]

            client = docker.from_env(timeout=3)
            try:
                client.ping()
            finally:
                client.close()
        except Exception:
            return False
        finally:
            gc.collect()
    return True


_containers: dict[str, str] = {}


def _from_container(kind: str) -> str | None:
    if kind in _containers:
        return _containers[kind]
    if not _docker_answers():
        return None
    if kind == "redis":
        from testcontainers.redis import RedisContainer  # type: ignore[import-untyped]

        redis_container = RedisContainer("redis:7").start()
        host = redis_container.get_container_host_ip()
        port = redis_container.get_exposed_port(6379)
        url = f"redis://{host}:{port}/15"
    else:
        from testcontainers.rabbitmq import RabbitMqContainer  # type: ignore[import-untyped]

        rabbit = RabbitMqContainer("rabbitmq:3-management").start()
        host = rabbit.get_container_host_ip()
        port = rabbit.get_exposed_port(5672)
        url = f"amqp://guest:guest@{host}:{port}/"
    _containers[kind] = url
    return url


# RabbitMQ URLs handed out during the current test: its namespace is deleted afterwards,
# because every run is a stream queue holding broker file descriptors (see docs/rabbitmq.md)
_rabbit_urls: set[str] = set()
# Redis URLs likewise: run streams expire, but group and dead-letter streams have no TTL
_redis_urls: set[str] = set()


def broker_url(kind: str) -> str:
    """The URL of a live broker of ``kind``, or skip (fail under EVENTBUS_REQUIRE_BROKERS=1)."""
    if kind == "memory":
        return f"memory://{uuid.uuid4().hex}"
    env = os.environ.get(ENV_VARS[kind])
    url = env or DEFAULT_URLS[kind]
    if _reachable(url):
        if kind.startswith("rabbitmq"):
            _rabbit_urls.add(url)
        else:
            _redis_urls.add(url)
        return url
    if not env and not kind.endswith("_cluster"):
        container_url = _from_container(kind)
        if container_url:
            return container_url
    hint = f" or run `make {kind.replace('_', '-')}`" if kind.endswith("_cluster") else ""
    skip_unless_required(f"{kind} broker not reachable at {url} (set {ENV_VARS[kind]}{hint})")


def skip_unless_required(message: str) -> NoReturn:
    """Skip a test whose environment is missing, or fail it under
    ``EVENTBUS_REQUIRE_BROKERS=1`` (CI), where everything a test needs must be there."""
    if os.environ.get("EVENTBUS_REQUIRE_BROKERS") == "1":
        pytest.fail(f"{message} (EVENTBUS_REQUIRE_BROKERS=1: not skipped)")
    pytest.skip(message)


@pytest.fixture(autouse=True)
def _track_broker_urls() -> Iterator[None]:
    # autouse fixtures are set up before the others, so this forgets the previous test's
    # URLs before any of this test's fixtures (``url``, ``amqp_url``) records one
    _rabbit_urls.clear()
    _redis_urls.clear()
    yield
    _rabbit_urls.clear()
    _redis_urls.clear()


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace no other test uses (deleted from RabbitMQ afterwards)."""
    name = f"t{uuid.uuid4().hex[:16]}"
    yield name
    for url in list(_rabbit_urls):
        asyncio.run(_delete_rabbit_namespace(url, name))
    for url in list(_redis_urls):
        _delete_redis_namespace(url, name)


def _delete_redis_namespace(url: str, name: str) -> None:
    import redis

    if "cluster=1" in url:
        from redis.cluster import RedisCluster

        cluster = RedisCluster.from_url(url.split("?", 1)[0])
        try:
            primaries = [(node.host, node.port) for node in cluster.get_primaries()]
        finally:
            cluster.close()
        for host, port in primaries:  # each primary: its own keys, one DEL each (slots)
            node = redis.Redis(host=host, port=port)
            try:
                pipe = node.pipeline(transaction=False)
                for key in node.scan_iter(match=f"eventbus:{{{name}*", count=1000):
                    pipe.delete(key)
                pipe.execute()
            finally:
                node.close()
        return
    client = redis.Redis.from_url(url.split("?", 1)[0])
    try:
        # every key of a namespace starts so: eventbus:{<ns>}:... and eventbus:{<ns>:<run>}:run
        keys = list(client.scan_iter(match=f"eventbus:{{{name}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


async def _delete_rabbit_namespace(url: str, name: str) -> None:
    from eventbus.transports.rabbitmq import RabbitMQTransport

    transport = RabbitMQTransport(url, name)
    try:
        await transport.delete_namespace()
    finally:
        await transport.aclose()


@pytest.fixture(params=TRANSPORTS)
def url(request: pytest.FixtureRequest) -> str:
    """The URL of each transport in turn (a fresh memory broker per test)."""
    return broker_url(request.param)


@pytest.fixture
async def transport(url: str, namespace: str) -> AsyncIterator[Transport]:
    """A connected transport of each kind in turn, on the test's namespace."""
    from eventbus.transports import open_transport

    t = open_transport(url, namespace)
    await t.connect()
    try:
        yield t
    finally:
        await t.aclose()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "redis_cluster: needs the local Redis Cluster (make redis-cluster)"
    )
    config.addinivalue_line(
        "markers", "rabbitmq_cluster: needs the local RabbitMQ cluster (make rabbitmq-cluster)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # broker markers follow the transport parameter, so `-m "not rabbitmq"` works
    for item in items:
        callspec = getattr(item, "callspec", None)
        kind = callspec.params.get("url") if callspec is not None else None
        if kind in ("redis", "rabbitmq"):
            item.add_marker(getattr(pytest.mark, kind))
