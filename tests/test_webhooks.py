"""The webhook forwarder against a real local HTTP server (uvicorn) that fails on purpose:
500s, a timeout, 429 with Retry-After, a 408, a 400, a record that always fails. Every
request is verified with the ``standardwebhooks`` package."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import msgspec
import pytest
import uvicorn
from langchain_core.runnables import RunnableGenerator, RunnableLambda
from standardwebhooks.webhooks import Webhook
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import eventbus
from eventbus._webhooks import WebhookForwarder, sign

pytestmark = pytest.mark.anyio

WAIT = 60
SECRET = "whsec_" + base64.b64encode(b"eventbus-test-secret-0123456789ab").decode()


class Receiver:
    """An endpoint whose answers follow a script per (seq, attempt): a request's plan is
    the script of the first of its records (its only one, unbatched) that has one."""

    def __init__(self, script: dict[int, list[int | str]]) -> None:
        self.script = script
        self.attempts: Counter[str] = Counter()
        self.arrivals: list[tuple[str, int]] = []  # (webhook-id, seq) as requests arrive
        self.accepted: list[dict[str, Any]] = []
        self.requests: list[tuple[str, list[dict[str, Any]]]] = []  # (webhook-id, records)
        self.bad_signatures = 0
        self.release = asyncio.Event()  # ends the requests that hang on purpose
        self._change = asyncio.Event()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            Webhook(SECRET).verify(body, dict(request.headers))
        except Exception:
            self.bad_signatures += 1
            return Response(status_code=401)
        msg_id = request.headers["webhook-id"]
        record = msgspec.json.decode(body)
        records = record["records"] if record["kind"] == "batch" else [record]
        attempt = self.attempts[msg_id]
        self.attempts[msg_id] += 1
        self.arrivals.append((msg_id, records[0]["seq"]))
        self.requests.append((msg_id, records))
        plans = [self.script[r["seq"]] for r in records if r["seq"] in self.script]
        plan = plans[0] if plans and record["run_id"] == self.run_id else []
        answer = plan[attempt] if attempt < len(plan) else 200
        try:
            if answer == "hang":
                await self.release.wait()
                return Response(status_code=200)  # too late: the client has given up
            headers = {"retry-after": "1"} if answer == 429 else {}
            if answer == 200:
                self.accepted.extend(records)
            return Response(status_code=int(answer), headers=headers)
        finally:
            self._change.set()
            self._change = asyncio.Event()

    run_id = ""

    async def wait_for(self, predicate: Callable[[], bool], timeout: float) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                await self._change.wait()


@contextlib.asynccontextmanager
async def serving(app: Any, lifespan: str = "off") -> AsyncIterator[str]:
    """Any ASGI app on uvicorn, on a free port of 127.0.0.1; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan=lifespan))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        with anyio.fail_after(WAIT):
            await task
        sock.close()


def tokens(n: int) -> Any:
    async def gen(_: AsyncIterator[Any]) -> AsyncIterator[str]:
        for i in range(n):
            yield f"t{i}"

    return RunnableGenerator(gen, name="tokens")


async def publish(url: str, namespace: str, runnable: Any) -> tuple[str, int]:
    run_id = str(uuid.uuid4())
    async with eventbus.Publisher(url, namespace) as pub:
        with contextlib.suppress(ValueError), anyio.fail_after(WAIT):
            await pub.run(runnable, None, config={"run_id": run_id})
        return run_id, pub.stats.events


