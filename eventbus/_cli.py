"""The ``eventbus`` command line: ``demo``, ``tail``, ``runs``, ``replay``, ``trace``,
``cancel``, ``groups``, ``dead-letters``, ``delete-namespace``, ``serve``, ``forward``.

Parsing is argparse (:mod:`eventbus._cli_parser`); the commands are in
:mod:`eventbus._cli_follow` (following runs) and :mod:`eventbus._cli_ops` (operating a
namespace), imported when they run; rendering for a person is rich (the ``cli`` extra),
imported only when something is rendered. Exit codes: 0 ok; 1 the run failed, was
cancelled, lost its worker or lost events; 2 bad input (URL, run id, unknown run), broker
unreachable, or a missing extra; 130 interrupted (Ctrl-C); 143 terminated (SIGTERM, which
gets the clean-up Ctrl-C gets).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from ._cli_base import CliError, Terminated, broker_hint, err, run_async, safe
from ._cli_parser import build_parser

__all__ = ["broker_hint", "main"]


def _handler(name: str, sync: bool) -> Callable[[Any], int]:
    module, _, function = name.partition(":")
    fn = getattr(importlib.import_module(f".{module}", __package__), function)
    handler: Callable[[Any], int] = fn if sync else run_async(fn)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    """The ``eventbus`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    name: str | None = getattr(args, "handler", None)
    if name is None:
        parser.print_help(sys.stderr)
        return 2
    url = str(getattr(args, "url", ""))
    # the CLI reports broker trouble itself, in one paragraph: aiormq would also log each
    # failed connection attempt to stderr
    for logger in ("aiormq", "aio_pika"):
        logging.getLogger(logger).setLevel(logging.CRITICAL)
    try:
        return _handler(name, getattr(args, "sync", False))(args)
    except CliError as exc:
        err(safe(str(exc), url))
        return exc.code
    except KeyboardInterrupt:
        return 130
    except Terminated:
        return 143
    except BrokenPipeError:
        # the reader went away (`eventbus tail --json | head`): not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except ImportError as exc:
        # an extra that is missing (rich for rendering, a broker's client): never a
        # traceback, and not the exit code of a failed run
        if (exc.name or "").partition(".")[0] == "eventbus":
            raise
        err(f"{exc}: pip install 'eventbus[cli]' (and the extra of your broker)")
        return 2
    except Exception as exc:
        code = _library_error(exc, url)
        if code is None:
            raise
        return code


def _library_error(exc: Exception, url: str) -> int | None:
    """Print an eventbus error for the user; its exit code (None: not one of ours)."""
    from ._exceptions import (
        AuthenticationError,
        ConfigurationError,
        ConnectError,
        EventbusError,
        InvalidResumeToken,
        MissingDependencyError,
        RunError,
        RunNotFoundError,
        SequenceGapError,
        TransportError,
    )

    if isinstance(exc, (ConfigurationError, InvalidResumeToken, MissingDependencyError)):
        err(safe(str(exc), url))
        return 2
    if isinstance(exc, ConnectError):
        err(broker_hint(url, exc))
        return 2
    if isinstance(exc, AuthenticationError):
        err(safe(f"{exc} (check the user and password in --url / EVENTBUS_URL)", url))
        return 2
    if isinstance(exc, RunNotFoundError):
        err(safe(f"run not found: {exc}", url))
        return 2
    if isinstance(exc, TimeoutError):
        err("timed out")
        return 1
    if isinstance(exc, (RunError, SequenceGapError)):
        err(safe(str(exc), url))
        return 1
    if isinstance(exc, TransportError):
        err(safe(f"broker error: {exc}", url))
        return 2
    if isinstance(exc, EventbusError):
        err(safe(str(exc), url))
        return 1
    return None
