"""The ``eventbus`` command line's argument parser.

Handlers are named (``"module:function"``) and imported only when their command runs,
so that ``eventbus --help`` imports neither LangChain nor rich nor a broker client.
"""

from __future__ import annotations

import argparse
import os

from ._cli_base import DEFAULT_NAMESPACE, DEFAULT_URL
from .transports import redact_url

__all__ = ["build_parser", "default_namespace"]


def default_namespace() -> str:
    """``$EVENTBUS_NAMESPACE``, else ``default``: the library's, examples' and demo's too."""
    return os.environ.get("EVENTBUS_NAMESPACE") or DEFAULT_NAMESPACE


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
  cancel   cancel a run: the worker running it cancels its task
  groups   the consumer groups: consumers, pending, lag, dead letters
  dead-letters      a group's dead letters, decoded, with why
  delete-namespace  delete every run, group and dead letter of a namespace

examples:
  eventbus demo                                 # needs Redis on localhost (or --url)
  eventbus demo --url memory://                 # no broker: everything in one process
  eventbus tail 0192f0c6-8f0e-7a51-b1b2-000000000001
  eventbus runs --namespace myapp
  eventbus cancel 0192f0c6-8f0e-7a51-b1b2-000000000001 --reason "user pressed stop"

environment: EVENTBUS_URL (default redis://localhost:6379/0), EVENTBUS_NAMESPACE
(default "default", for the demo and the examples too). Exit codes: 0 ok, 1 the run
failed / was cancelled / lost its worker, 2 bad input, broker unreachable or a missing
extra, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""


def _common() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group("broker")
    url = os.environ.get("EVENTBUS_URL") or DEFAULT_URL
    # the help shows the redacted default: EVENTBUS_URL may hold a password
    group.add_argument(
        "--url",
        default=url,
        help=f"broker URL (env EVENTBUS_URL; now {redact_url(url)})",
    )
    namespace = default_namespace()
    group.add_argument(
        "--namespace",
        "-n",
        default=namespace,
        help=f"namespace (env EVENTBUS_NAMESPACE; now {namespace})",
    )
    return parent


def _number(
    parser: argparse.ArgumentParser,
    flag: str,
    default: float,
    help: str,
    *,
    metavar: str | None = None,
    also: str = "",
) -> None:
    """An option whose value is a number of ``default``'s type (a float: ``SECONDS``), its
    default said at the end of its help (``also``: a note after it, such as what 0 means)."""
    shown = f"{default:g}" if isinstance(default, float) else str(default)
    parser.add_argument(
        flag,
        type=type(default),
        default=default,
        metavar=metavar or ("SECONDS" if isinstance(default, float) else None),
        help=f"{help} (default {shown}{'; ' + also if also else ''})",
    )


def _follow_options(parser: argparse.ArgumentParser, wait: float) -> None:
    _number(
        parser, "--wait", wait, "how long to wait for a run that has not started", also="0: forever"
    )
    _number(
        parser,
        "--idle",
        30.0,
        "a run silent this long (no event, no heartbeat) has lost its worker",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="eventbus",
        description="Stream LangChain / LangGraph astream_events across processes.",
        epilog=_EPILOG_MAIN,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"eventbus {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    common = _common()
    raw = argparse.RawDescriptionHelpFormatter

    demo = sub.add_parser(
        "demo",
        parents=[common],
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
    demo.set_defaults(handler="_cli_ops:demo", sync=True)

    tail = sub.add_parser(
        "tail",
        parents=[common],
        formatter_class=raw,
        help="follow one run live, or the whole namespace",
        description="Follow RUN_ID from its first event until it ends (it may not have "
        "started yet). Without RUN_ID, follow every run of the namespace through a "
        "consumer group (--group), or by default without any group: read-only, nothing is "
        "created on the broker. In a terminal: tokens as text, progress bars, the run "
        "tree; with --json or when stdout is not a terminal: one JSON record per line, the "
        'same shape per run and per namespace: {"kind", "run_id", "seq", "id", "event" | '
        '"error"}, events in the JSON form of docs/json-form.md.',
        epilog="examples:\n"
        "  eventbus tail 0192f0c6-8f0e-7a51-b1b2-000000000001\n"
        "  eventbus tail 0192f0c6-8f0e-7a51-b1b2-000000000001 --types chat_model --json\n"
        "  eventbus tail 0192f0c6-8f0e-7a51-b1b2-000000000001 --after 12:1716299999123-0\n"
        "  eventbus tail                                # every run, read-only\n"
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
    tail.add_argument("--after", metavar="ID", help="resume after this event id (Ctrl-C prints it)")
    _render_options(tail)
    _follow_options(tail, 30.0)
    tail.set_defaults(handler="_cli_follow:tail")

    runs = sub.add_parser(
        "runs",
        parents=[common],
        formatter_class=raw,
        help="recent runs with status, start, duration, event count",
        description="Recent runs of the namespace: status (running, done, failed, "
        "ended, failed, cancelled, lost), start time, duration and event count. Read from "
        "the namespace's group stream without a group (nothing is created on the broker), "
        "from the first record still retained until nothing arrives for --settle seconds: "
        "so it lists only what the broker still retains (Redis: maxlen frames; RabbitMQ: "
        "the log's retention) and a run whose first records were trimmed is marked "
        "partial. 'lost': no end record and nothing for --idle seconds (heartbeats do not "
        "reach the group stream, so a run silent that long looks lost).",
        epilog="examples:\n  eventbus runs\n  eventbus runs --namespace myapp --json\n",
    )
    runs.add_argument("--json", action="store_true", help="one JSON object per run")
    _number(runs, "--limit", 20, "show this many runs")
    _number(runs, "--wait", 3.0, "wait this long for the first record")
    _number(runs, "--settle", 1.0, "stop reading after this long without a record")
    _number(runs, "--max-records", 100_000, "stop reading after N records", metavar="N")
    _number(runs, "--idle", 30.0, "an unfinished run silent this long is lost")
    runs.set_defaults(handler="_cli_ops:runs")

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
    _render_options(replay)
    _follow_options(replay, 5.0)
    replay.set_defaults(handler="_cli_follow:replay")

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
    trace.set_defaults(handler="_cli_follow:trace")

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
    _number(serve, "--port", 8000, "port", also="0: any")
    serve.add_argument(
        "--cors", action="append", metavar="ORIGIN", help="allow this browser origin ('*': any)"
    )
    _number(serve, "--wait", 5.0, "an unknown run is 404 after this long")
    serve.add_argument(
        "--traceback", action="store_true", help="send the worker's traceback in error events"
    )
    serve.add_argument(
        "--page", action="store_true", help="serve a page at / that follows ?run=RUN_ID"
    )
    serve.add_argument(
        "--allow-cancel",
        action="store_true",
        help="honour the LangGraph SDKs' cancel_on_disconnect: a join client that asked "
        "for it and leaves before the run ends cancels the run",
    )
    serve.set_defaults(handler="_cli_ops:serve", sync=True)

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
    forward.add_argument(
        "--batch", type=int, default=1, metavar="N", help="up to N records of a run per request"
    )
    forward.set_defaults(handler="_cli_ops:forward", sync=True)

    _operations(sub, common)

    # hidden: the demo's processes
    for name in ("_demo-worker", "_demo-live", "_demo-audit"):
        hidden = sub.add_parser(name, parents=[common])
        hidden.add_argument("run_ids", nargs="+")
        hidden.add_argument("--report", required=True)
        hidden.add_argument("--log")
        hidden.add_argument("--timeout", type=float, default=120.0)
        hidden.set_defaults(handler="_cli_ops:demo", sync=True)
    return parser


def _version() -> str:
    from . import __version__

    return __version__


def _render_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--types",
        nargs="+",
        action="extend",
        metavar="TYPE",
        help="only these run types (chain, chat_model, llm, tool, retriever, prompt, "
        "parser), as LangChain's include_types",
    )
    parser.add_argument(
        "--names",
        nargs="+",
        action="extend",
        metavar="NAME",
        help="only runs and custom events of these names, as include_names",
    )
    parser.add_argument(
        "--tags", nargs="+", action="extend", metavar="TAG", help="only these tags, as include_tags"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--ids", action="store_true", help="in a terminal, show each event's id (to resume from)"
    )
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="a failed run's full traceback"
    )


def _operations(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    cancel = sub.add_parser(
        "cancel",
        parents=[common],
        formatter_class=raw,
        help="cancel a run: the worker running it cancels its task",
        description="Ask the worker running RUN_ID to cancel it. Its task is cancelled and "
        "its followers get RunCancelledError with --reason. A run that already ended, or "
        "that is unknown, is reported as such (exit 0); a run whose worker does not answer "
        "within --timeout seconds is reported with exit 1.",
        epilog="examples:\n"
        "  eventbus cancel 0192f0c6-8f0e-7a51-b1b2-000000000001\n"
        '  eventbus cancel 0192f0c6-8f0e-7a51-b1b2-000000000001 --reason "user pressed stop"\n',
    )
    cancel.add_argument("run_id", metavar="RUN_ID")
    cancel.add_argument("--reason", default="cancelled from the command line")
    cancel.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS")
    cancel.add_argument("--json", action="store_true", help="the outcome as one JSON object")
    cancel.set_defaults(handler="_cli_ops:cancel")

    groups = sub.add_parser(
        "groups",
        parents=[common],
        formatter_class=raw,
        help="consumer groups: consumers, pending, lag, dead letters",
        description="The namespace's consumer groups: consumers, pending (delivered, not "
        "yet acked; RabbitMQ does not tell), lag (not yet delivered) and dead letters. "
        "A read: nothing is created on the broker.",
        epilog="examples:\n  eventbus groups\n  eventbus groups --namespace myapp --json\n",
    )
    groups.add_argument("--json", action="store_true", help="one JSON object per group")
    groups.set_defaults(handler="_cli_ops:groups")

    dead = sub.add_parser(
        "dead-letters",
        parents=[common],
        formatter_class=raw,
        help="a group's dead letters, decoded, with why; requeue one or all",
        description="The oldest dead letters of consumer group GROUP, decoded: position, "
        "run, records, why the group gave up on each, how often it was delivered. A read: "
        "they stay. With --requeue POSITION... or --requeue-all they go back into the "
        "group instead: each is delivered again to one consumer of GROUP, its delivery "
        "count starting afresh, and leaves the dead letters once it is back (a crash "
        "half-way leaves at worst a duplicate, never a loss). Requeueing asks first on a "
        "terminal, unless --yes, and says how many were requeued; a position that is not "
        "a dead letter of GROUP is not requeued (exit 2).",
        epilog="examples:\n  eventbus dead-letters audit\n  eventbus dead-letters audit --json\n"
        "  eventbus dead-letters audit --requeue 1716299999123-0\n"
        "  eventbus dead-letters audit --requeue-all --yes --json\n",
    )
    dead.add_argument("group", metavar="GROUP")
    _number(dead, "--limit", 100, "at most this many")
    dead.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per dead letter (requeueing: one object, how many)",
    )
    requeue = dead.add_mutually_exclusive_group()
    requeue.add_argument(
        "--requeue",
        nargs="+",
        metavar="POSITION",
        help="put these dead letters (their positions, as listed) back into the group",
    )
    requeue.add_argument(
        "--requeue-all", action="store_true", help="put every dead letter back into the group"
    )
    dead.add_argument("--yes", action="store_true", help="requeue without asking")
    dead.set_defaults(handler="_cli_ops:dead_letters", sync=True)

    delete = sub.add_parser(
        "delete-namespace",
        parents=[common],
        formatter_class=raw,
        help="delete every run, group and dead letter of a namespace",
        description="Delete namespace NS on the broker: its runs, its group stream, its "
        "consumer groups and their dead letters (Redis: its keys; RabbitMQ: its queues "
        "and exchange). Asks to type the namespace again, unless --yes.",
        epilog="examples:\n  eventbus delete-namespace scratch\n"
        "  eventbus delete-namespace scratch --yes --url amqp://guest:guest@localhost:5672/\n",
    )
    delete.add_argument("namespace_to_delete", metavar="NS")
    delete.add_argument("--yes", action="store_true", help="do not ask")
    delete.set_defaults(handler="_cli_ops:delete_namespace", sync=True)
