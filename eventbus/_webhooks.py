"""The webhook forwarder: a consumer-group member that POSTs each record of every run to
an HTTP endpoint, signed per the Standard Webhooks specification (``eventbus[http]``).

Each request carries one record in the JSON form (``docs/json-form.md``, "Records")::

    POST <to>
    content-type: application/json
    webhook-id: <run_id>:<seq>          (the same on every retry: receivers deduplicate)
    webhook-timestamp: <unix seconds>   (of this attempt)
    webhook-signature: v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">

    {"kind": "event", "run_id": ..., "seq": 7, "id": null, "event": {...}}

With ``batch`` > 1, a run's records go by batches, one request per batch (only records of
one run, in order; a batch holds what is waiting, up to ``batch`` records, after
``batch_linger`` seconds at most for more)::

    webhook-id: <run_id>:<first seq>-<last seq>   (the same on every retry of the batch)

    {"kind": "batch", "run_id": ..., "records": [{"kind": "event", ...}, ...]}

A redelivered record (a forwarder restarted before its ack) may come back in a batch of
another composition, with another id: receivers deduplicate by ``(run_id, seq)``.

Delivery: a record (a batch: each of its records) is acked in its group only after a
2xx. 5xx, 408, 429, timeouts and connection errors are retried with exponential backoff
and full jitter (``Retry-After`` is honoured, as seconds or an HTTP date, capped at
``max_backoff``); another 4xx is not retried. After ``max_attempts`` attempts, or on
such a 4xx, the record (every record of the batch) is rejected into the group's dead
letters (``Subscriber.dead_letters(group)``) with the reason. A run's requests go one at
a time, in order (the next waits for the previous one's 2xx or dead letter); different
runs are delivered concurrently.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import email.utils
import hashlib
import hmac
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import anyio
import httpx

from ._exceptions import ConfigurationError
from ._jsonable import dumps, record_jsonable
from ._subscriber import Message, Subscriber

__all__ = ["WebhookForwarder", "WebhookStats", "sign"]

logger = logging.getLogger("eventbus.webhooks")


def _secret_bytes(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        return secret
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret[len("whsec_") :], validate=True)
        except ValueError:
            raise ConfigurationError("a whsec_ secret must be base64 after its prefix") from None
    return secret.encode("utf-8")


def sign(secret: str | bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` header value: ``v1,<base64 HMAC-SHA256>`` of
    ``"<msg_id>.<timestamp>.<body>"`` keyed with the secret (``whsec_<base64>``, or raw).

    Raises:
        ConfigurationError: a ``whsec_`` secret that is not base64.
    """
    content = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


@dataclass
class WebhookStats:
    """Counters: ``attempts`` (requests sent), ``delivered`` (records acked after a 2xx),
    ``retries`` (attempts after the first), ``dead_letters`` (records given up on),
    ``skipped`` (records not forwarded: ``terminal_only``), ``requests`` (delivered
    requests: equal to ``delivered`` without batching)."""

    attempts: int = 0
    delivered: int = 0
    retries: int = 0
    dead_letters: int = 0
    skipped: int = 0
    requests: int = 0


class _GiveUp(Exception):
    pass


