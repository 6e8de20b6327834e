"""``eventbus runs``, ``groups``, ``dead-letters``, ``cancel``, ``delete-namespace``,
``serve``, ``forward`` and the demo's entry points: operating a namespace.

Every inspection command only reads (nothing is created on the broker); the writes
(``cancel``, ``delete-namespace``, ``dead-letters --requeue``) say what they did. The
library does the aggregation (:mod:`eventbus._runs`), this module prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import Any

from ._cli_base import (
    CliError,
    check_url,
    console,
    err,
    render,
    run_async,
    run_key,
    subscriber,
    write_json,
)
from .transports import redact_url

__all__ = [
    "cancel",
    "delete_namespace",
    "demo",
    "forward",
    "groups",
    "dead_letters",
    "list_dead_letters",
    "requeue_dead_letters",
    "runs",
    "serve",
]


def _where(args: argparse.Namespace) -> str:
    return f"namespace {args.namespace!r} on {redact_url(args.url)}"


async def runs(args: argparse.Namespace) -> int:
    if not args.json:
        render()  # (the install hint before any broker work)
    async with subscriber(args) as sub:
        found = await sub.runs(
            wait=args.wait, settle=args.settle, max_records=args.max_records, idle=args.idle
        )
    shown = [r.to_dict() for r in found[: args.limit]]
    return _print_rows(
        args,
        shown,
        f"no runs in {_where(args)} (another namespace? `--namespace NS`, or EVENTBUS_NAMESPACE)",
        lambda: render().runs_table(shown, f"runs in {_where(args)}"),
    )


def _print_rows(
    args: argparse.Namespace, rows: list[dict[str, Any]], empty: str, table: Callable[[], Any]
) -> int:
    """One JSON object per row (--json), else ``table()``, or ``empty`` when no rows."""
    if args.json:
        for row in rows:
            write_json(row)
        return 0
    console().print(table() if rows else empty)
    return 0


async def groups(args: argparse.Namespace) -> int:
    if not args.json:
        render()  # (the install hint before any broker work)
    async with subscriber(args) as sub:
        found = await sub.groups()
    rows = [dataclasses.asdict(g) for g in found]  # (GroupInfo's fields, in order)
    return _print_rows(
        args,
        rows,
        f"no consumer groups in {_where(args)}",
        lambda: render().groups_table(rows, f"consumer groups in {_where(args)}"),
    )


def dead_letters(args: argparse.Namespace) -> int:
    """``eventbus dead-letters``: list them, or requeue some or all (asking first)."""
    if args.requeue is None and not args.requeue_all:
        return run_async(list_dead_letters)(args)
    check_url(args.url)
    what = "every dead letter" if args.requeue_all else f"{len(set(args.requeue))} dead letter(s)"
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError("requeueing dead letters needs --yes when stdin is not a terminal")
        answer = input(f"Requeue {what} of group {args.group!r} in {_where(args)}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            err("not requeued")
            return 2
    return run_async(requeue_dead_letters)(args)


async def requeue_dead_letters(args: argparse.Namespace) -> int:
    positions = None if args.requeue_all else list(dict.fromkeys(args.requeue))
    async with subscriber(args) as sub:
        requeued = await sub.requeue_dead_letters(args.group, positions)
    missed = 0 if positions is None else len(positions) - requeued
    if args.json:
        write_json({"group": args.group, "requeued": requeued, "positions": positions})
    else:
        print(
            f"requeued {requeued} dead letter(s) of group {args.group!r} in {_where(args)}",
            flush=True,
        )
    if missed:
        err(
            f"{missed} of the {len(positions or ())} positions given are not dead letters of "
            f"group {args.group!r} (requeued already, or unknown): "
            f"`eventbus dead-letters {args.group}` lists them"
        )
        return 2
    return 0


async def list_dead_letters(args: argparse.Namespace) -> int:
    if not args.json:
        render()  # (the install hint before any broker work)
    from ._jsonable import to_jsonable

    async with subscriber(args) as sub:
        dead = await sub.dead_letters(args.group, count=args.limit)
    rows = [
        {
            "position": letter.position,
            "reason": letter.reason,
            "deliveries": letter.deliveries,
            "run_id": letter.run_id,
            "decode_error": letter.decode_error,
            "records": [
                {
                    "kind": r.kind,
                    "seq": r.seq,
                    "event": None if r.event is None else to_jsonable(r.event),
                    "error": r.error,
                }
                for r in letter.records
            ],
        }
        for letter in dead
    ]
    return _print_rows(
        args,
        rows,
        f"no dead letters in group {args.group!r} of {_where(args)}",
        lambda: render().dead_letters_text(dead, f"dead letters of group {args.group!r}"),
    )


async def cancel(args: argparse.Namespace) -> int:
    run_id = run_key(args.run_id)
    async with subscriber(args) as sub:
        result = await sub.cancel(run_id, reason=args.reason, timeout=args.timeout)
    status = result.status
    messages = {
        "cancelled": f"run {run_id}: cancelled by worker {result.worker}",
        "refused": f"run {run_id}: its worker {result.worker} cannot cancel it (no task)",
        "finished": f"run {run_id} had already ended: {status.status}"
        + (f" ({status.error})" if status.error else ""),
        "unknown": f"run {run_id} is unknown in {_where(args)}: never started, or expired",
        "no_worker": f"run {run_id} has not ended and no worker answered within "
        f"{args.timeout:g}s: its worker is gone",
    }
    if args.json:
        write_json(
            {
                "run_id": run_id,
                "outcome": result.outcome,
                "worker": result.worker,
                "status": status.to_dict(),
            }
        )
    else:
        print(messages[result.outcome], flush=True)
    # 0: it was cancelled, or there is nothing left to cancel; 1: it goes on
    return 1 if result.outcome in ("refused", "no_worker") else 0


def delete_namespace(args: argparse.Namespace) -> int:
    args.namespace = args.namespace_to_delete
    check_url(args.url)
    where = _where(args)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(f"deleting {where} needs --yes when stdin is not a terminal")
        answer = input(
            f"Delete every run, group and dead letter of {where}? Type the namespace to confirm: "
        )
        if answer.strip() != args.namespace:
            err("not deleted")
            return 2
    return run_async(_delete_namespace)(args)


async def _delete_namespace(args: argparse.Namespace) -> int:
    from .transports import open_transport

    transport: Any = open_transport(args.url, args.namespace)
    remove = getattr(transport, "delete_namespace", None)
    if remove is None:
        raise CliError(f"{redact_url(args.url)}: this transport cannot delete a namespace")
    await transport.connect()
    try:
        await remove()
    finally:
        await transport.aclose()
    print(f"deleted {_where(args)}", flush=True)
    return 0


# -- the HTTP gateway and webhooks --------------------------------------------------------


def serve(args: argparse.Namespace) -> int:
    check_url(args.url)
    try:
        from . import _http
    except ImportError as exc:
        raise CliError(
            f"eventbus serve needs the http extra: pip install 'eventbus[http]' ({exc})"
        ) from None

    def ready(port: int) -> None:
        print(
            f"eventbus gateway: http://{args.host}:{port}/ namespace {args.namespace!r} on "
            f"{redact_url(args.url)}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )

    logging.basicConfig(level=logging.WARNING, format="eventbus: %(message)s")
    asyncio.run(
        _http.serve(
            args.url,
            args.namespace,
            host=args.host,
            port=args.port,
            ready=ready,
            cors_origins=args.cors,
            start_timeout=args.wait,
            include_traceback=args.traceback,
            page=args.page,
            allow_cancel=args.allow_cancel,
        )
    )
    return 0


def forward(args: argparse.Namespace) -> int:
    check_url(args.url)
    if not args.secret:
        raise CliError("eventbus forward needs --secret (or EVENTBUS_WEBHOOK_SECRET)")
    try:
        from ._webhooks import WebhookForwarder
    except ImportError as exc:
        raise CliError(
            f"eventbus forward needs the http extra: pip install 'eventbus[http]' ({exc})"
        ) from None
    forwarder = WebhookForwarder(
        args.url,
        args.namespace,
        group=args.group,
        to=args.to,
        secret=args.secret,
        start=args.start,
        terminal_only=args.terminal_only,
        max_attempts=args.max_attempts,
        batch=args.batch,
    )
    print(
        f"eventbus forward: namespace {args.namespace!r} on {redact_url(args.url)}, group "
        f"{args.group!r} -> {args.to}; Ctrl-C to stop",
        file=sys.stderr,
        flush=True,
    )
    logging.basicConfig(level=logging.WARNING, format="eventbus: %(message)s")
    asyncio.run(forwarder.run())
    return 0


# -- the demo (its harness is in _demo.py) -------------------------------------------------


def demo(args: argparse.Namespace) -> int:
    if args.command in ("demo", "_demo-live"):
        render()  # they render: the install hint before anything starts
    from . import _demo

    entry = {
        "demo": _demo.demo,
        "_demo-worker": _demo.demo_worker,
        "_demo-live": _demo.demo_live,
        "_demo-audit": _demo.demo_audit,
    }[args.command]
    code: int = entry(args)
    return code
