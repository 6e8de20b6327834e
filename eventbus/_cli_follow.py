"""``eventbus tail``, ``replay`` and ``trace``: following runs on the command line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ._cli_base import CliError, console, err, human, render, run_key, subscriber, write_json
from .transports import redact_url

if TYPE_CHECKING:
    from ._cli_render import RunView
    from ._subscriber import FollowItem, Message

__all__ = ["RUN_TYPES", "replay", "short_traceback", "tail", "trace"]

StreamEvent = dict[str, Any]
Keep = Callable[[StreamEvent], "StreamEvent | None"]

# the run types of v2 events (``on_<type>_<phase>``): what --types selects
RUN_TYPES = ("chain", "chat_model", "llm", "tool", "retriever", "prompt", "parser")

_FRAME = re.compile(r'^  File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<func>.+)$')


def short_traceback(text: str, frames: int = 3) -> str:
    """The last ``frames`` frames of a formatted traceback, one line each
    (``file:line in function``), for a person who wants where, not everything."""
    found = [m for m in map(_FRAME.match, text.splitlines()) if m]
    lines = [f"  at {m['file']}:{m['line']} in {m['func']}" for m in found[-frames:]]
    if len(found) > frames:
        lines.insert(0, f"  ({len(found) - frames} earlier frames; --verbose shows them)")
    return "\n".join(lines)


def _filter(args: argparse.Namespace) -> Keep | None:
    """LangChain's include_* filter from --types/--names/--tags, or None."""
    types = getattr(args, "types", None)
    unknown = sorted(set(types or ()) - set(RUN_TYPES))
    if unknown:
        raise CliError(
            f"unknown run type(s) {', '.join(map(repr, unknown))} for --types (known: "
            f"{', '.join(RUN_TYPES)}; select custom events by their name with --names)"
        )
    names, tags = getattr(args, "names", None), getattr(args, "tags", None)
    if not (types or names or tags):
        return None
    from ._langchain import EventFilter

    def make() -> Keep:
        return EventFilter(include_types=types, include_names=names, include_tags=tags)

    return make()


def _failure(view: RunView, exc: BaseException, verbose: bool) -> None:
    from ._exceptions import RemoteRunError

    if isinstance(exc, RemoteRunError):
        message = f"run failed: {exc.type_name}: {exc.message}"
        detail = exc.traceback if verbose else short_traceback(exc.traceback)
        view.failed(message, detail or None)
    else:
        view.failed(str(exc))


async def _show_run(
    args: argparse.Namespace,
    run_id: str,
    items: AsyncIterator[FollowItem],
    keep: Keep | None,
    last: list[str],
) -> int:
    """Print a followed run: rendered for a person, or one JSON record per line (the
    shape of ``eventbus._jsonable.record_jsonable``, as the namespace tail prints).
    ``last`` gets the id of each event as it is shown (what a resume starts after)."""
    from ._exceptions import RunError, SequenceGapError
    from ._jsonable import record_jsonable, terminal_kind

    if not human(args):
        seq = 0
        error: RunError | None = None
        try:
            async for item in items:
                seq = int(item.id.partition(":")[0])
                event = item.event if keep is None else keep(item.event)
                if event is not None:
                    write_json(record_jsonable("event", run_id, seq, id=item.id, event=event))
                last[0] = item.id
        except RunError as exc:
            error = exc
        except SequenceGapError as exc:
            write_json(record_jsonable("gap", run_id, exc.got, error=exc))
            raise
        # the terminal record: a reader tells a finished run from a cut pipe
        write_json(record_jsonable(terminal_kind(error), run_id, seq + 1, error=error))
        if error is not None:
            err(str(error))
            return 1
        return 0
    with render().RunView(console()) as view:
        try:
            async for item in items:
                event = item.event if keep is None else keep(item.event)
                if event is not None:
                    if args.ids and not str(event.get("event", "")).endswith("_stream"):
                        view.note(f"id {item.id}")
                    view.handle(event)
                last[0] = item.id
        except RunError as exc:
            _failure(view, exc, args.verbose)
            return 1
        view.ended(run_id, f"  ({view.events} events)")
    return 0


async def _follow_run(args: argparse.Namespace, run_id: str, after: str | None) -> int:
    keep = _filter(args)
    if human(args):
        render()  # (the install hint now, not once the run has begun)
    last = [after or ""]
    async with subscriber(args, start_timeout=_wait(args.wait)) as sub:
        # connected: from here on, a run that starts is followed from its first event (a
        # script can start the run once it reads this line)
        err(
            f"following run {run_id} in namespace {args.namespace!r} on "
            f"{redact_url(args.url)}" + (f" after {after}" if after else "")
        )
        try:
            async with contextlib.aclosing(sub.follow(run_id, after=after)) as items:
                return await _show_run(args, run_id, items, keep, last)
        except asyncio.CancelledError:
            # Ctrl-C or SIGTERM: say where to pick up
            if last[0]:
                err(f"stopped; resume with: eventbus {args.command} {run_id} --after {last[0]}")
            raise
        except Exception as exc:
            await _not_found(args, run_id, exc)
            raise


