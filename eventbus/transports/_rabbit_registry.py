"""The RabbitMQ run registry and its sweeper: maintenance, off the data path.

Stream queues cannot expire on their own, so publishers note when runs start and end in
the registry stream (``eventbus.<ns>.registry``), in the background; a sweeper task (started
by the first publish, every ``sweep_interval``) deletes the streams of expired runs. Group
creators note their groups too, so that :meth:`Registry.delete_namespace` finds them.
"""

from __future__ import annotations

import asyncio
import time

import aio_pika
from aio_pika.abc import AbstractConnection

from ._rabbit_link import H_AT, H_EVENT, H_RUN, Link, int_header, log, open_channel, str_header


class Registry:
    """Records run starts/ends and groups; sweeps expired run streams."""

    def __init__(self, link: Link) -> None:
        self._link = link
        self._writing: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None

    def note(self, conn: AbstractConnection, event: str, run_ids: list[str]) -> None:
        """:meth:`record` in the background (a confirm round trip less per batch that
        starts or ends a run); :meth:`close` waits for it."""
        task = asyncio.get_running_loop().create_task(self.record(conn, event, run_ids))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def record(self, conn: AbstractConnection, event: str, names: list[str]) -> None:
        """Record run starts/ends (or groups) for the sweeper; best effort (a lost record
        only delays the deletion of a stream until ``max_run_age``)."""
        link = self._link
        try:
            channel, _ = await link.publisher(conn)
            # integer milliseconds: pamqp sends a Python float as a 32-bit float, which
            # rounds an epoch time to about two minutes
            now_ms = int(time.time() * 1000)
            await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            b"",
                            headers={H_RUN: name, H_EVENT: event, H_AT: now_ms},
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        link.registry_queue,
                        mandatory=False,
                        timeout=link.options.publish_timeout,
                    )
                    for name in names
                )
            )
        except Exception as exc:
            log.warning("could not record run %s in the registry: %r", event, exc)

    def start_sweeper(self) -> None:
        """Sweep now and every ``sweep_interval`` until :meth:`close` (idempotent)."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:
                if not self._link.closed:
                    log.warning("sweeping expired run streams failed: %r", exc)
            if self._link.closed:
                # the cancel of close() may have been swallowed inside the sweep (a
                # wait_for before 3.12): do not sleep through sweep_interval after it
                return
            await asyncio.sleep(self._link.options.sweep_interval)

    async def close(self) -> None:
        """Stop sweeping; let the records of runs started land (bounded waits)."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            await asyncio.wait({sweeper}, timeout=5)
        if self._writing:
            await asyncio.wait(self._writing, timeout=5)

    async def sweep(self) -> list[str]:
        """Delete the streams of runs that ended more than ``retention`` seconds ago or
        started more than ``max_run_age`` seconds ago; return their run ids.

        Raises:
            TransportError: the broker could not be used.
        """
        link = self._link
        options = link.options

        async def op(conn: AbstractConnection) -> list[str]:
            await link.ensure_topology(conn)
            records = await link.read_until_marker(conn, link.registry_queue, "first")
            started: dict[str, float] = {}
            ended: dict[str, float] = {}
            for message in records:
                headers = dict(message.headers or {})
                run_id = str_header(headers, H_RUN)
                at = int_header(headers, H_AT) / 1000
                event = str_header(headers, H_EVENT)
                if event not in ("start", "end"):
                    continue  # a group record: groups are never swept
                target = ended if event == "end" else started
                target[run_id] = max(at, target.get(run_id, 0.0))
            now = time.time()
            expired = [
                r
                for r in set(started) | set(ended)
                if (r in ended and now - ended[r] > options.retention)
                or (r not in ended and now - started.get(r, now) > options.max_run_age)
            ]
            if expired:
                channel = await open_channel(conn, confirms=False)
                try:
                    for run_id in expired:
                        await channel.queue_delete(
                            link.run_queue(run_id), if_unused=False, if_empty=False
                        )
                        link.runs_declared.discard(run_id)
                finally:
                    link.close_channel(channel)
            return expired

        return await link.retrying("sweep", op, time.monotonic() + options.publish_timeout)

    async def delete_namespace(self) -> None:
        """Delete every queue and the exchange of this namespace (see
        :meth:`eventbus.transports.rabbitmq.RabbitMQTransport.delete_namespace`).

        Raises:
            AuthenticationError, ConnectError, TransportError.
        """
        link = self._link

        async def op(conn: AbstractConnection) -> None:
            await link.ensure_topology(conn)
            records = await link.read_until_marker(conn, link.registry_queue, "first")
            names: list[str] = []
            for message in records:
                headers = dict(message.headers or {})
                name = str_header(headers, H_RUN)
                if str_header(headers, H_EVENT) == "group":
                    names += [
                        link.group_queue(name),
                        link.dead_letter_queue(name),
                        link.lock_queue(name),
                    ]
                else:
                    names.append(link.run_queue(name))
            names += [link.log_queue, link.registry_queue]
            channel = await open_channel(conn, confirms=False)
            try:
                for name in dict.fromkeys(names):
                    await channel.queue_delete(name, if_unused=False, if_empty=False)
                await channel.exchange_delete(link.exchange_name)
            finally:
                link.close_channel(channel)
            link.forget_topology()

        await link.retrying("delete namespace", op, time.monotonic() + link.options.publish_timeout)
