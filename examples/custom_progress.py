"""Custom events, as in LangChain's guide "How to dispatch custom callback events",
published by a worker and followed by a subscriber through the broker.

    python examples/custom_progress.py --url redis://localhost:6379/0

A ``RunnableLambda`` reports its progress with ``adispatch_custom_event``; locally those
arrive in ``astream_events(version="v2")`` as ``on_custom_event`` events. Here a
:class:`eventbus.Publisher` runs it and a :class:`eventbus.Subscriber` (which could be in
another process: it only shares the broker) gets exactly those events back.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from typing import Any

from langchain_core.callbacks.manager import adispatch_custom_event
from langchain_core.runnables import RunnableConfig, RunnableLambda

import eventbus


@RunnableLambda
async def slow_thing(some_input: str, config: RunnableConfig) -> str:
    """Does something that takes a while, and says how far it is (the guide's example)."""
    await adispatch_custom_event(
        "progress_event", {"message": "Finished step 1 of 3"}, config=config
    )
    await asyncio.sleep(0.01)  # stands in for real work
    await adispatch_custom_event(
        "progress_event", {"message": "Finished step 2 of 3"}, config=config
    )
    await asyncio.sleep(0.01)
    await adispatch_custom_event(
        "progress_event", {"message": "Finished step 3 of 3"}, config=config
    )
    return "Done"


async def follow(sub: eventbus.Subscriber, run_id: str) -> list[dict[str, Any]]:
    """The subscriber side: the run's events, of which it prints the custom ones."""
    received = []
    async for event in sub.astream_events(run_id):
        if event["event"] != "on_custom_event":
            continue
        print(f"subscriber: {event['event']} {event['name']}: {event['data']}", flush=True)
        received.append(event)
    return received


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("EVENTBUS_URL", "redis://localhost:6379/0"))
    parser.add_argument("--namespace", default=os.environ.get("EVENTBUS_NAMESPACE", "default"))
    args = parser.parse_args()
    run_id = str(uuid.uuid4())

    async with (
        eventbus.Subscriber(args.url, args.namespace, start_timeout=30) as sub,
        eventbus.Publisher(args.url, args.namespace) as pub,
    ):
        follower = asyncio.create_task(follow(sub, run_id))  # may start before the run: fine
        output = await pub.run(slow_thing, "hello world", config={"run_id": run_id})
        received = await follower

    # what the same runnable yields locally, for comparison
    local = [
        e
        async for e in slow_thing.astream_events("hello world", version="v2")
        if e["event"] == "on_custom_event"
    ]
    same = [(e["name"], e["data"]) for e in received] == [(e["name"], e["data"]) for e in local]
    print(
        f"custom_progress: output {output!r}; {len(received)} custom events received, "
        f"{'the same as' if same else 'DIFFERENT from'} the local astream_events"
    )
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
