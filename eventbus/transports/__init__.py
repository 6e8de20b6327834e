"""Transports, picked by URL scheme and imported lazily.

=================  ======================================  ==================
scheme             module                                  extra
=================  ======================================  ==================
``memory://``      :mod:`eventbus.transports.memory`       (none)
``redis://``,      :mod:`eventbus.transports.redis`        ``eventbus[redis]``
``rediss://``,
``unix://``
``amqp://``,       :mod:`eventbus.transports.rabbitmq`     ``eventbus[rabbitmq]``
``amqps://``
=================  ======================================  ==================
"""

from __future__ import annotations

import importlib
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .._exceptions import ConfigurationError, MissingDependencyError, TransportClosedError
from ._base import DeadLetter, Delivery, Entry, GroupInfo, GroupOptions, OutFrame, Transport

__all__ = [
    "DeadLetter",
    "Delivery",
    "Entry",
    "GroupInfo",
    "GroupOptions",
    "OutFrame",
    "Transport",
    "TransportClosedError",
    "check_name",
    "open_transport",
    "redact_url",
]

# scheme -> (module, class name, extra, the package whose absence means the extra is missing)
_SCHEMES: dict[str, tuple[str, str, str | None]] = {
    "memory": ("memory", "MemoryTransport", None),
    "redis": ("redis", "RedisTransport", "redis"),
    "rediss": ("redis", "RedisTransport", "redis"),
    "unix": ("redis", "RedisTransport", "redis"),
    "amqp": ("rabbitmq", "RabbitMQTransport", "rabbitmq"),
    "amqps": ("rabbitmq", "RabbitMQTransport", "rabbitmq"),
}

_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")


def check_name(kind: str, value: str) -> str:
    """Validate a namespace, group or consumer name (it becomes part of broker keys)."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise ConfigurationError(
            f"invalid {kind} {value!r}: use 1-128 characters from A-Z a-z 0-9 _ . -"
        )
    return value


# query options whose values are secrets (eventbus' signing keys)
_SECRET_OPTIONS = re.compile(r"(?i)(?<=[?&])(keys)=[^&#]*")


def redact_url(url: str) -> str:
    """The URL with its password and signing keys replaced by ``***``, safe to log and to
    put in errors."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.query and _SECRET_OPTIONS.search("?" + parts.query):
        query = _SECRET_OPTIONS.sub(r"\1=***", "?" + parts.query)[1:]
        parts = parts._replace(query=query)
        url = urlunsplit(parts)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}"
    try:
        port = parts.port
    except ValueError:
        port = None
    if port is not None:
        netloc += f":{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def open_transport(url: str, namespace: str, **options: Any) -> Transport:
    """Make (not yet connect) the transport for ``url``, serving ``namespace``.

    Raises:
        ConfigurationError: the URL is malformed or its scheme unknown.
        MissingDependencyError: the scheme needs an extra that is not installed.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"not a broker URL: {redact_url(str(url))!r}")
    scheme = url.split("://", 1)[0].lower()
    try:
        module_name, class_name, extra = _SCHEMES[scheme]
    except KeyError:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ConfigurationError(
            f"unknown URL scheme {scheme!r} in {redact_url(url)!r}; known: {known}"
        ) from None
    check_name("namespace", namespace)
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        if extra is None or exc.name is None or exc.name.startswith(__name__):
            raise
        raise MissingDependencyError(
            f"{scheme}:// URLs need the {extra!r} extra ({exc.name} is not installed): "
            f"pip install 'eventbus[{extra}]'"
        ) from exc
    cls = getattr(module, class_name)
    transport: Transport = cls(url, namespace, **options)
    return transport
