"""The README's demo and the examples, run as a user runs them: real OS processes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import broker_url

from eventbus._wire import json_schema_text

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=EXAMPLES
    )


def test_committed_schema_is_generated_from_the_structs() -> None:
    committed = (ROOT / "docs" / "wire-format.schema.json").read_text()
    assert committed == json_schema_text(), "run `make schema` and commit the result"


def test_demo_in_one_process() -> None:
    result = run("demo.py", "--url", "memory://")
    assert result.returncode == 0, result.stderr
    assert "Bees communicate through a waggle dance" in result.stdout
    published, received = result.stdout.rsplit("published ", 1)[1].split(", received ")
    assert int(published) == int(received.strip()) > 50


def test_demo_without_a_broker_gives_a_hint_not_a_traceback() -> None:
    result = run("demo.py", "--url", "redis://127.0.0.1:1/0", timeout=60)
    assert result.returncode == 2
    assert "Cannot reach the broker" in result.stderr
    assert "docker compose up -d" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_demo_across_processes(kind: str, namespace: str) -> None:
    url = broker_url(kind)
    result = run("demo.py", "--url", url, "--namespace", namespace)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "exit codes worker=0 live=0 replay=0" in out
    # the worker's output line, the live follower and the replay all show the answer
    assert out.count("Bees communicate through a waggle dance") == 3
    # (the processes share stdout, so their lines may interleave: search, do not split)
    published = re.findall(r"worker: run \S+ done, (\d+) events published", out)
    received = re.findall(r"subscriber: run \S+ ended; (\d+) events received", out)
    assert len(published) == 1
    assert received == [published[0], published[0]]


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ],
)
def test_graph_worker_and_subscriber(kind: str, namespace: str) -> None:
    url = broker_url(kind)
    run_id = "0192f0c6-8f0e-7a51-b1b2-000000000001"
    common = ["--url", url, "--namespace", namespace]
    worker = run("worker.py", "--graph", "--run-id", run_id, *common)
    assert worker.returncode == 0, worker.stderr
    sub = run("subscriber.py", run_id, *common)
    assert sub.returncode == 0, sub.stderr
    assert "[progress 5/5] note 5" in sub.stdout
    assert "Bees communicate" in sub.stdout


@pytest.mark.redis
def test_sync_worker_publishes_a_plain_invoke(namespace: str) -> None:
    import asyncio

    import eventbus

    url = broker_url("redis")
    run_id = "0192f0c6-8f0e-7a51-b1b2-000000000002"
    worker = run(
        "sync_worker.py", "--url", url, "--namespace", namespace, "--run-id", run_id, timeout=60
    )
    assert worker.returncode == 0, worker.stderr
    assert f"run {run_id} done" in worker.stdout

    async def follow() -> list[dict[str, object]]:
        async with eventbus.Subscriber(url, namespace, start_timeout=10) as sub:
            return [event async for event in sub.astream_events(run_id)]

    events = asyncio.run(follow())
    assert events[0]["event"] == "on_chain_start" and events[0]["run_id"] == run_id
    progress = [e["data"] for e in events if e["event"] == "on_custom_event"]
    assert [p["status"] for p in progress] == ["validating", "looking up context"]  # type: ignore[index]
    assert events[-1]["event"] == "on_chain_end"
    assert "Celery workers publish" in str(events[-1]["data"]["output"])  # type: ignore[index]


@pytest.mark.redis
def test_custom_progress_events_arrive_as_dispatched(namespace: str) -> None:
    result = run("custom_progress.py", "--url", broker_url("redis"), "--namespace", namespace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("subscriber: on_custom_event progress_event") == 3
    assert "Finished step 3 of 3" in result.stdout
    assert "3 custom events received, the same as the local astream_events" in result.stdout
