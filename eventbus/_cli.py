"""The ``eventbus`` command line: ``demo``, ``tail``, ``runs``, ``replay``, ``trace``.

Parsing is argparse; rendering for a person is rich (the ``cli`` extra), imported only
when something is rendered so that the JSON outputs and ``import eventbus`` work without
it. Exit codes: 0 ok; 1 the run failed, was cancelled, lost its worker or lost events;
2 bad input (URL, run id, unknown run), broker unreachable, or a missing extra; 130
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import msgspec

from . import _langchain
from ._exceptions import (
    AuthenticationError,
    ConfigurationError,
    ConnectError,
    EventbusError,
    InvalidResumeToken,
    RemoteRunError,
    RunError,
    RunNotFoundError,
    SequenceGapError,
    TransportError,
)
from ._jsonable import record_jsonable, terminal_kind
from ._runs import aggregate_runs, build_trace, drop_group, list_runs, trace_run
from ._subscriber import FollowItem, Message, Subscriber
from .transports import redact_url

if TYPE_CHECKING:
    from rich.console import Console

    from ._cli_render import RunView

__all__ = ["aggregate_runs", "broker_hint", "build_trace", "main"]  # the first two: _runs

DEFAULT_URL = "redis://localhost:6379/0"
DEMO_NAMESPACE = "demo"
StreamEvent = dict[str, Any]

_json = msgspec.json.Encoder()


class CliError(Exception):
    """A clear message for the user and an exit code (no traceback)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# -- helpers -------------------------------------------------------------------------------


def _console(stderr: bool = False) -> Console:
    try:
        from rich.console import Console
    except ImportError:
        raise CliError(
            "rendering for a terminal needs rich: pip install 'eventbus[cli]' (or pass --json)"
        ) from None
    # soft_wrap: run ids and paths stay on one line (tests and people copy them); a pipe
    # gets a wide page rather than rich's 80 columns, so that tables keep their run ids
    stream = sys.stderr if stderr else sys.stdout
    width = None
    if not stream.isatty():
        with contextlib.suppress(ValueError):
            width = max(160, int(os.environ.get("COLUMNS", "0")))
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def _err(message: str) -> None:
    print(f"eventbus: {message}", file=sys.stderr, flush=True)


def _safe(text: str, url: str) -> str:
    """``text`` with the URL's password masked, wherever it appears."""
    text = text.replace(url, redact_url(url))
    with contextlib.suppress(ValueError):
        password = urlsplit(url).password
        if password:
            text = text.replace(password, "***")
    return text


def broker_hint(url: str, exc: BaseException) -> str:
    """One paragraph on what to do when the broker cannot be reached."""
    return _safe(
        f"cannot reach the broker at {redact_url(url)} ({exc}). Start the brokers: "
        "`docker compose up -d` in the eventbus repository (its docker-compose.yml runs "
        "Redis and RabbitMQ), or `make brokers` on Debian as root; or point --url / "
        "EVENTBUS_URL at a broker you have (redis://host:6379/0, "
        "amqp://user:password@host:5672/); or try the demo in one process with "
        "`eventbus demo --url memory://`.",
        url,
    )


def _write_json(obj: Any) -> None:
    out = sys.stdout.buffer
    out.write(_json.encode(obj))
    out.write(b"\n")
    out.flush()  # a tail is read live, line by line


def _human(args: argparse.Namespace) -> bool:
    """Render for a person: not --json, and stdout is a terminal."""
    return not getattr(args, "json", False) and sys.stdout.isatty()