async def test_retries_dead_letters_order_and_signatures(url: str, namespace: str) -> None:
    receiver = Receiver(
        {
            2: [500, 503, 200],
            3: ["hang", 200],
            4: [429, 200],
            5: [400],
            6: [408, 200],
            7: [500, 500, 500, 500],
        }
    )
    run_a, events_a = await publish(url, namespace, tokens(8))
    run_b, events_b = await publish(url, namespace, tokens(3))
    receiver.run_id = run_a
    async with serving(receiver.app) as base, eventbus.Subscriber(url, namespace) as sub:
        forwarder = WebhookForwarder(
            subscriber=sub,
            group="hooks",
            to=f"{base}/hook",
            secret=SECRET,
            start="first",
            max_attempts=3,
            backoff=0.01,
            timeout=0.5,
        )
        task = asyncio.create_task(forwarder.run())
        try:
            # both runs' end records accepted: everything before them is settled
            await receiver.wait_for(
                lambda: (
                    {(r["run_id"], r["kind"]) for r in receiver.accepted}
                    >= {(run_a, "end"), (run_b, "end")}
                ),
                WAIT,
            )
            await forwarder.wait_for(
                lambda s: s.delivered + s.dead_letters == events_a + events_b + 2, WAIT
            )
        finally:
            receiver.release.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        dead = await sub.dead_letters("hooks")
    assert receiver.bad_signatures == 0
    # every record of run B once; run A all but the two given up on
    accepted = Counter((r["run_id"], r["seq"]) for r in receiver.accepted)
    assert all(n == 1 for n in accepted.values())  # nothing twice after a 2xx
    assert sorted(s for r, s in accepted if r == run_b) == list(range(1, events_b + 2))
    assert sorted(s for r, s in accepted if r == run_a) == [
        s for s in range(1, events_a + 2) if s not in (5, 7)
    ]
    # attempts: retried as scripted, a 400 never, an always-500 until max_attempts
    attempts = {seq: receiver.attempts[f"{run_a}:{seq}"] for seq in range(2, 8)}
    assert attempts == {2: 3, 3: 2, 4: 2, 5: 1, 6: 2, 7: 3}
    assert forwarder.stats.retries == 2 + 1 + 1 + 0 + 1 + 2
    assert forwarder.stats.dead_letters == 2
    assert forwarder.stats.delivered == events_a + 1 - 2 + events_b + 1
    assert dead and all(("HTTP 400" in d.reason or "HTTP 500" in d.reason) for d in dead), [
        d.reason for d in dead
    ]
    # per-run order: a record's first attempt comes after its predecessor's last one
    seqs_a = [seq for msg_id, seq in receiver.arrivals if msg_id.startswith(run_a)]
    assert seqs_a == sorted(seqs_a)
    # the record: the JSON form
    first = next(r for r in receiver.accepted if r["run_id"] == run_b and r["seq"] == 1)
    assert set(first) == {"kind", "run_id", "seq", "id", "event"}
    assert first["event"]["event"] == "on_chain_start"


async def test_batches_per_run(url: str, namespace: str) -> None:
    """``batch=4``: one request per batch of a run's records, in order, signed; a failing
    batch is retried as a whole (same id, same body), a refused one dead-letters all its
    records; nothing lost, nothing accepted twice."""
    # a batch holds at most 4 consecutive records: no two scripted seqs share one
    receiver = Receiver({2: [500, 503, 200], 10: [400], 18: [429, 200], 26: ["hang", 200]})
    run_a, events_a = await publish(url, namespace, tokens(30))
    run_b, events_b = await publish(url, namespace, tokens(12))
    receiver.run_id = run_a
    async with serving(receiver.app) as base, eventbus.Subscriber(url, namespace) as sub:
        forwarder = WebhookForwarder(
            subscriber=sub, group="batched", to=f"{base}/hook", secret=SECRET, start="first",
            max_attempts=3, backoff=0.01, timeout=0.5, batch=4, batch_linger=0.05,
        )  # fmt: skip
        task = asyncio.create_task(forwarder.run())
        try:
            total = events_a + events_b + 2
            await forwarder.wait_for(lambda s: s.delivered + s.dead_letters == total, WAIT)
        finally:
            receiver.release.set()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        dead = await sub.dead_letters("batched")
    assert receiver.bad_signatures == 0
    by_id: dict[str, list[int]] = {}
    for msg_id, records in receiver.requests:
        run_id = records[0]["run_id"]
        seqs = [r["seq"] for r in records]
        # one run per request, consecutive records in order, at most 4; its id names them
        assert {r["run_id"] for r in records} == {run_id}
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and len(seqs) <= 4
        assert msg_id == f"{run_id}:{seqs[0]}-{seqs[-1]}"
        assert by_id.setdefault(msg_id, seqs) == seqs  # a retry is the same batch
    assert any(len(seqs) > 1 for seqs in by_id.values())  # batched, not one per request
    # the refused batch: one attempt, all its records dead-lettered, none accepted
    refused_id, refused = next(
        (i, seqs) for i, seqs in by_id.items() if 10 in seqs and i.startswith(run_a)
    )
    assert receiver.attempts[refused_id] == 1
    assert dead and all("HTTP 400" in d.reason for d in dead), [d.reason for d in dead]
    assert forwarder.stats.dead_letters == len(refused)
    # retried as a whole: 500, 503, 200; 429, 200; a timeout, 200
    for seq, attempts in ((2, 3), (18, 2), (26, 2)):
        msg_id = next(i for i, seqs in by_id.items() if seq in seqs and i.startswith(run_a))
        assert receiver.attempts[msg_id] == attempts, seq
    # every other record accepted exactly once, in order per run
    accepted = [(r["run_id"], r["seq"]) for r in receiver.accepted]
    assert len(accepted) == len(set(accepted))
    for run_id, events in ((run_a, events_a), (run_b, events_b)):
        seqs = [seq for r, seq in accepted if r == run_id]
        skip = refused if run_id == run_a else []
        assert seqs == [s for s in range(1, events + 2) if s not in skip]
    assert forwarder.stats.delivered == len(accepted)
    assert forwarder.stats.requests < forwarder.stats.delivered
    # the requests of run A arrived in order: a batch's first attempt after the previous
    # one's last
    firsts = [seq for msg_id, seq in receiver.arrivals if msg_id.startswith(run_a)]
    assert firsts == sorted(firsts)


