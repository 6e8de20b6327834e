"""Fan-out across real OS processes: one worker, two followers, two consumer groups (one
with two competing consumers), each checked event by event against the worker's own
local ``astream_events``."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import broker_url

HERE = Path(__file__).resolve().parent
WAIT = 90


class Proc:
    """A child process whose JSON lines are read by a thread into a queue."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.popen = subprocess.Popen(
            [sys.executable, str(HERE / "procs.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=HERE,
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def next(self, deadline: float) -> dict[str, Any] | None:
        item = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
        if item is not None:
            self.seen.append(item)
        return item

    def until(self, kind: str, deadline: float) -> list[dict[str, Any]]:
        while True:
            item = self.next(deadline)
            if item is None:
                err = self.popen.stderr.read() if self.popen.stderr else ""
                raise AssertionError(f"process ended before {kind!r}: {err}")
            if item["kind"] == kind:
                return self.seen

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)
        self.reader.join(timeout=10)
        for pipe in (self.popen.stdout, self.popen.stderr):
            if pipe is not None:
                pipe.close()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_worker_followers_and_groups_in_separate_processes(kind: str, namespace: str) -> None:
    url = broker_url(kind)
    run_id = str(uuid.uuid4())
    deadline = time.monotonic() + WAIT
    procs: list[Proc] = []
    try:
        followers = [Proc("follower", url, namespace, run_id) for _ in range(2)]
        audit = Proc("consumer", url, namespace, "audit", "audit-1")
        workers = [Proc("consumer", url, namespace, "work", f"work-{i}") for i in range(2)]
        procs = [*followers, audit, *workers]
        for p in procs:
            p.until("ready", deadline)
        worker = Proc("worker", url, namespace, run_id)
        procs.append(worker)
        local = [e["event"] for e in worker.until("done", deadline) if e["kind"] == "event"]
        assert len(local) > 10

        for f in followers:
            remote = [e["event"] for e in f.until("end", deadline) if e["kind"] == "event"]
            assert remote == local  # the wire trees name every type: equal means same types

        def group_events(members: list[Proc]) -> list[Any]:
            # read until the group has the run's end, then collect its events in seq order
            got: dict[int, dict[str, Any]] = {}
            ended = False
            while not ended or len(got) < len(local):
                for m in members:
                    try:
                        item = m.lines.get(timeout=0.05)
                    except queue.Empty:
                        continue
                    assert item is not None, "a consumer died"
                    m.seen.append(item)
                    if item.get("run") != run_id:
                        continue
                    if item["kind"] == "end":
                        ended = True
                    elif item["kind"] == "event":
                        assert item["seq"] not in got, "delivered twice within one group"
                        got[item["seq"]] = item["event"]
                assert time.monotonic() < deadline, f"group has {len(got)}/{len(local)}"
            return [got[s] for s in sorted(got)]

        assert group_events([audit]) == local
        assert group_events(workers) == local
        shares = [sum(1 for i in w.seen if i.get("run") == run_id) for w in workers]
        assert all(shares), f"both competing consumers should have had work: {shares}"
    finally:
        for p in procs:
            p.stop()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_sigkilled_worker_leaves_followers_a_gap_free_prefix_then_worker_lost(
    kind: str, namespace: str
) -> None:
    url = broker_url(kind)
    run_id = str(uuid.uuid4())
    deadline = time.monotonic() + WAIT
    procs: list[Proc] = []
    try:
        # idle 3 s: 15 missed heartbeats of the worker (0.2 s), so a loaded machine does not
        # make a live worker look dead
        followers = [Proc("follower", url, namespace, run_id, "3") for _ in range(2)]
        procs = [*followers]
        for p in procs:
            p.until("ready", deadline)
        worker = Proc("endless", url, namespace, run_id)
        procs.append(worker)
        worker.until("flushed", deadline)  # ten events are on the broker, more are coming
        worker.popen.send_signal(signal.SIGKILL)
        worker.popen.wait(timeout=10)
        assert worker.popen.returncode == -signal.SIGKILL
        # what the worker saw locally before it died, the unflushed tail included
        while worker.next(deadline) is not None:
            pass
        local = [e["event"] for e in worker.seen if e["kind"] == "event"]
        assert len(local) >= 11  # the root's start and ten ticks at least

        for f in followers:
            seen = f.until("lost", deadline)
            remote = [e["event"] for e in seen if e["kind"] == "event"]
            # every event published before the kill, in order, none missing: a prefix of
            # the worker's own stream (it may have emitted a few more that never left it)
            assert len(remote) >= 11
            assert remote == local[: len(remote)]
            assert seen[-1] == {"kind": "lost", "idle_timeout": 3.0}
    finally:
        for p in procs:
            p.stop()


def _forge(url: str, namespace: str, run_id: str, producer: str) -> int:
    """Write forged frames into the run (its stream and the group stream): unsigned, and
    signed with the right key id but another secret. Returns how many."""
    from eventbus import Keyring
    from eventbus._wire import Cancelled, End, Event, Failed, Heartbeat, encode_envelope
    from eventbus.transports import OutFrame, open_transport

    wrong = Keyring({"k1": "w" * 32})
    ev = {"event": "on_custom_event", "run_id": run_id, "name": "forged", "tags": [],
          "metadata": {}, "data": "forged", "parent_ids": []}  # fmt: skip
    records: list[Any] = [[Heartbeat(10**9, 0.0)]]
    for seq in range(1, 9):  # whatever number a follower expects next, one of each has it
        records += [
            [End(seq, 0.0)],
            [Failed(seq, 0.0, "Forged", "evil", "forged", "")],
            [Cancelled(seq, 0.0, "forged")],
            [Event(seq, 0.0, ev)],
        ]
    frames = [encode_envelope("msgpack", namespace, run_id, producer, r) for r in records]
    frames += [encode_envelope("msgpack", namespace, run_id, producer, r, wrong) for r in records]

    async def go() -> None:
        t = open_transport(url, namespace)
        await t.connect()
        try:
            await t.publish([OutFrame(run_id, f) for f in frames])
        finally:
            await t.aclose()

    asyncio.run(go())
    return len(frames)


@pytest.mark.slow  # ~12 s per broker, most of it starting three Python processes
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_forged_frames_never_reach_signed_followers_or_groups(kind: str, namespace: str) -> None:
    # worker, follower and consumer are separate processes sharing a key through
    # $EVENTBUS_KEYS; this process forges frames before the run starts and again while it
    # runs. The application sees exactly the worker's local events, nothing lost or doubled.
    url = broker_url(kind)
    run_id = str(uuid.uuid4())
    env = {"EVENTBUS_KEYS": "k1:" + "s" * 32}
    deadline = time.monotonic() + WAIT
    procs: list[Proc] = []
    try:
        follower = Proc("follower", url, namespace, run_id, env=env)
        consumer = Proc("consumer", url, namespace, "audit", "audit-1", env=env)
        procs = [follower, consumer]
        for p in procs:
            p.until("ready", deadline)
        forged = _forge(url, namespace, run_id, "anyone:1:x")  # before the run: first in line
        worker = Proc("worker", url, namespace, run_id, env=env)
        procs.append(worker)
        follower.until("event", deadline)
        forged += _forge(url, namespace, run_id, "anyone:1:x")  # while it runs
        local = [e["event"] for e in worker.until("done", deadline) if e["kind"] == "event"]
        seen = follower.until("end", deadline)
        assert [e["event"] for e in seen if e["kind"] == "event"] == local
        stats = next(e for e in seen if e["kind"] == "stats")
        # at least those forged before the run (it reads them first); those forged while
        # it ran count only if they landed before the run's end
        assert stats["unsigned"] >= forged // 4 and stats["bad_signature"] >= forged // 4

        got: Counter[int] = Counter()
        events: dict[int, Any] = {}
        end: dict[str, Any] | None = None
        while end is None:
            item = consumer.next(deadline)
            assert item is not None, "the consumer died"
            if item.get("run") == run_id and item["kind"] == "event":
                got[item["seq"]] += 1
                events[item["seq"]] = item["event"]
            elif item.get("run") == run_id:
                assert item["kind"] == "end"
                end = item
        stats = consumer.until("stats", deadline)[-1]
        lost = len(local) - len(got)
        duplicated = sum(n - 1 for n in got.values())
        assert (lost, duplicated) == (0, 0)
        assert [events[s] for s in sorted(events)] == local
        assert stats["unsigned"] >= forged // 4 and stats["bad_signature"] >= forged // 4
    finally:
        for p in procs:
            p.stop()


# -- remote cancel -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "how"),
    [
        pytest.param("redis", "run", marks=pytest.mark.redis),
        pytest.param("redis", "sync", marks=pytest.mark.redis),
        pytest.param("rabbitmq", "stream", marks=pytest.mark.rabbitmq),
        pytest.param("rabbitmq", "run", marks=pytest.mark.rabbitmq),
    ],
)
def test_cancel_from_another_process_ends_the_run_for_worker_and_followers(
    kind: str, how: str, namespace: str
) -> None:
    url = broker_url(kind)
    run_id = str(uuid.uuid4())
    deadline = time.monotonic() + WAIT
    worker = Proc("cancellable", url, namespace, run_id, how)
    follower = Proc("outcome", url, namespace, run_id)
    try:
        follower.until("ready", deadline)
        worker.until("flushed", deadline)
        command = [sys.executable, "-m", "eventbus", "cancel", run_id, "--url", url]
        cancel = subprocess.run(
            [*command, "-n", namespace, "--reason", "user pressed stop"],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
        assert cancel.returncode == 0, cancel.stderr
        assert f"run {run_id}: cancelled by worker" in cancel.stdout
        assert worker.until("cancelled", deadline)[-1]["reason"] == "user pressed stop"
        assert follower.until("cancelled", deadline)[-1]["reason"] == "user pressed stop"
        if how != "sync":
            assert worker.until("next", deadline)[-1]["output"] == 2
        again = subprocess.run(
            [*command, "-n", namespace, "--json"], capture_output=True, text=True, timeout=WAIT
        )
        assert again.returncode == 0, again.stderr
        result = json.loads(again.stdout)
        assert (result["outcome"], result["status"]["status"]) == ("finished", "cancelled")
        assert result["status"]["error"] == "user pressed stop"
    finally:
        worker.stop()
        follower.stop()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_cancelling_a_run_whose_worker_was_killed_reports_no_worker(
    kind: str, namespace: str
) -> None:
    url = broker_url(kind)
    run_id = str(uuid.uuid4())
    deadline = time.monotonic() + WAIT
    worker = Proc("cancellable", url, namespace, run_id, "run")
    try:
        worker.until("flushed", deadline)
        worker.popen.send_signal(signal.SIGKILL)
        worker.popen.wait(timeout=WAIT)
        cancel = subprocess.run(
            [sys.executable, "-m", "eventbus", "cancel", run_id, "--url", url, "-n", namespace,
             "--timeout", "1", "--json"],
            capture_output=True,
            text=True,
            timeout=WAIT,
        )  # fmt: skip
        assert cancel.returncode == 1, cancel.stderr
        result = json.loads(cancel.stdout)
        assert result["outcome"] == "no_worker" and result["worker"] is None
        assert result["status"]["status"] in ("running", "lost")  # no end was written
    finally:
        worker.stop()
