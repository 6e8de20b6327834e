"""The RabbitMQ transport's options: the spec they are parsed with (and the option table
of ``docs/rabbitmq.md`` is generated from), and the aio-pika connection options passed
through."""

from __future__ import annotations

from typing import Annotated

import msgspec

from ._kit import Positive, PositiveInt, RetryOptions, doc

__all__ = ["PASSTHROUGH", "Options"]

# query options aio-pika/aiormq read from the URL themselves
PASSTHROUGH = frozenset(
    {
        "heartbeat",
        "timeout",
        "name",
        "auth",
        "cafile",
        "capath",
        "cadata",
        "keyfile",
        "certfile",
        "no_verify_ssl",
    }
)


class Options(RetryOptions, forbid_unknown_fields=True):
    """The RabbitMQ transport's own options: the one spec they are parsed with and the
    option table of ``docs/rabbitmq.md`` is generated from (``make docs``); the retry
    options first (:class:`RetryOptions`)."""

    persistent: Annotated[
        bool,
        doc(
            "AMQP delivery mode 2 for frames (`false`: mode 1; stream queues store to disk anyway)"
        ),
    ] = True
    retention: Annotated[
        Positive,
        doc("seconds a finished run stays readable; also `x-max-age` of the namespace log"),
    ] = 3600.0
    max_run_age: Annotated[
        Positive,
        doc("seconds after which the stream of a run that never sent its final frame is deleted"),
    ] = 86400.0
    sweep_interval: Annotated[
        Positive,
        doc("seconds between two clean-ups of expired run streams (run by publishers)"),
    ] = 300.0
    follow_prefetch: Annotated[
        PositiveInt, doc("stream credit of a follower (frames in flight to it)")
    ] = 1000
    segment_bytes: Annotated[
        int,
        msgspec.Meta(ge=4096),
        doc("`x-stream-max-segment-size-bytes` (retention deletes whole segments)"),
    ] = 8 * 1024 * 1024
    # 0: the server version's default (AMQP does not tell)
    max_message_size: Annotated[
        int,
        msgspec.Meta(ge=0),
        doc(
            "the broker's `max_message_size`, which publishers keep frames under (AMQP "
            "0-9-1 does not tell a client: without the option, 16 MiB from RabbitMQ 4.0 and "
            "128 MiB before, the brokers' defaults). Set it when the broker is configured "
            "otherwise: a frame over the real limit is refused (`PRECONDITION_FAILED`), and "
            "that run fails with `PublishError`",
            default="the server's default",
        ),
    ] = 0
    stream_replicas: Annotated[
        int,
        msgspec.Meta(ge=0),
        doc(
            "on a cluster: replicas of each new stream (run streams, log, registry; "
            "`x-initial-cluster-size`)",
            default="every node",
        ),
    ] = 0
    quorum_replicas: Annotated[
        int,
        msgspec.Meta(ge=0),
        doc(
            "on a cluster: replicas of each new group queue (`x-quorum-initial-group-size`)",
            default="every node",
        ),
    ] = 0
