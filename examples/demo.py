"""The demo: a worker process publishes a LangChain run; a separate subscriber process
follows it live, and a second subscriber process replays it after it ended.

    python examples/demo.py [--url URL]      # default: $EVENTBUS_URL or redis://localhost:6379/0

Needs a broker: Redis or RabbitMQ on localhost (``docker compose up -d`` starts both),
or ``--url memory://`` to try it in one process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import uuid
from pathlib import Path

import eventbus

HERE = Path(__file__).resolve().parent


def hint(url: str, exc: Exception) -> str:
    return (
        f"Cannot reach the broker at {eventbus.transports.redact_url(url)} ({exc}).\n"
        "Start Redis and RabbitMQ on localhost (with Docker: `docker compose up -d` in the "
        "repository; on Debian as root: `make brokers`), point --url / EVENTBUS_URL at a "
        "broker you have (redis://host:6379/0 or amqp://user:pass@host:5672/), or try it in "
        "one process with --url memory://"
    )


async def check(url: str, namespace: str) -> None:
    async with eventbus.Publisher(url, namespace):
        pass


def run_script(name: str, *args: str, capture: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / name), *args],
        text=True,
        cwd=HERE,
        stdout=subprocess.PIPE if capture else sys.stdout,
    )


async def in_process(url: str, namespace: str, run_id: str) -> int:
    from chains import chat_chain

    async with (
        eventbus.Publisher(url, namespace) as pub,
        eventbus.Subscriber(url, namespace) as sub,
    ):
        follower = asyncio.create_task(_print(sub, run_id))
        await pub.run(chat_chain(), {"q": "How do bees talk?"}, config={"run_id": run_id})
        received = await follower
        print(f"\ndemo (one process): published {pub.stats.events}, received {received}")
        return 0 if received == pub.stats.events else 1


async def _print(sub: eventbus.Subscriber, run_id: str) -> int:
    n = 0
    async for event in sub.astream_events(run_id):
        n += 1
        if event["event"] == "on_chat_model_stream":
            print(event["data"]["chunk"].content, end="", flush=True)
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("EVENTBUS_URL", "redis://localhost:6379/0"))
    parser.add_argument("--namespace", default=os.environ.get("EVENTBUS_NAMESPACE", "default"))
    args = parser.parse_args()
    run_id = str(uuid.uuid4())
    common = ["--url", args.url, "--namespace", args.namespace]

    if args.url.startswith("memory://"):
        return asyncio.run(in_process(args.url, args.namespace, run_id))
    try:
        asyncio.run(check(args.url, args.namespace))
    except eventbus.EventbusError as exc:
        print(hint(args.url, exc), file=sys.stderr)
        return 2

    print(f"demo: run {run_id} on {eventbus.transports.redact_url(args.url)}\n")
    live = run_script("subscriber.py", run_id, *common)  # subscribes before the run starts
    # the worker's report is printed after the live view, not into the middle of it
    worker = run_script("worker.py", "--run-id", run_id, *common, capture=True)
    report, _ = worker.communicate(timeout=120)
    codes = [worker.returncode, live.wait(timeout=120)]
    print(report, end="", flush=True)
    print("\ndemo: replaying the finished run from the broker in a new process:")
    replay = run_script("subscriber.py", run_id, *common)
    codes.append(replay.wait(timeout=120))
    print(f"\ndemo: exit codes worker={codes[0]} live={codes[1]} replay={codes[2]}")
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
