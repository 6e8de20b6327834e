"""How the Redis transport tells passing trouble from refusals, and how it applies the kit's
one retry policy: to one operation bounded by ``publish_timeout`` (:func:`retrying`: a
publish, a settle, an administrative command) and to its long-running loops (``follow``,
``consume``: :func:`reconnecting`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, TypeVar

import redis.asyncio as aioredis
from redis import exceptions as rexc

from .._exceptions import AuthenticationError, ConnectError, TransportError
from ._kit import Retry, describe, ensure_open

if TYPE_CHECKING:
    from .redis import RedisTransport

__all__ = [
    "classify",
    "is_nogroup",
    "raise_unless_transient",
    "reconnect_pause",
    "reconnecting",
    "retrying",
]

_T = TypeVar("_T")

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


async def retrying(
    op: Callable[[aioredis.Redis], Awaitable[_T]],
    *,
    client: Callable[[], aioredis.Redis],
    timeout: float,
    safe_url: str,
    what: str,
    error: type[TransportError],
) -> _T:
    """Run ``op`` on ``client()`` until it succeeds, retrying passing trouble for
    ``timeout`` seconds (the kit's :class:`Retry`: backoff with jitter, one deadline).

    Raises:
        AuthenticationError: credentials refused (never retried).
        TransportClosedError: the transport is closed (``client()`` raises it).
        error: retries exhausted, or a final refusal.
    """
    retry = Retry(deadline=time.monotonic() + timeout, what=f"Redis {safe_url}: {what}", log=log)
    first: Exception | None = None  # what went wrong, when the deadline cuts the last try
    while True:
        live = client()
        try:
            remaining = max(0.001, retry.deadline() - time.monotonic())
            # not asyncio.wait_for: before 3.12 it can swallow a cancellation
            async with asyncio.timeout(remaining):
                result = await op(live)
        except Exception as exc:
            raise_unless_transient(exc, f"cannot {what}", safe_url, error)
            first = first or exc
            delay = retry.next_delay(exc)
            if delay is None:
                why = describe(exc)
                if first is not exc:
                    why += f" (first: {describe(first)})"
                raise error(
                    f"cannot {what}: Redis at {safe_url} kept failing for {timeout:g}s: {why}"
                ) from exc
            await asyncio.sleep(delay)
            continue
        retry.ok()
        return result