async def _not_found(args: argparse.Namespace, run_id: str, exc: Exception) -> None:
    """Turn "run not found" into a message saying where the run is, if anywhere."""
    from ._exceptions import RunNotFoundError

    if not isinstance(exc, RunNotFoundError):
        return
    namespaces = await _namespaces_holding(args, run_id)
    if namespaces:
        where = ", ".join(repr(n) for n in namespaces)
        raise CliError(
            f"run {run_id} is not in namespace {args.namespace!r} on {redact_url(args.url)}"
            f" (waited {args.wait:g}s); it is in namespace {where}: pass --namespace "
            f"{namespaces[0]}"
        ) from None
    raise CliError(
        f"run not found: {run_id} did not start within {args.wait:g}s in namespace "
        f"{args.namespace!r} on {redact_url(args.url)}. `eventbus runs --namespace NS` "
        "lists a namespace's runs (EVENTBUS_NAMESPACE sets the default); --wait 0 waits "
        "for it"
    ) from None


async def _namespaces_holding(args: argparse.Namespace, run_id: str) -> list[str]:
    """The namespaces that hold a stream of this run, where the broker can tell cheaply
    (Redis: its keys name both); elsewhere none."""
    if not args.url.startswith(("redis://", "rediss://", "unix://")):
        return []
    try:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(args.url, socket_connect_timeout=2)
        try:
            keys = [k async for k in client.scan_iter(match=f"eventbus:{{*:{run_id}}}:run")]
        finally:
            await client.aclose()
    except Exception:
        return []
    out = []
    for key in keys:
        text = key.decode() if isinstance(key, bytes) else str(key)
        out.append(text[len("eventbus:{") : -len(f":{run_id}}}:run")])
    return sorted(out)


def _wait(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


async def tail(args: argparse.Namespace) -> int:
    if args.run_id is None:
        if args.after:
            raise CliError("--after resumes one run: give its RUN_ID")
        return await _tail_namespace(args)
    return await _follow_run(args, run_key(args.run_id), args.after)


async def replay(args: argparse.Namespace) -> int:
    return await _follow_run(args, run_key(args.run_id), args.after)


async def _tail_namespace(args: argparse.Namespace) -> int:
    """Every run of the namespace: through --group (a durable consumer group), or, by
    default, read without any group (nothing is created, so nothing is left behind)."""
    keep_for: dict[str, Keep | None] = {}
    _filter(args)  # (bad --types fail before connecting)
    if human(args):
        render()
    view: RunView | None = None
    async with contextlib.AsyncExitStack() as stack:
        if human(args):
            view = stack.enter_context(render().RunView(console()))
        sub = await stack.enter_async_context(subscriber(args))
        if args.group is None:
            from ._runs import tap_messages

            messages = tap_messages(sub, args.start)
            how = "without a group"
        else:
            messages = sub.consume(args.group, f"cli-{os.getpid()}", start=args.start)
            how = f"through group {args.group!r}"
        start = "from now on" if args.start == "new" else "from the first retained record"
        line = (
            f"following namespace {args.namespace!r} on {redact_url(args.url)} {how}, "
            f"{start}; Ctrl-C to stop"
        )
        if view is None:
            err(line)
        else:
            view.note(line)
        current: str | None = None
        async with contextlib.aclosing(messages) as records:
            async for msg in records:
                event = msg.event
                if event is not None:
                    if msg.run_id not in keep_for:
                        keep_for[msg.run_id] = _filter(args)
                    keep = keep_for[msg.run_id]
                    event = event if keep is None else keep(event)
                    if event is None:
                        await msg.ack()
                        continue
                if view is None:
                    write_json(_message_json(msg, event))
                else:
                    if msg.run_id != current:
                        current = msg.run_id
                        view.note(f"── run {msg.run_id}", style="bold blue")
                    _render_message(view, msg, event, args.verbose)
                await msg.ack()
    return 0


def _message_json(msg: Message, event: StreamEvent | None) -> dict[str, Any]:
    from ._jsonable import record_jsonable

    if msg.kind == "event":
        return record_jsonable("event", msg.run_id, msg.seq, event=event)
    return record_jsonable(msg.kind, msg.run_id, msg.seq, error=msg.error)


def _render_message(view: RunView, msg: Message, event: StreamEvent | None, verbose: bool) -> None:
    if event is not None:
        view.handle(event)
    elif msg.kind == "end":
        view.ended(msg.run_id)
    elif msg.error is not None:
        _failure(view, msg.error, verbose)


async def trace(args: argparse.Namespace) -> int:
    from ._runs import trace_run

    run_id = run_key(args.run_id)
    if not args.json:
        render()
    async with subscriber(args, start_timeout=_wait(args.wait)) as sub:
        try:
            result = await trace_run(sub, run_id)
        except Exception as exc:
            await _not_found(args, run_id, exc)
            raise
    if args.json:
        write_json(result)
    else:
        console().print(render().trace_tree(result))
    if result["error"] is not None:
        err(result["error"])
        return 1
    return 0
