"""A worker process: runs a chain and publishes every event.

    python examples/worker.py --url redis://localhost:6379/0 --run-id 0192...   # prints the run id

Run a subscriber (examples/subscriber.py) with the same run id, before or after.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid

from chains import chat_chain, research_graph

import eventbus


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("EVENTBUS_URL", "redis://localhost:6379/0"))
    parser.add_argument("--namespace", default=os.environ.get("EVENTBUS_NAMESPACE", "default"))
    parser.add_argument("--run-id", default=str(uuid.uuid4()))
    parser.add_argument("--graph", action="store_true", help="run the LangGraph graph instead")
    args = parser.parse_args()

    async with eventbus.Publisher(args.url, args.namespace) as pub:
        if args.graph:
            output = await pub.run(
                research_graph(),
                {"topic": "bees", "notes": [], "answer": ""},
                config={"run_id": args.run_id},
                stream_mode=["updates", "custom", "messages"],
            )
        else:
            output = await pub.run(
                chat_chain(), {"q": "How do bees talk?"}, config={"run_id": args.run_id}
            )
    print(
        f"worker: run {args.run_id} done, {pub.stats.events} events published; output: {output!r}"
    )


if __name__ == "__main__":
    asyncio.run(main())
