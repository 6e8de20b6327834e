"""How the Redis transport tells passing trouble from refusals, and the retry policy of its
long-running loops (``follow``, ``consume``)."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Literal

from redis import exceptions as rexc

from .._exceptions import AuthenticationError, ConnectError, TransportError
from ._kit import Retry, describe, ensure_open

if TYPE_CHECKING:
    from .redis import RedisTransport

__all__ = ["classify", "is_nogroup", "raise_unless_transient", "reconnect_pause", "reconnecting"]

log = logging.getLogger("eventbus.transports.redis")

# Replies that mean "the server is there but cannot serve right now" (loading a dataset
# after a restart, a failover in progress): retried like a dropped connection.
# UNBLOCKED: the key a blocked read waited on was deleted; the next read simply waits again.
_TRANSIENT_REPLIES = (
    "LOADING",
    "BUSY ",
    "MASTERDOWN",
    "TRYAGAIN",
    "READONLY",
    "CLUSTERDOWN",
    "UNBLOCKED",
)
_AUTH_REPLIES = ("NOAUTH", "WRONGPASS", "NOPERM")

_Kind = Literal["auth", "transient", "final"]


def raise_unless_transient(
    exc: Exception, what: str, safe_url: str, error: type[TransportError]
) -> None:
    """Raise the typed error for a failure not worth retrying; return for a transient one."""
    kind = classify(exc)
    if kind == "auth":
        raise AuthenticationError(
            f"{what}: Redis at {safe_url} refused the credentials: {exc}"
        ) from exc
    if kind == "final":
        raise error(f"{what}: Redis at {safe_url}: {exc}") from exc


def classify(exc: BaseException) -> _Kind:
    """Whether a failed command is worth retrying."""
    if isinstance(exc, (rexc.AuthenticationError, rexc.AuthorizationError)):
        return "auth"
    if isinstance(exc, rexc.ResponseError):
        text = str(exc)
        if text.startswith(_AUTH_REPLIES) or isinstance(exc, rexc.NoPermissionError):
            return "auth"
        if text.startswith(_TRANSIENT_REPLIES) or isinstance(exc, rexc.ReadOnlyError):
            return "transient"
        return "final"
    if isinstance(exc, (rexc.ConnectionError, rexc.TimeoutError, OSError, asyncio.TimeoutError)):
        return "transient"
    return "final"


def is_nogroup(exc: BaseException) -> bool:
    # Redis 7 answers a blocked XREADGROUP whose stream was deleted (FLUSHDB) with
    # UNBLOCKED; later calls get NOGROUP. Both mean: the group is gone.
    return isinstance(exc, rexc.ResponseError) and str(exc).startswith(("NOGROUP", "UNBLOCKED"))


def reconnecting(transport: RedisTransport, what: str) -> Retry:
    """The retry policy of a long-running loop: bounded by ``reconnect_timeout``."""
    return Retry(
        limit=transport.options.reconnect_timeout,
        cap=5.0,
        what=f"Redis {transport.safe_url}: {what}",
        log=log,
    )


async def reconnect_pause(transport: RedisTransport, retry: Retry, exc: Exception) -> None:
    """Sleep before the next attempt of a long-running loop, or raise if it is not worth one.

    Raises:
        TransportError: the transport was closed, or a final refusal.
        AuthenticationError: the credentials were refused.
        ConnectError: Redis stayed unreachable for ``reconnect_timeout``.
    """
    ensure_open(transport._closed, "Redis")
    raise_unless_transient(exc, retry.what, transport.safe_url, TransportError)
    delay = retry.next_delay(exc)
    if delay is None:
        raise ConnectError(
            f"{retry.what}: unreachable for {transport.options.reconnect_timeout:g}s: "
            f"{describe(exc)}"
        ) from exc
    await asyncio.sleep(delay)
