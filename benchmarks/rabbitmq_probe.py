"""Throughput probe for the RabbitMQ transport (not a test).

Publishes N frames of ~8 KB through ``RabbitMQTransport.publish()`` in batches (publisher
confirms on, all frames of a batch in flight at once) and compares with raw aio-pika
publishing the same messages with a confirm awaited after each one.

    .venv/bin/python benchmarks/rabbitmq_probe.py [--url amqp://...] [-n 5000] [--batch 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid

import aio_pika

from eventbus.transports import OutFrame, open_transport
from eventbus.transports.rabbitmq import RabbitMQTransport


async def transport_run(url: str, n: int, batch: int, size: int) -> float:
    ns = f"probe{uuid.uuid4().hex[:8]}"
    t = open_transport(url, ns)
    assert isinstance(t, RabbitMQTransport)
    await t.connect()
    payload = os.urandom(size)
    runs = [str(uuid.uuid4()) for _ in range(4)]
    try:
        # declare the run streams outside the timed part: one-off per run
        await t.publish([OutFrame(r, b"warm-up") for r in runs])
        start = time.perf_counter()
        for i in range(0, n, batch):
            await t.publish([OutFrame(runs[(i // batch) % 4], payload) for _ in range(batch)])
        elapsed = time.perf_counter() - start
    finally:
        await cleanup(t, url, runs)
        await t.aclose()
    return n / elapsed


async def raw_run(url: str, n: int, size: int) -> float:
    name = f"probe.raw.{uuid.uuid4().hex[:8]}"
    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "stream"})
        payload = os.urandom(size)
        start = time.perf_counter()
        for _ in range(n):
            await channel.default_exchange.publish(
                aio_pika.Message(payload, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), name
            )
        elapsed = time.perf_counter() - start
        await channel.queue_delete(name, if_unused=False, if_empty=False)
    finally:
        await conn.close()
    return n / elapsed


async def cleanup(t: RabbitMQTransport, url: str, runs: list[str]) -> None:
    conn = await aio_pika.connect(url)
    try:
        channel = await conn.channel()
        for name in [t.run_queue(r) for r in runs] + [t.log_queue, t.registry_queue]:
            await channel.queue_delete(name, if_unused=False, if_empty=False)
        await channel.exchange_delete(t.exchange_name)
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    parser.add_argument("-n", type=int, default=5000, help="frames per round")
    parser.add_argument("--batch", type=int, default=50, help="frames per publish() call")
    parser.add_argument("--size", type=int, default=8192, help="bytes per frame")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {"transport": [], "raw": []}
    for _ in range(args.rounds):
        results["transport"].append(await transport_run(args.url, args.n, args.batch, args.size))
        results["raw"].append(await raw_run(args.url, args.n, args.size))
    print(f"{args.n} frames of {args.size} B, {args.rounds} rounds (median, min-max):")
    for name, label in (
        ("transport", f"RabbitMQTransport.publish, batches of {args.batch}, confirms gathered"),
        ("raw", "raw aio-pika, confirm awaited per message"),
    ):
        xs = results[name]
        print(
            f"  {label:62s} {statistics.median(xs):8.0f} frames/s "
            f"({min(xs):.0f}-{max(xs):.0f}, {statistics.median(xs) * args.size / 1e6:.1f} MB/s)"
        )


if __name__ == "__main__":
    asyncio.run(main())