class WebhookForwarder:
    """Forwards every record of the namespace's runs to ``to``, as a member of ``group``.

    Args:
        url: broker URL, or ``subscriber``.
        namespace: the publishers' namespace.
        group: the consumer group (several forwarders of one group share the work).
        to: the endpoint URL.
        secret: the signing secret (``whsec_<base64>`` as Standard Webhooks issues them).
        consumer: this member's name (default: ``forwarder-<random>``).
        start: where a new group begins: ``"new"`` records or the ``"first"`` retained.
        terminal_only: forward only each run's end record (``end``/``error``/``cancelled``),
            the "notify me when done" case; the events are acked unsent.
        max_attempts: attempts per record before it is dead-lettered.
        backoff: the first retry's backoff ceiling in seconds (doubling per attempt).
        max_backoff: the longest wait between attempts, ``Retry-After`` included.
        timeout: seconds per request.
        max_pending: records read but not yet delivered, all runs together (backpressure).
        headers: extra request headers (e.g. an API key of the receiver).
        include_traceback: put the worker's traceback in error records.
        batch: records of one run per request at most (1: one record per request, the
            record itself as the body; more: ``{"kind": "batch", ...}`` bodies).
        batch_linger: seconds a batch that is not full waits for more of its run's
            records before it is sent (0: it takes what is waiting).

    Raises:
        ConfigurationError, MissingDependencyError: as :class:`~eventbus.Subscriber`, or a
            malformed secret.
    """

    def __init__(
        self,
        url: str | None = None,
        namespace: str = "default",
        *,
        group: str,
        to: str,
        secret: str | bytes,
        subscriber: Subscriber | None = None,
        consumer: str | None = None,
        start: Literal["first", "new"] = "new",
        terminal_only: bool = False,
        max_attempts: int = 8,
        backoff: float = 0.5,
        max_backoff: float = 300.0,
        timeout: float = 10.0,
        max_pending: int = 1000,
        headers: dict[str, str] | None = None,
        include_traceback: bool = False,
        visibility_timeout: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        batch: int = 1,
        batch_linger: float = 0.0,
    ) -> None:
        if subscriber is None:
            if url is None:
                raise ConfigurationError("WebhookForwarder needs a broker url or a subscriber")
            subscriber = Subscriber(url, namespace)
            self._owns_subscriber = True
        else:
            self._owns_subscriber = False
        _secret_bytes(secret)  # fails early on a malformed secret
        self.subscriber = subscriber
        self.group = group
        self.to = to
        self.secret = secret
        self.consumer = consumer or f"forwarder-{random.getrandbits(48):012x}"
        self.start = start
        self.terminal_only = terminal_only
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.timeout = timeout
        self.headers = dict(headers or {})
        self.include_traceback = include_traceback
        self.visibility_timeout = visibility_timeout
        self.batch = max(1, batch)
        self.batch_linger = max(0.0, batch_linger)
        self.stats = WebhookStats()
        self._pending = asyncio.Semaphore(max(1, max_pending))
        self._runs: dict[str, asyncio.Queue[Message]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._transport = transport
        self._sleep: Callable[[float], Any] = asyncio.sleep
        self._change = asyncio.Event()

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def wait_for(self, predicate: Callable[[WebhookStats], bool], timeout: float) -> None:
        """Wait until ``predicate(self.stats)`` holds (checked as records are settled).

        Raises:
            TimeoutError: not within ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            while not predicate(self.stats):
                await self._change.wait()

    async def run(self) -> None:
        """Forward until cancelled.

        Raises:
            ConnectError, AuthenticationError: the broker cannot be used.
        """
        async with contextlib.AsyncExitStack() as stack:
            if self._owns_subscriber:
                await stack.enter_async_context(self.subscriber)
            client = await stack.enter_async_context(
                httpx.AsyncClient(timeout=self.timeout, transport=self._transport)
            )
            messages = self.subscriber.consume(
                self.group,
                self.consumer,
                start=self.start,
                # a record waits for its run's earlier ones: give it time before redelivery
                visibility_timeout=self.visibility_timeout,
                max_deliveries=1_000_000,  # retries are counted here, not by redelivery
            )
            try:
                async for msg in messages:
                    if self.terminal_only and msg.kind == "event":
                        self.stats.skipped += 1
                        await msg.ack()
                        continue
                    await self._pending.acquire()
                    queue = self._runs.get(msg.run_id)
                    if queue is None:
                        queue = self._runs[msg.run_id] = asyncio.Queue()
                        self._workers[msg.run_id] = asyncio.create_task(
                            self._run_worker(client, msg.run_id, queue)
                        )
                    queue.put_nowait(msg)
            finally:
                with contextlib.suppress(Exception):
                    await messages.aclose()
                for task in self._workers.values():
                    task.cancel()
                for task in list(self._workers.values()):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _run_worker(
        self, client: httpx.AsyncClient, run_id: str, queue: asyncio.Queue[Message]
    ) -> None:
        try:
            while not queue.empty():
                # (when the queue is empty, nothing is left of this run for now: the worker
                # ends, and a later record of the run starts another)
                batch = [queue.get_nowait()]
                try:
                    if self.batch > 1:
                        await self._fill(queue, batch)
                    await self._deliver(client, batch)
                finally:
                    for _ in batch:
                        self._pending.release()
                    self._changed()
        finally:
            if self._runs.get(run_id) is queue and queue.empty():
                del self._runs[run_id]
                self._workers.pop(run_id, None)

    async def _fill(self, queue: asyncio.Queue[Message], batch: list[Message]) -> None:
        """Up to ``batch`` records of the run: what waits, then for ``batch_linger``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_linger
        while len(batch) < self.batch:
            if not queue.empty():
                batch.append(queue.get_nowait())
                continue
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                with anyio.fail_after(left):
                    batch.append(await queue.get())
            except TimeoutError:
                return

    def _record(self, msg: Message) -> dict[str, Any]:
        if msg.kind == "event":
            return record_jsonable("event", msg.run_id, msg.seq, event=msg.event)
        return record_jsonable(
            msg.kind, msg.run_id, msg.seq, error=msg.error, traceback=self.include_traceback
        )

    async def _deliver(self, client: httpx.AsyncClient, batch: list[Message]) -> None:
        first, last = batch[0], batch[-1]
        if self.batch == 1:
            body = dumps(self._record(first))
            msg_id = f"{first.run_id}:{first.seq}"
        else:
            records = [self._record(m) for m in batch]
            body = dumps({"kind": "batch", "run_id": first.run_id, "records": records})
            msg_id = f"{first.run_id}:{first.seq}-{last.seq}"
        reason = "no attempt"
        for attempt in range(self.max_attempts):
            if attempt:
                self.stats.retries += 1
            timestamp = int(time.time())
            headers = {
                **self.headers,
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(self.secret, msg_id, timestamp, body),
            }
            self.stats.attempts += 1
            wait: float | None = None
            try:
                response = await client.post(self.to, content=body, headers=headers)
            except httpx.TimeoutException:
                reason = "timed out"
            except httpx.TransportError as exc:
                reason = f"connection error: {type(exc).__name__}"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    for msg in batch:
                        await msg.ack()
                    self.stats.delivered += len(batch)
                    self.stats.requests += 1
                    return
                reason = f"HTTP {status}"
                if 400 <= status < 500 and status not in (408, 429):
                    break  # the receiver refuses this record: retrying cannot help
                wait = _retry_after(response.headers.get("retry-after"))
            if attempt + 1 < self.max_attempts:
                ceiling = min(self.max_backoff, self.backoff * 2**attempt)
                delay = random.uniform(0, ceiling)  # full jitter
                if wait is not None:
                    delay = max(delay, min(wait, self.max_backoff))
                await self._sleep(delay)
        self.stats.dead_letters += len(batch)
        logger.warning("webhook %s to %s dead-lettered: %s", msg_id, self.to, reason)
        for msg in batch:
            await msg.reject(f"webhook to {self.to}: {reason} after {attempt + 1} attempt(s)")


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
