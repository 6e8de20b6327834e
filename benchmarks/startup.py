"""Start-up of the command line: ``eventbus --help``, and the first event of a live run on
screen after ``eventbus tail RUN`` starts (Redis and RabbitMQ).

For each broker a publisher process runs one endless run (a custom event every 5 ms); each
repetition then spawns ``eventbus tail RUN`` (the console script) and times from the spawn
to the first event line on its stdout: into a pipe (the JSON records) and on a
pseudo-terminal (what a person sees, rendered with rich). ``--help`` is timed from the
spawn to the exit. Repetitions are interleaved over the cases; cells are medians with
(min-max). Issue targets: ``--help`` <= 0.15 s, first event <= 0.3 s.

python -m benchmarks startup [--quick]  (or: python -m benchmarks.startup [--reps N])
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import pty
import select
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._common import AMQP_URL, REDIS_URL, reachable

TARGETS = {"help": 0.15, "tail": 0.3}
WAIT = 60.0  # seconds one spawn may take before it counts as an error (a loaded machine)


def _cli() -> list[str]:
    """The ``eventbus`` console script next to this interpreter (what users run), or
    ``$EVENTBUS_STARTUP_CLI`` (another install's, to compare)."""
    other = os.environ.get("EVENTBUS_STARTUP_CLI")
    if other:
        return [other]
    script = Path(sys.executable).with_name("eventbus")
    if script.exists():
        return [str(script)]
    found = shutil.which("eventbus")
    return [found] if found else [sys.executable, "-m", "eventbus"]


async def _publish(url: str, namespace: str, run_id: str) -> None:
    """The live run: custom events until killed; prints "ready" once some are stored."""
    from langchain_core.callbacks.manager import adispatch_custom_event
    from langchain_core.runnables import RunnableLambda

    import eventbus

    async with eventbus.Publisher(url, namespace, heartbeat_interval=0.5) as pub:

        async def ticks(x: Any) -> Any:
            i = 0
            while True:
                await adispatch_custom_event("tick", {"i": i})
                if i == 10:
                    await pub.flush()
                    print("ready", flush=True)
                i += 1
                await asyncio.sleep(0.005)  # the pace of a streaming model, not a sync

        async for _ in pub.astream_events(RunnableLambda(ticks), 0, config={"run_id": run_id}):
            pass


@contextlib.contextmanager
def _live_run(url: str) -> Iterator[tuple[str, str]]:
    """A publisher process running one endless run: (namespace, run id)."""
    namespace, run_id = f"startup-{uuid.uuid4().hex[:8]}", str(uuid.uuid4())
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.startup", "_publish", url, namespace, run_id],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        if not ready or proc.stdout.readline().strip() != b"ready":
            raise RuntimeError("the publisher did not start")
        yield namespace, run_id
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        with contextlib.suppress(Exception):
            asyncio.run(_delete(url, namespace))


async def _delete(url: str, namespace: str) -> None:
    from eventbus.transports import open_transport

    t: Any = open_transport(url, namespace)
    await t.connect()
    try:
        await t.delete_namespace()
    finally:
        await t.aclose()


def _time_help() -> float:
    started = time.perf_counter()
    subprocess.run([*_cli(), "--help"], stdout=subprocess.DEVNULL, check=True, timeout=WAIT)
    return time.perf_counter() - started


def _first_line(fd: int, started: float, want: bytes) -> float:
    """Seconds from ``started`` until a line holding ``want`` arrives on ``fd``."""
    buf = b""
    deadline = started + WAIT
    while want not in buf:
        left = deadline - time.perf_counter()
        if left <= 0:
            raise TimeoutError(f"no line with {want!r} within {WAIT}s: {buf[-300:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # (a pty whose child exited)
                chunk = b""
            if not chunk:
                raise RuntimeError(f"the command ended before its first event: {buf[-300:]!r}")
            buf += chunk
    return time.perf_counter() - started


def _stop(proc: subprocess.Popen[bytes]) -> float:
    """Terminate ``proc`` and reap it: the CPU seconds (user + system) it used, which a
    loaded machine inflates less than the wall-clock time."""
    proc.terminate()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except ChildProcessError:  # (reaped already)
        return float("nan")
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


def _time_tail(url: str, namespace: str, run_id: str, terminal: bool) -> tuple[float, float]:
    command = [*_cli(), "tail", run_id, "--url", url, "--namespace", namespace]
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm-256color"}
    if terminal:
        master, slave = pty.openpty()
        started = time.perf_counter()
        proc = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=subprocess.DEVNULL, env=env
        )
        os.close(slave)
        try:
            wall = _first_line(master, started, b"tick")  # the custom event's name
        finally:
            cpu = _stop(proc)
            os.close(master)
        return wall, cpu
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    assert proc.stdout is not None
    try:
        wall = _first_line(proc.stdout.fileno(), started, b'"kind":"event"')
    finally:
        cpu = _stop(proc)
        proc.stdout.close()
    return wall, cpu


def _row(
    case: str, broker: str, target: float, times: list[float], cpu: list[float] | None = None
) -> dict[str, Any]:
    median = statistics.median(times)
    extra = {} if not cpu else {"cpu_s": round(statistics.median(cpu), 3)}
    return {
        "case": case,
        "broker": broker,
        "median_s": round(median, 3),
        "min_s": round(min(times), 3),
        "max_s": round(max(times), 3),
        "reps": len(times),
        "target_s": target,
        "met": median <= target,
        "load": round(os.getloadavg()[0], 1),
        **extra,
    }


def run(quick: bool = False, reps: int | None = None) -> list[dict[str, Any]]:
    reps = reps or (3 if quick else 10)
    rows: list[dict[str, Any]] = []
    rows.append(_row("--help", "-", TARGETS["help"], [_time_help() for _ in range(reps)]))
    for broker, url in (("redis", REDIS_URL), ("rabbitmq", AMQP_URL)):
        if not reachable(url):
            rows.append({"case": "tail RUN", "broker": broker, "skipped": "not reachable"})
            continue
        try:
            with _live_run(url) as (namespace, run_id):
                pipe: list[tuple[float, float]] = []
                tty: list[tuple[float, float]] = []
                for _ in range(reps):  # interleaved: a noisy neighbour hits both alike
                    pipe.append(_time_tail(url, namespace, run_id, terminal=False))
                    tty.append(_time_tail(url, namespace, run_id, terminal=True))
            for how, got in (("pipe, JSON", pipe), ("terminal", tty)):
                rows.append(
                    _row(
                        f"tail RUN, first event ({how})",
                        broker,
                        TARGETS["tail"],
                        [wall for wall, _ in got],
                        [cpu for _, cpu in got],
                    )
                )
        except Exception as exc:
            rows.append({"case": "tail RUN", "broker": broker, "error": repr(exc)})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| command | broker | median s | min-max s | CPU s | target s | met | load |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        if "median_s" not in r:
            why = r.get("error") or r.get("skipped")
            lines.append(f"| {r['case']} | {r['broker']} | {why} | | | | | |")
            continue
        lines.append(
            f"| `eventbus {r['case']}` | {r['broker']} | {r['median_s']:.3f} | "
            f"{r['min_s']:.3f}-{r['max_s']:.3f} | {r.get('cpu_s', '')} | {r['target_s']} | "
            f"{'yes' if r['met'] else 'no'} | {r.get('load', '')} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "_publish":
        asyncio.run(_publish(*sys.argv[2:]))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    print(table(run(reps=args.reps)))


if __name__ == "__main__":
    main()
