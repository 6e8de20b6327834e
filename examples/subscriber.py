"""A subscriber service: follows one run and prints it as it happens.

    python examples/subscriber.py --url redis://localhost:6379/0 RUN_ID

Tokens are printed as they stream, progress events as a line each; it exits when the run
ends (non-zero if the run failed).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import eventbus


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id")
    parser.add_argument("--url", default=os.environ.get("EVENTBUS_URL", "redis://localhost:6379/0"))
    parser.add_argument("--namespace", default=os.environ.get("EVENTBUS_NAMESPACE", "default"))
    args = parser.parse_args()

    count = 0
    async with eventbus.Subscriber(args.url, args.namespace, start_timeout=60) as sub:
        try:
            async for event in sub.astream_events(args.run_id):
                count += 1
                kind = event["event"]
                if kind == "on_chat_model_stream":
                    print(event["data"]["chunk"].content, end="", flush=True)
                elif kind == "on_custom_event" and event["name"] == "progress":
                    p = event["data"]
                    print(f"[progress {p['current']}/{p['total']}] {p['status']}", flush=True)
                elif kind == "on_chain_stream" and event["run_id"] == args.run_id:
                    chunk = event["data"]["chunk"]
                    if isinstance(chunk, tuple) and chunk[0] == "custom":
                        p = chunk[1]
                        print(f"[progress {p['current']}/{p['total']}] {p['status']}", flush=True)
        except eventbus.RunError as exc:
            print(f"\nsubscriber: {exc}", file=sys.stderr)
            return 1
    print(f"\nsubscriber: run {args.run_id} ended; {count} events received")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