def _run_key(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise CliError(f"{value!r} is not a run id (a UUID such as {uuid.uuid4()})") from None


def _check_url(url: str) -> None:
    if url.startswith("memory://"):
        raise CliError(
            "memory:// is in-process: a separate `eventbus` process sees none of its runs. "
            "Use redis:// or amqp:// (or `eventbus demo --url memory://`, which runs "
            "everything in one process)."
        )


def _subscriber(args: argparse.Namespace, *, start_timeout: float | None = None) -> Subscriber:
    _check_url(args.url)
    return Subscriber(
        args.url,
        args.namespace,
        idle_timeout=args.idle if args.idle > 0 else None,
        start_timeout=start_timeout,
    )


def _wait_arg(seconds: float) -> float | None:
    return seconds if seconds > 0 else None


# -- following one run ---------------------------------------------------------------------


async def _show_run(
    args: argparse.Namespace,
    run_id: str,
    items: AsyncIterator[FollowItem],
    keep: Callable[[StreamEvent], StreamEvent | None] | None = None,
) -> int:
    """Print a followed run: rendered for a person, or one JSON record per line (the
    shape of ``eventbus._jsonable.record_jsonable``, as the namespace tail prints)."""
    if not _human(args):
        seq = 0
        error: RunError | None = None
        try:
            async for item in items:
                seq = int(item.id.partition(":")[0])
                event = item.event if keep is None else keep(item.event)
                if event is not None:
                    _write_json(record_jsonable("event", run_id, seq, id=item.id, event=event))
        except RunError as exc:
            error = exc
        except SequenceGapError as exc:
            _write_json(record_jsonable("gap", run_id, exc.got, error=exc))
            raise
        # the terminal record: a reader tells a finished run from a cut pipe
        _write_json(record_jsonable(terminal_kind(error), run_id, seq + 1, error=error))
        if error is not None:
            _err(str(error))
            return 1
        return 0
    from ._cli_render import RunView

    with RunView(_console()) as view:
        try:
            async for item in items:
                event = item.event if keep is None else keep(item.event)
                if event is not None:
                    view.handle(event)
        except RemoteRunError as exc:
            view.failed(str(exc), exc.traceback)
            return 1
        except RunError as exc:
            view.failed(str(exc))
            return 1
        view.ended(run_id, f"  ({view.events} events)")
    return 0


async def _tail(args: argparse.Namespace) -> int:
    if args.run_id is None:
        return await _tail_namespace(args)
    run_id = _run_key(args.run_id)
    keep = _langchain.EventFilter(include_types=args.types) if args.types else None
    async with _subscriber(args, start_timeout=_wait_arg(args.wait)) as sub:
        # connected: from here on, a run that starts is followed from its first event (a
        # script can start the run once it reads this line)
        _err(f"following run {run_id} in namespace {args.namespace!r}")
        async with contextlib.aclosing(sub.follow(run_id)) as items:
            return await _show_run(args, run_id, items, keep)


async def _tail_namespace(args: argparse.Namespace) -> int:
    ephemeral = args.group is None
    group = args.group or f"eventbus-tail-{uuid.uuid4().hex[:12]}"
    filters: dict[str, _langchain.EventFilter] = {}
    view: RunView | None = None
    async with contextlib.AsyncExitStack() as stack:
        if _human(args):
            from ._cli_render import RunView

            view = stack.enter_context(RunView(_console()))
            start = "from now on" if args.start == "new" else "from the first retained record"
            view.note(
                f"following namespace {args.namespace!r} on {redact_url(args.url)} through "
                f"group {group!r}, {start}; Ctrl-C to stop"
            )
        sub = await stack.enter_async_context(_subscriber(args))
        try:
            current: str | None = None
            consumer = f"cli-{os.getpid()}"
            async with contextlib.aclosing(
                sub.consume(group, consumer, start=args.start)
            ) as messages:
                async for msg in messages:
                    event = msg.event
                    if event is not None and args.types:
                        keep = filters.setdefault(
                            msg.run_id, _langchain.EventFilter(include_types=args.types)
                        )
                        event = keep(event)
                        if event is None:
                            await msg.ack()
                            continue
                    if view is None:
                        _write_json(_message_json(msg, event))
                    else:
                        if msg.run_id != current:
                            current = msg.run_id
                            view.note(f"── run {msg.run_id}", style="bold blue")
                        _render_message(view, msg, event)
                    await msg.ack()
        finally:
            if ephemeral:
                await drop_group(sub, group)
    return 0


def _message_json(msg: Message, event: StreamEvent | None) -> dict[str, Any]:
    if msg.kind == "event":
        return record_jsonable("event", msg.run_id, msg.seq, event=event)
    return record_jsonable(msg.kind, msg.run_id, msg.seq, error=msg.error)


def _render_message(view: RunView, msg: Message, event: StreamEvent | None) -> None:
    if event is not None:
        view.handle(event)
    elif msg.kind == "end":
        view.ended(msg.run_id)
    elif isinstance(msg.error, RemoteRunError):
        view.failed(str(msg.error), msg.error.traceback)
    else:
        view.failed(str(msg.error))


async def _replay(args: argparse.Namespace) -> int:
    run_id = _run_key(args.run_id)
    async with (
        _subscriber(args, start_timeout=_wait_arg(args.wait)) as sub,
        contextlib.aclosing(sub.follow(run_id, after=args.after)) as items,
    ):
        return await _show_run(args, run_id, items)


# -- trace -----------------------------------------------------------------------------------


async def _trace(args: argparse.Namespace) -> int:
    run_id = _run_key(args.run_id)
    async with _subscriber(args, start_timeout=_wait_arg(args.wait)) as sub:
        trace = await trace_run(sub, run_id)
    if args.json:
        _write_json(trace)
    else:
        from ._cli_render import trace_tree

        _console().print(trace_tree(trace))
    if trace["error"] is not None:
        _err(trace["error"])
        return 1
    return 0


# -- runs ------------------------------------------------------------------------------------


async def _runs(args: argparse.Namespace) -> int:
    async with _subscriber(args) as sub:
        runs, count = await list_runs(
            sub,
            first_wait=args.wait,
            settle=args.settle,
            max_records=args.max_records,
            idle=args.idle,
        )
    runs = runs[: args.limit]
    if args.json:
        for run in runs:
            _write_json(run)
        return 0
    from ._cli_render import runs_table

    console = _console()
    if not runs:
        console.print(f"no runs in namespace {args.namespace!r} on {redact_url(args.url)}")
        return 0
    title = f"runs in namespace {args.namespace!r} on {redact_url(args.url)} ({count} records read)"
    console.print(runs_table(runs, title))
    return 0


# -- demo (the harness is in _demo.py) --------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from ._demo import demo

    return demo(args)


def _demo_worker(args: argparse.Namespace) -> int:
    from ._demo import demo_worker

    return demo_worker(args)


def _demo_live(args: argparse.Namespace) -> int:
    from ._demo import demo_live

    return demo_live(args)


def _demo_audit(args: argparse.Namespace) -> int:
    from ._demo import demo_audit

    return demo_audit(args)


# -- parsing -----------------------------------------------------------------------------------

_EPILOG_MAIN = """\
commands:
  demo     the main job in one command: a worker process publishes a LangGraph graph and a
           LangChain chain, a live view and an audit consumer group receive every event
  tail     follow one run live (or the whole namespace through a consumer group)
  runs     recent runs of the namespace, with status, start, duration, event count
  replay   print a run again from the broker
  trace    the run tree of a run: names, types, durations, tokens, errors
  serve    the HTTP gateway: runs over SSE / WebSocket / LangGraph SDK join_stream
  forward  POST every record to a webhook (Standard Webhooks signatures, retries)

examples:
  eventbus demo                                 # needs Redis on localhost (or --url)
  eventbus demo --url memory://                 # no broker: everything in one process
  eventbus tail 0192f0c6-8f0e-7a51-b1b2-000000000001
  eventbus runs --namespace myapp

environment: EVENTBUS_URL (default redis://localhost:6379/0), EVENTBUS_NAMESPACE
(default "default"). Exit codes: 0 ok, 1 the run failed / was cancelled / lost its worker,
2 bad input or broker unreachable, 130 interrupted.
"""


def _common(default_namespace: str | None) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("broker")
    url = os.environ.get("EVENTBUS_URL") or DEFAULT_URL
    # the help shows the redacted default: EVENTBUS_URL may hold a password
    group.add_argument(
        "--url",
        default=url,
        help=f"broker URL (env EVENTBUS_URL; now {redact_url(url)})",
    )
    namespace = default_namespace or os.environ.get("EVENTBUS_NAMESPACE") or "default"
    group.add_argument(
        "--namespace",
        "-n",
        default=namespace,
        help=f"namespace (default: {namespace}"
        + ("" if default_namespace else ", env EVENTBUS_NAMESPACE")
        + ")",
    )
    return parent


def _follow_options(parser: argparse.ArgumentParser, wait: float) -> None:
    parser.add_argument(
        "--wait",
        type=float,
        default=wait,
        metavar="SECONDS",
        help=f"how long to wait for a run that has not started (default {wait:g}; 0: forever)",
    )
    parser.add_argument(
        "--idle",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="a run silent this long (no event, no heartbeat) has lost its worker (default 30)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventbus",
        description="Stream LangChain / LangGraph astream_events across processes.",
        epilog=_EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"eventbus {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common(None)
    raw = argparse.RawDescriptionHelpFormatter

    demo = sub.add_parser(
        "demo",
        parents=[_common(DEMO_NAMESPACE)],
        formatter_class=raw,
        help="the main job: a worker process publishes, a live view and an audit group receive",
        description="The main job in one command. A worker process runs a LangGraph graph "
        "(progress via get_stream_writer(), a tool call, streamed tokens) and a LangChain "
        "chain (progress via adispatch_custom_event, streamed tokens) with a fake streaming "
        "chat model and publishes every event; a live-view process renders the runs as "
        "they happen; an audit process consumes them through a consumer group into a "
        "JSON-lines file. A summary then compares what each consumer received with what "
        "was published.",
        epilog="examples:\n"
        "  eventbus demo                               # Redis on localhost\n"
        "  eventbus demo --url amqp://guest:guest@localhost:5672/\n"
        "  eventbus demo --url memory://               # no broker: one process, tasks\n",
    )
    demo.add_argument("--timeout", type=float, default=120.0, help=argparse.SUPPRESS)
    demo.set_defaults(handler=_demo)

    tail = sub.add_parser(
        "tail",
        parents=[common],
        formatter_class=raw,
        help="follow one run live, or the whole namespace",
        description="Follow RUN_ID from its first event until it ends (it may not have "
        "started yet). Without RUN_ID, follow every run of the namespace through a "
        "consumer group (--group; default: a throw-away group that sees records from now "
        "on). In a terminal: tokens as text, progress bars, the run tree; with --json or "
        "when stdout is not a terminal: one JSON record per line, the "
        'same shape per run and per namespace: {"kind", "run_id", "seq", "id", "event" | '
        '"error"}, events in the JSON form of docs/json-form.md.',
        epilog="examples:\n"
        "  eventbus tail 0192f0c6-8f0e-7a51-b1b2-000000000001\n"
        "  eventbus tail 0192f0c6-8f0e-7a51-b1b2-000000000001 --types chat_model --json\n"
        "  eventbus tail --group dashboards             # every run, a durable group\n",
    )
    tail.add_argument("run_id", nargs="?", metavar="RUN_ID", help="the root run id (a UUID)")
    tail.add_argument("--group", help="consumer group for following the whole namespace")
    tail.add_argument(
        "--start",
        choices=("new", "first"),
        default="new",
        help="where a new group begins (default: new records only)",
    )
    tail.add_argument(
        "--types",
        nargs="+",
        action="extend",
        metavar="TYPE",
        help="only these run types (chat_model, chain, tool, ...), as include_types",
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    _follow_options(tail, 30.0)
    tail.set_defaults(handler=_asyncio(_tail))

    runs = sub.add_parser(
        "runs",
        parents=[common],
        formatter_class=raw,
        help="recent runs with status, start, duration, event count",
        description="Recent runs of the namespace: status (running, done, failed, "
        "cancelled, abandoned), start time, duration and event count. Read from the "
        "namespace's group stream through a throw-away consumer group, from the first "
        "record still retained until nothing arrives for --settle seconds: so it lists "
        "only what the broker still retains (Redis: maxlen frames; RabbitMQ: the log's "
        "retention) and a run whose first records were trimmed is marked partial. "
        "'abandoned': no end record and nothing for --idle seconds (heartbeats do not "
        "reach groups, so a run silent that long looks abandoned).",
        epilog="examples:\n  eventbus runs\n  eventbus runs --namespace myapp --json\n",
    )
    runs.add_argument("--json", action="store_true", help="one JSON object per run")
    runs.add_argument("--limit", type=int, default=20, help="show this many runs (default 20)")
    runs.add_argument(
        "--wait",
        type=float,
        default=3.0,
        metavar="SECONDS",
        help="wait this long for the first record (default 3)",
    )
    runs.add_argument(
        "--settle",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="stop reading after this long without a record (default 0.5)",
    )
    runs.add_argument(
        "--max-records",
        type=int,
        default=100_000,
        metavar="N",
        help="stop reading after N records (default 100000)",
    )
    runs.add_argument(
        "--idle",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="an unfinished run silent this long is abandoned (default 30)",
    )
    runs.set_defaults(handler=_asyncio(_runs))

    replay = sub.add_parser(
        "replay",
        parents=[common],
        formatter_class=raw,
        help="print a run again from the broker",
        description="Print RUN_ID again from its first event (or after --after, the "
        '"id" of a --json record), as tail does.',
        epilog="examples:\n"
        "  eventbus replay 0192f0c6-8f0e-7a51-b1b2-000000000001\n"
        "  eventbus replay 0192f0c6-8f0e-7a51-b1b2-000000000001 --json\n"
        "  eventbus replay 0192f0c6-8f0e-7a51-b1b2-000000000001 --after 12:1716299999123-0\n",
    )
    replay.add_argument("run_id", metavar="RUN_ID")
    replay.add_argument("--after", metavar="ID", help="resume after this event id")
    replay.add_argument("--json", action="store_true", help="one JSON object per line")
    replay.add_argument(
        "--ids", action="store_true", help=argparse.SUPPRESS
    )  # kept for old scripts: every --json record has its id now
    _follow_options(replay, 5.0)
    replay.set_defaults(handler=_asyncio(_replay))

    trace = sub.add_parser(
        "trace",
        parents=[common],
        formatter_class=raw,
        help="the run tree: names, types, durations, tokens, errors",
        description="The run tree of RUN_ID, aggregated from its events: each runnable's "
        "name and type, duration (between its start and end events, on the worker's "
        "clock), streamed token chunks and errors. Waits for the run to end.",
        epilog="examples:\n"
        "  eventbus trace 0192f0c6-8f0e-7a51-b1b2-000000000001\n"
        "  eventbus trace 0192f0c6-8f0e-7a51-b1b2-000000000001 --json\n",
    )
    trace.add_argument("run_id", metavar="RUN_ID")
    trace.add_argument("--json", action="store_true", help="the tree as one JSON object")
    _follow_options(trace, 5.0)
    trace.set_defaults(handler=_asyncio(_trace))

    serve = sub.add_parser(
        "serve",
        parents=[common],
        formatter_class=raw,
        help="the HTTP gateway: runs over SSE, WebSocket and LangGraph SDK join_stream",
        description="Serve the runs of the namespace over HTTP (needs the http extra): "
        "GET /runs/RUN_ID/events (Server-Sent Events, resume with Last-Event-ID), "
        "/runs/RUN_ID/ws (WebSocket), /threads/ANY/runs/RUN_ID/stream (LangGraph SDK "
        "join_stream), /runs, /healthz. See eventbus._http and the README.",
        epilog="examples:\n"
        "  eventbus serve --url redis://localhost:6379/0 --namespace myapp --port 8000\n"
        "  curl -N localhost:8000/runs/0192f0c6-8f0e-7a51-b1b2-000000000001/events\n",
    )
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any)")
    serve.add_argument(
        "--cors", action="append", metavar="ORIGIN", help="allow this browser origin ('*': any)"
    )
    serve.add_argument(
        "--wait",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="an unknown run is 404 after this long (default 5)",
    )
    serve.add_argument(
        "--traceback", action="store_true", help="send the worker's traceback in error events"
    )
    serve.add_argument(
        "--page", action="store_true", help="serve a page at / that follows ?run=RUN_ID"
    )
    serve.set_defaults(handler=_serve)

    forward = sub.add_parser(
        "forward",
        parents=[common],
        formatter_class=raw,
        help="POST every record to a webhook, signed (Standard Webhooks), with retries",
        description="Forward every record of the namespace's runs to --to as a member of "
        "consumer group --group: one POST per record in the JSON form, signed per the "
        "Standard Webhooks specification with --secret (env EVENTBUS_WEBHOOK_SECRET); "
        "retries with backoff on 5xx/408/429/timeouts, dead letters after --max-attempts "
        "or on another 4xx; acked only after a 2xx; each run's records in order. Needs "
        "the http extra. See eventbus._webhooks.",
        epilog="examples:\n"
        "  eventbus forward --group hooks --to https://example.com/hook --secret whsec_...\n"
        "  eventbus forward --group notify --to http://localhost:9000/done --terminal-only\n",
    )
    forward.add_argument("--group", required=True, help="the consumer group")
    forward.add_argument("--to", required=True, metavar="URL", help="the webhook endpoint")
    forward.add_argument(
        "--secret",
        default=os.environ.get("EVENTBUS_WEBHOOK_SECRET"),
        help="signing secret, whsec_<base64> (env EVENTBUS_WEBHOOK_SECRET)",
    )
    forward.add_argument("--start", choices=("new", "first"), default="new")
    forward.add_argument("--terminal-only", action="store_true", help="only each run's end record")
    forward.add_argument("--max-attempts", type=int, default=8, metavar="N")
    forward.set_defaults(handler=_forward)

    # hidden: the demo's processes
    for name, handler in (
        ("_demo-worker", _demo_worker),
        ("_demo-live", _demo_live),
        ("_demo-audit", _demo_audit),
    ):
        hidden = sub.add_parser(name, parents=[_common(DEMO_NAMESPACE)])
        hidden.add_argument("run_ids", nargs="+")
        hidden.add_argument("--report", required=True)
        hidden.add_argument("--log")
        hidden.add_argument("--timeout", type=float, default=120.0)
        hidden.set_defaults(handler=handler)
    return parser


def _serve(args: argparse.Namespace) -> int:
    _check_url(args.url)
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
        )
    )
    return 0


