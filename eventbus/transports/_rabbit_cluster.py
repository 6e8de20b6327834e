"""RabbitMQ clusters: a URL that lists several nodes, tried in turn, and the arguments
that replicate what a namespace declares.

``amqp://user:password@host1:5672,host2:5672,host3:5672/vhost?options`` names three nodes
of one cluster (same credentials, virtual host and options). A connection goes to the
node that served last, else to the next one in the list, round the list; a node that
dies drops its connections, and the reconnect moves on to the next node.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._exceptions import ConfigurationError
from . import redact_url

__all__ = ["dead_letter_arguments", "quorum_arguments", "split_nodes", "stream_arguments"]


def split_nodes(url: str) -> tuple[list[str], str]:
    """The one-node URLs of ``url`` (one per listed node, in order) and the URL to show.

    Raises:
        ConfigurationError: an empty or malformed node in the list.
    """
    parts = urlsplit(url)
    creds, at, hosts = parts.netloc.rpartition("@")
    if "," not in hosts:
        return [url], redact_url(url)
    urls = []
    for host in hosts.split(","):
        if not host.strip():
            raise ConfigurationError(f"an empty node in the AMQP URL {redact_url(url)!r}")
        one = urlunsplit((parts.scheme, creds + at + host, parts.path, parts.query, ""))
        try:
            urlsplit(one).port  # noqa: B018  (validates the port)
        except ValueError as exc:
            raise ConfigurationError(f"malformed node {host!r} in an AMQP URL") from exc
        urls.append(one)
    first = redact_url(urls[0])
    first_host = hosts.split(",", 1)[0]
    return urls, first.replace(first_host, hosts, 1)


def stream_arguments(replicas: int, **arguments: Any) -> dict[str, Any]:
    """A stream's declare arguments; ``replicas`` (0: every node) its replication factor."""
    arguments["x-queue-type"] = "stream"
    if replicas:
        arguments["x-initial-cluster-size"] = replicas
    return arguments


def quorum_arguments(replicas: int) -> dict[str, Any]:
    """A group queue's declare arguments; ``replicas`` (0: every node) its group size."""
    arguments: dict[str, Any] = {"x-queue-type": "quorum"}
    if replicas:
        arguments["x-quorum-initial-group-size"] = replicas
    return arguments


def dead_letter_arguments(replicas: int, clustered: bool) -> dict[str, Any]:
    """A group's dead-letter queue: on a cluster (several nodes listed, or ``replicas``
    set) a quorum queue, because a classic queue lives on one node, and while that node
    is down the group cannot even be found (NOT_FOUND, "home node ... is down"); on one
    node a classic queue, as namespaces made before have."""
    if clustered or replicas:
        return quorum_arguments(replicas)
    return {"x-queue-type": "classic"}
