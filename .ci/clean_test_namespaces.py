"""Delete what earlier test runs left on the local brokers: RabbitMQ queues and exchanges of
test namespaces (``eventbus.t<16 hex>``), and their Redis keys (``eventbus:{t<16 hex>...``).

Every retained run is a stream queue holding broker file descriptors; a broker that has
collected the leftovers of many interrupted test runs stops accepting connections. The
test suite deletes its own namespaces; this catches runs that were killed half-way.

    .venv/bin/python .ci/clean_test_namespaces.py [amqp-url [redis-url]]

Lists with ``rabbitmqctl`` (AMQP cannot list), deletes over AMQP (fast); on Redis, SCANs
the test database (``EVENTBUS_TEST_REDIS_URL``'s, db 15 by default). Only names that the
test suite makes are touched.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys

TEST_NAME = re.compile(r"^eventbus\.t[0-9a-f]{16}(\..*)?$")
TEST_KEY = re.compile(rb"^eventbus:\{t[0-9a-f]{16}[:}]")


def _list(kind: str) -> list[str]:
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return []
    out = subprocess.run(
        [ctl, f"list_{kind}", "-q", "--no-table-headers", "name"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [n.strip() for n in out.splitlines() if TEST_NAME.match(n.strip())]


async def main(url: str) -> None:
    import aio_pika

    queues, exchanges = _list("queues"), _list("exchanges")
    if not queues and not exchanges:
        print("no test namespaces left on RabbitMQ")
        return
    connection = await aio_pika.connect(url, timeout=30)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            await channel.queue_delete(name, if_unused=False, if_empty=False)
        for name in exchanges:
            await channel.exchange_delete(name)
    print(f"deleted {len(queues)} queues and {len(exchanges)} exchanges of old test namespaces")


def clean_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = [k for k in client.scan_iter(match="eventbus:{t*", count=1000) if TEST_KEY.match(k)]
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()
    print(f"deleted {len(keys)} Redis keys of old test namespaces")


if __name__ == "__main__":
    amqp = sys.argv[1] if len(sys.argv) > 1 else "amqp://guest:guest@127.0.0.1:5672/"
    default_redis = os.environ.get("EVENTBUS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    clean_redis(sys.argv[2] if len(sys.argv) > 2 else default_redis)
    asyncio.run(main(amqp))
