"""What every ``eventbus`` command shares: errors for the user, output, the subscriber it
reads with, and the asyncio runner that gives SIGTERM the clean-up Ctrl-C gets.

Light on purpose: importing this (and the parser) must not import LangChain or rich, so
that ``eventbus --help`` starts at once; the commands import what they use.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import uuid
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .transports import redact_url

if TYPE_CHECKING:
    from types import ModuleType

    from rich.console import Console

    from ._subscriber import Subscriber

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_URL",
    "CliError",
    "Terminated",
    "broker_hint",
    "console",
    "err",
    "human",
    "render",
    "run_async",
    "run_key",
    "safe",
    "subscriber",
    "write_json",
]

DEFAULT_URL = "redis://localhost:6379/0"
# one default for the library, the examples, the demo and the command line
DEFAULT_NAMESPACE = "default"
CLI_HINT = "pip install 'eventbus[cli]'"


class CliError(Exception):
    """A clear message for the user and an exit code (no traceback)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


class Terminated(Exception):
    """SIGTERM arrived: the command was cancelled and cleaned up, as for Ctrl-C."""


def render() -> ModuleType:
    """``eventbus._cli_render`` (rich), or the install hint as a :class:`CliError`."""
    try:
        from . import _cli_render
    except ImportError as exc:
        if (exc.name or "").partition(".")[0] != "rich":
            raise
        raise CliError(
            f"rendering for a terminal needs rich: {CLI_HINT} (or pass --json)"
        ) from None
    return _cli_render


def console(stderr: bool = False) -> Console:
    render()  # (the hint, if rich is missing)
    from rich.console import Console

    # soft_wrap: run ids and paths stay on one line (tests and people copy them); a pipe
    # gets a wide page rather than rich's 80 columns, so that tables keep their run ids
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty():
        with contextlib.suppress(ValueError):
            width = max(160, int(os.environ.get("COLUMNS", "0")))
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def err(message: str) -> None:
    print(f"eventbus: {message}", file=sys.stderr, flush=True)


def safe(text: str, url: str) -> str:
    """``text`` with the URL's password masked, wherever it appears."""
    text = text.replace(url, redact_url(url))
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    return text


def broker_hint(url: str, exc: BaseException) -> str:
    """One paragraph on what to do when the broker cannot be reached."""
    return safe(
        f"cannot reach the broker at {redact_url(url)} ({exc}). Start the brokers: "
        "`docker compose up -d` in the eventbus repository (its docker-compose.yml runs "
        "Redis and RabbitMQ), or `make brokers` on Debian as root; or point --url / "
        "EVENTBUS_URL at a broker you have (redis://host:6379/0, "
        "amqp://user:password@host:5672/); or try the demo in one process with "
        "`eventbus demo --url memory://`.",
        url,
    )


_json: Any = None


def write_json(obj: Any) -> None:
    global _json
    if _json is None:
        import msgspec

        _json = msgspec.json.Encoder()
    out = sys.stdout.buffer
    out.write(_json.encode(obj))
    out.write(b"\n")
    out.flush()  # a tail is read live, line by line


def human(args: argparse.Namespace) -> bool:
    """Render for a person: not --json, and stdout is a terminal."""
    return not getattr(args, "json", False) and sys.stdout.isatty()


def run_key(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise CliError(f"{value!r} is not a run id (a UUID such as {uuid.uuid4()})") from None


def check_url(url: str) -> None:
    if url.startswith("memory://"):
        raise CliError(
            "memory:// is in-process: a separate `eventbus` process sees none of its runs. "
            "Use redis:// or amqp:// (or `eventbus demo --url memory://`, which runs "
            "everything in one process)."
        )


def subscriber(args: argparse.Namespace, *, start_timeout: float | None = None) -> Subscriber:
    from ._subscriber import Subscriber

    check_url(args.url)
    idle = getattr(args, "idle", 30.0)
    return Subscriber(
        args.url,
        args.namespace,
        idle_timeout=idle if idle > 0 else None,
        start_timeout=start_timeout,
        preload=False,  # a command decodes LangChain values on first use, if it meets any
    )


def run_async(
    fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    """``fn`` run by asyncio, SIGTERM cancelling it as Ctrl-C does (its ``finally``
    blocks run, what it holds is released), then :class:`Terminated`."""

    def run(args: argparse.Namespace) -> int:
        import asyncio  # (not for --help)

        return asyncio.run(_terminable(fn(args)))

    return run


async def _terminable(coro: Coroutine[Any, Any, int]) -> int:
    import asyncio
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    terminated = False

    def terminate() -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    # (not possible off the main thread, nor on Windows: SIGTERM then just ends it)
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, terminate)
    try:
        return await coro
    except asyncio.CancelledError:
        if terminated:
            raise Terminated from None
        raise
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGTERM)
