"""RabbitMQ clusters: a URL that lists several nodes, tried in turn.

``amqp://user:password@host1:5672,host2:5672,host3:5672/vhost?options`` names three nodes
of one cluster (same credentials, virtual host and options). A connection goes to the
node that served last, else to the next one in the list, round the list; a node that
dies drops its connections, and the reconnect moves on to the next node.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from .._exceptions import ConfigurationError
from . import redact_url

__all__ = ["split_nodes"]


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