async def test_terminal_only(namespace: str) -> None:
    url = f"memory://{uuid.uuid4().hex}"
    receiver = Receiver({})

    async def explode(x: Any) -> Any:
        raise ValueError("the fake provider is down")

    ok_run, ok_events = await publish(url, namespace, tokens(5))
    bad_run, _ = await publish(url, namespace, RunnableLambda(explode, name="explode"))
    async with serving(receiver.app) as base:
        forwarder = WebhookForwarder(
            url, namespace, group="notify", to=f"{base}/hook", secret=SECRET,
            start="first", terminal_only=True,
        )  # fmt: skip
        task = asyncio.create_task(forwarder.run())
        try:
            await receiver.wait_for(lambda: len(receiver.accepted) >= 2, WAIT)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    kinds = {r["run_id"]: r for r in receiver.accepted}
    assert kinds[ok_run]["kind"] == "end" and kinds[ok_run]["seq"] == ok_events + 1
    error = kinds[bad_run]["error"]
    assert kinds[bad_run]["kind"] == "error"
    assert (error["class"], error["message"]) == ("ValueError", "the fake provider is down")
    assert "traceback" not in error
    assert len(receiver.accepted) == 2 and forwarder.stats.skipped >= ok_events


@pytest.mark.redis
async def test_eventbus_forward_command_batches(namespace: str) -> None:
    """``eventbus forward --batch 3`` in its own process, against the real receiver."""
    import subprocess
    import sys

    from conftest import broker_url

    url = broker_url("redis")
    receiver = Receiver({})
    run_id, events = await publish(url, namespace, tokens(7))
    receiver.run_id = run_id
    async with serving(receiver.app) as base:
        proc = subprocess.Popen(  # noqa: ASYNC220 - the test owns this process
            [sys.executable, "-m", "eventbus", "forward", "--url", url, "-n", namespace,
             "--group", "cli", "--to", f"{base}/hook", "--secret", SECRET, "--start", "first",
             "--batch", "3"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            await receiver.wait_for(lambda: any(r["kind"] == "end" for r in receiver.accepted),
                                    WAIT)  # fmt: skip
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    assert [r["seq"] for r in receiver.accepted] == list(range(1, events + 2))
    assert all(1 <= len(records) <= 3 for _, records in receiver.requests)
    assert receiver.bad_signatures == 0


def test_signature_matches_the_reference_implementation() -> None:
    body = b'{"kind":"end"}'
    header = sign(SECRET, "run:1", 1_700_000_000, body)
    import datetime as dt

    expected = Webhook(SECRET).sign("run:1", dt.datetime.fromtimestamp(1_700_000_000, dt.UTC),
                                    body.decode())  # fmt: skip
    assert header == expected
    with pytest.raises(eventbus.ConfigurationError):
        sign("whsec_not base64!", "x", 1, b"")