def _forward(args: argparse.Namespace) -> int:
    _check_url(args.url)
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


def _asyncio(
    fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return asyncio.run(fn(args))

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """The ``eventbus`` command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    url = str(getattr(args, "url", ""))
    # the CLI reports broker trouble itself, in one paragraph: aiormq would also log each
    # failed connection attempt to stderr
    for name in ("aiormq", "aio_pika"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`eventbus tail --json | head`): not an error
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except CliError as exc:
        _err(_safe(str(exc), url))
        return exc.code
    except (ConfigurationError, InvalidResumeToken) as exc:
        _err(_safe(str(exc), url))
        return 2
    except ConnectError as exc:
        _err(broker_hint(url, exc))
        return 2
    except AuthenticationError as exc:
        _err(_safe(f"{exc} (check the user and password in --url / EVENTBUS_URL)", url))
        return 2
    except RunNotFoundError as exc:
        _err(_safe(f"run not found: {exc}", url))
        return 2
    except TimeoutError:
        _err("timed out")
        return 1
    except (RunError, SequenceGapError) as exc:
        _err(_safe(str(exc), url))
        return 1
    except TransportError as exc:
        _err(_safe(f"broker error: {exc}", url))
        return 2
    except EventbusError as exc:
        _err(_safe(str(exc), url))
        return 1
