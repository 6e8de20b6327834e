"""Where eventbus' time goes: cProfile of the paths that miss their targets.

    python -m benchmarks._profile [publish|run|follow|latency] [--broker redis] [-n N]

* ``publish``: ``emit_all`` of N pre-built token events (the publish scenario's path);
* ``run``: ``Publisher.run`` of ``prompt | NativeFakeChat(N tokens) | parser``, and the same
  chain's local ``astream_events`` profiled alike, so the difference is eventbus';
* ``follow``: ``Subscriber.follow`` replaying a run of N token events.

Prints the functions with the most own time (tottime), in µs per event, and the
cumulative time of eventbus' own entry points.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import uuid
from typing import Any

from ._common import URLS, cleanup, emit_all, fresh, streaming_chain, token_events


def _report(prof: cProfile.Profile, events: int, title: str, top: int = 28) -> None:
    stats = pstats.Stats(prof)
    total = stats.total_tt  # type: ignore[attr-defined]
    per_event = total / events * 1e6
    print(f"\n### {title}: {events} events, {total:.3f} s profiled = {per_event:.1f} µs/event")
    rows = []
    for (file, line, func), (_cc, nc, tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        short = file.split("site-packages/")[-1].split("/work/main/")[-1]
        rows.append((tt, ct, nc, f"{short}:{line}({func})"))
    print(f"{'own µs/ev':>10} {'cum µs/ev':>10} {'calls/ev':>9}  function")
    for tt, ct, nc, name in sorted(rows, reverse=True)[:top]:
        print(f"{tt / events * 1e6:10.2f} {ct / events * 1e6:10.2f} {nc / events:9.2f}  {name}")
    print("-- eventbus entry points (cumulative):")
    for tt, ct, nc, name in sorted(rows, key=lambda r: -r[1]):
        if "eventbus/" in name and ct / events * 1e6 > 0.5:
            print(f"{tt / events * 1e6:10.2f} {ct / events * 1e6:10.2f} {nc / events:9.2f}  {name}")


async def _publish(url: str, ns: str, n: int) -> None:
    from eventbus import Publisher

    events = token_events(n)
    async with Publisher(url, namespace=ns) as pub:
        await emit_all(pub, events[:500])  # warm
        prof = cProfile.Profile()
        prof.enable()
        await emit_all(pub, events)
        prof.disable()
        print(f"publisher stats: {pub.stats}")
    _report(prof, n, f"emit_all → {url.split(':')[0]}")


async def _run(url: str, ns: str, tokens: int) -> None:
    from eventbus import Publisher

    chain = streaming_chain(tokens)
    n = 0
    async for _ in chain.astream_events({"q": "hi"}, version="v2"):
        n += 1
    prof = cProfile.Profile()
    prof.enable()
    async for _ in chain.astream_events({"q": "hi"}, version="v2"):
        pass
    prof.disable()
    _report(prof, n, "local astream_events (baseline)", top=12)
    async with Publisher(url, namespace=ns) as pub:
        await pub.run(chain, {"q": "hi"})
        prof = cProfile.Profile()
        prof.enable()
        await pub.run(chain, {"q": "hi"}, config={"run_id": uuid.uuid4()})
        prof.disable()
        print(f"publisher stats (2 runs): {pub.stats}")
    _report(prof, n, f"Publisher.run → {url.split(':')[0]}")


async def _follow(url: str, ns: str, n: int) -> None:
    from eventbus import Publisher, Subscriber

    async with Publisher(url, namespace=ns) as pub:
        run_id = await emit_all(pub, token_events(n))
    async with Subscriber(url, namespace=ns, idle_timeout=30) as sub:
        prof = cProfile.Profile()
        prof.enable()
        count = 0
        async for _ in sub.follow(run_id):
            count += 1
        prof.disable()
    _report(prof, count, f"Subscriber.follow ← {url.split(':')[0]}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("what", choices=["publish", "run", "follow"])
    parser.add_argument("--broker", default="redis", choices=list(URLS))
    parser.add_argument("-n", type=int, default=0)
    args = parser.parse_args()
    ns = fresh("prof")
    url = URLS[args.broker] if args.broker != "memory" else f"memory://{ns}"
    try:
        if args.what == "publish":
            await _publish(url, ns, args.n or 20_000)
        elif args.what == "run":
            await _run(url, ns, args.n or 2_000)
        else:
            await _follow(url, ns, args.n or 20_000)
    finally:
        await cleanup(args.broker, ns)


def _main() -> Any:
    return asyncio.run(main())


if __name__ == "__main__":
    _main()
