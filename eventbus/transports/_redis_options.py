"""The Redis transport's options: the spec they are parsed with (and the option table of
``docs/redis.md`` is generated from), and the redis-py connection options passed through."""

from __future__ import annotations

import math
from typing import Annotated

import msgspec

from ._kit import Positive, PositiveInt, ReconnectTimeout, RetryOptions, doc
from ._redis_layout import MAX_PARTITIONS

__all__ = ["REDIS_OPTIONS", "Options"]


class Options(RetryOptions, forbid_unknown_fields=True):
    """The Redis transport's own options: the one spec they are parsed with and the option
    table of ``docs/redis.md`` is generated from (``make docs``); the retry options first
    (:class:`RetryOptions`)."""

    # a Redis follower or consumer waits for its server for ever unless told otherwise
    reconnect_timeout: ReconnectTimeout = math.inf

    retention: Annotated[
        Positive, doc("seconds a run stays readable after its `final` frame (default: one hour)")
    ] = 3600.0
    abandon_after: Annotated[
        Positive, doc("seconds a run without a `final` frame stays after its *last* frame")
    ] = 86400.0
    maxlen: Annotated[
        PositiveInt,
        doc("frames kept (approximately, `MAXLEN ~`) in the namespace's group stream"),
    ] = 100_000
    dead_maxlen: Annotated[
        PositiveInt, doc("dead letters kept (approximately) per consumer group")
    ] = 10_000
    block: Annotated[
        float,
        msgspec.Meta(ge=0.01),
        doc("seconds one blocking XREAD/XREADGROUP waits before its loop comes round"),
    ] = 2.0
    command_timeout: Annotated[
        Positive,
        doc(
            "seconds one command may take (a blocking read: `block` more) before it counts "
            "as a lost connection"
        ),
    ] = 10.0
    cluster: Annotated[
        bool,
        doc(
            "`true`: the URL names a node of a Redis Cluster (see [Redis Cluster](#redis-cluster))"
        ),
    ] = False
    partitions: Annotated[
        Annotated[int, msgspec.Meta(ge=1, le=MAX_PARTITIONS)] | None,
        doc(
            "group stream partitions of a *new* namespace (1-1024); a namespace keeps the "
            "number it was created with, and a client asking for another gets a "
            "`ConfigurationError` (see [Partitioned group streams](#partitioned-group-streams))",
            default="1, on a cluster 8",
        ),
    ] = None
    wait_replicas: Annotated[
        int,
        msgspec.Meta(ge=0),
        doc(
            "after each batch, `WAIT` until this many replicas acknowledged it (see "
            "[Failover](#failover-what-an-acknowledged-publish-guarantees))"
        ),
    ] = 0
    wait_timeout: Annotated[
        Positive,
        doc(
            "seconds that `WAIT` waits; fewer replicas in time: the batch is sent again, "
            "until `publish_timeout`"
        ),
    ] = 1.0


# redis-py connection options we pass through. Deliberately absent: `protocol` (see
# _make_client), retry settings (the retry policy is ours), and `socket_timeout`: with it,
# redis-py wraps every send in asyncio.wait_for, which before Python 3.12 can swallow a
# task's cancellation (a cancelled consumer would keep running); command_timeout bounds
# every command instead.
REDIS_OPTIONS = frozenset(
    {
        "db",
        "socket_connect_timeout",
        "socket_keepalive",
        "health_check_interval",
        "client_name",
        "max_connections",
        "ssl_cert_reqs",
        "ssl_ca_certs",
        "ssl_ca_data",
        "ssl_ca_path",
        "ssl_certfile",
        "ssl_keyfile",
        "ssl_password",
        "ssl_check_hostname",
        "ssl_min_version",
        "ssl_ciphers",
    }
)
