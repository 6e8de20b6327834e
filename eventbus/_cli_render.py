"""Terminal rendering for the ``eventbus`` command line (rich).

Only the CLI imports this module, and only when it renders for a person, so that
``import eventbus`` (and ``eventbus tail --json``) never need rich.

Three renderings:

* :class:`RunView`: a run as it happens, like ``tail -f``: the run tree indented by depth
  (``len(parent_ids)``), streamed tokens as text, one progress bar per progress stream,
  tool calls and errors highlighted. In a terminal it keeps the moving parts (bars and the
  text being streamed) in a live area at the bottom; elsewhere (a recording console, a
  pipe) it prints each progress update as a line and the tokens inline.
* :func:`trace_tree`: the aggregated run tree of :func:`eventbus._runs.build_trace`.
* :func:`runs_table`, :func:`groups_table`, :func:`dead_letters_text`: what a namespace
  holds.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.padding import Padding
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

__all__ = [
    "RunView",
    "as_json",
    "chunk_text",
    "dead_letters_text",
    "groups_table",
    "progress_of",
    "progress_row",
    "runs_table",
    "short",
    "trace_tree",
]

StreamEvent = dict[str, Any]

# run types whose start gets a line of its own; prompts and parsers are noise in a tail
_SHOWN_STARTS = (
    "on_chain_start",
    "on_tool_start",
    "on_chat_model_start",
    "on_llm_start",
    "on_retriever_start",
)
_STATUS_STYLE = {
    "ended": "green",
    "running": "cyan",
    "failed": "bold red",
    "cancelled": "yellow",
    "lost": "magenta",
    "unknown": "dim",
}


def short(value: Any, limit: int = 80) -> str:
    """A one-line, bounded repr for a person."""
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def as_json(value: Any, limit: int = 80) -> str:
    """``value`` as one line of JSON (its JSON form, ``eventbus.to_jsonable``), bounded:
    tool inputs and arguments read as what a model sent, not as Python reprs."""
    import msgspec

    from ._jsonable import to_jsonable

    try:
        text = msgspec.json.encode(to_jsonable(value)).decode()
    except Exception:  # (a value no JSON form takes: what a person can still read)
        text = repr(value)
    return short(text, limit)


def chunk_text(chunk: Any) -> str:
    """The text of a streamed chunk: a message chunk, a generation chunk or a str."""
    if isinstance(chunk, str):
        return chunk
    content = getattr(chunk, "content", None)
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content blocks: keep the text ones
        parts = []
        for block in content:
            if isinstance(block, str):
                parts.append(block)
            elif isinstance(block, dict) and isinstance(block.get("text"), str):
                parts.append(block["text"])
        return "".join(parts)
    text = getattr(chunk, "text", None)
    return text if isinstance(text, str) else ""


def progress_of(value: Any) -> dict[str, Any] | None:
    """``value`` if it is a progress payload (``{"type": "progress", "current": ..., ...}``
    or at least ``current`` and ``total`` numbers), else None."""
    if not isinstance(value, dict):
        return None
    current, total = value.get("current"), value.get("total")
    numbers = isinstance(current, (int, float)) and isinstance(total, (int, float))
    if value.get("type") == "progress" or (numbers and "status" in value):
        return value if numbers else None
    return None


@dataclass
class _Bar:
    label: str
    depth: int
    current: float
    total: float
    status: str


def progress_row(label: str, current: float, total: float, status: str, depth: int = 0) -> Table:
    """One progress bar as a line: ``label ━━━━━━━╺━━━━ 3/5 status``."""
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(width=30, no_wrap=True)
    grid.add_column(no_wrap=True, justify="right")
    grid.add_column(no_wrap=True)
    done = total > 0 and current >= total
    grid.add_row(
        Text("  " * depth + label, style="bold"),
        ProgressBar(total=max(total, 1), completed=min(current, max(total, 1)), width=30),
        Text(f"{_num(current)}/{_num(total)}", style="green" if done else "cyan"),
        Text(status, style="dim"),
    )
    return grid


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


class RunView:
    """Renders the events of one or more runs for a person (see the module docstring).

    Use ``with RunView(console) as view: view.handle(event) ...``, then
    :meth:`ended` / :meth:`failed` for the outcome.

    Args:
        console: where to render.
        live: keep bars and streaming text in a live area (default: when the console is
            a terminal). Without it every progress update is a line of its own.
    """

    def __init__(self, console: Console, *, live: bool | None = None) -> None:
        self.console = console
        self.live_mode = console.is_terminal if live is None else live
        self.events = 0
        self.tokens = 0
        self._names: dict[str, str] = {}
        self._bars: dict[str, _Bar] = {}
        self._streams: dict[str, tuple[int, str]] = {}  # live mode: model run -> (depth, text)
        self._inline: str | None = None  # plain mode: the model run whose tokens are mid-line
        self._column = 0  # plain mode: where that line is
        self._live: Live | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> RunView:
        if self.live_mode:
            # transient: the live area is erased at the end and its last state printed as
            # ordinary lines (so nothing is shown twice)
            self._live = Live(
                get_renderable=self._live_renderable,
                console=self.console,
                refresh_per_second=12,
                transient=True,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live area and print what it still showed."""
        live, self._live = self._live, None
        if live is not None:
            live.stop()
        for run_id, (depth, text) in list(self._streams.items()):
            self._print(_indented(depth, Text(text)))
            del self._streams[run_id]
        self._end_inline()
        for key, bar in list(self._bars.items()):
            if live is not None:
                self._print(progress_row(bar.label, bar.current, bar.total, bar.status, bar.depth))
            del self._bars[key]

    # -- outcome -----------------------------------------------------------------------

    def ended(self, run_id: str, note: str = "") -> None:
        name = self._names.get(run_id, "run")
        self._print(Text.assemble(("✓ ", "green"), (f"{name} {run_id} ended", "green"), note))

    def failed(self, message: str, detail: str | None = None) -> None:
        self._print(Text.assemble(("✗ ", "bold red"), (message, "bold red")))
        if detail:
            self._print(Text(detail.rstrip(), style="red dim"))

    def note(self, message: str, style: str = "dim") -> None:
        self._print(Text(message, style=style))

    # -- events ------------------------------------------------------------------------

    def handle(self, event: StreamEvent) -> None:
        """Render one ``astream_events`` v2 event."""
        self.events += 1
        kind = str(event.get("event", ""))
        run_id = str(event.get("run_id", ""))
        name = str(event.get("name", ""))
        depth = len(event.get("parent_ids") or ())
        data = event.get("data") or {}
        if not isinstance(data, dict):
            data = {}
        if kind.endswith("_start"):
            self._names[run_id] = name
            if kind == "on_tool_start":
                args = as_json(data.get("input", ""), 60)
                self._line(
                    depth,
                    Text.assemble(
                        ("⚙ tool ", "bold yellow"), (name, "yellow"), (f"({args})", "yellow")
                    ),
                )
            elif kind in _SHOWN_STARTS:
                run_type = kind[3:-6]
                self._line(
                    depth, Text.assemble(("▸ ", "blue"), (name, "bold"), (f"  {run_type}", "dim"))
                )
        elif kind in ("on_chat_model_stream", "on_llm_stream"):
            self._token(run_id, depth, chunk_text(data.get("chunk")))
        elif kind in ("on_chat_model_end", "on_llm_end"):
            self._end_stream(run_id)
            for call in getattr(data.get("output"), "tool_calls", None) or ():
                if isinstance(call, dict):
                    text = f"{call.get('name')}({as_json(call.get('args', {}), 60)})"
                    self._line(
                        depth + 1, Text.assemble(("⚙ tool call ", "bold yellow"), (text, "yellow"))
                    )
        elif kind == "on_tool_end":
            self._line(
                depth,
                Text.assemble(("  ↳ ", "yellow"), (short(data.get("output", ""), 70), "yellow")),
            )
        elif kind.endswith("_error"):
            self._line(
                depth,
                Text.assemble(
                    ("✗ ", "bold red"),
                    (f"{name}: ", "bold red"),
                    (short(data.get("error", ""), 90), "red"),
                ),
            )
        elif kind == "on_custom_event":
            progress = (
                progress_of(data) if name == "progress" or data.get("type") == "progress" else None
            )
            if progress is not None:
                self._progress(run_id, self._names.get(run_id, name), depth, progress)
            else:
                self._line(
                    depth,
                    Text.assemble(
                        ("• ", "magenta"), (name, "magenta"), (f" {short(data, 70)}", "dim")
                    ),
                )
        elif kind == "on_chain_stream" and depth == 0:
            chunk = data.get("chunk")
            payload = (
                chunk[1]
                if isinstance(chunk, tuple) and len(chunk) == 2 and chunk[0] == "custom"
                else chunk
            )
            progress = progress_of(payload)
            if progress is not None:
                label = str(progress.get("label") or progress.get("name") or name)
                self._progress(f"{run_id}:custom:{label}", label, depth, progress)

    # -- pieces ------------------------------------------------------------------------

    def _print(self, renderable: RenderableType) -> None:
        self._end_inline()
        # the live area is redrawn below what is printed from its last rendering: bring
        # that up to date first, or a finished stream or bar would linger in it
        self._refresh()
        self.console.print(renderable, soft_wrap=isinstance(renderable, (str, Text)))

    def _line(self, depth: int, text: Text) -> None:
        self._print(Text("  " * depth) + text)

    def _token(self, run_id: str, depth: int, text: str) -> None:
        if not text:
            return
        self.tokens += 1
        if self.live_mode:
            d, so_far = self._streams.get(run_id, (depth, ""))
            self._streams[run_id] = (d, so_far + text)
            self._refresh()
            return
        if self._inline != run_id:
            self._end_inline()
            self._inline = run_id
            self._column = 0
        indent = "  " * depth
        width = max(len(indent) + 20, self.console.width)
        # word by word: a word that would cross the edge starts a line of its own, at the
        # stream's indent (a terminal would break it anywhere, at column 0)
        for piece in re.split(r"(\s+)", text):
            if not piece:
                continue
            if piece.isspace():
                for _ in range(piece.count("\n")):
                    self.console.print(soft_wrap=True)
                    self._column = 0
                gap = piece.rsplit("\n", 1)[-1]
                if self._column and self._column + len(gap) < width:
                    self._out(gap)
                continue
            if self._column and self._column + len(piece) > width:
                self.console.print(soft_wrap=True)
                self._column = 0
            if not self._column:
                self._out(indent)
            self._out(piece)

    def _out(self, text: str) -> None:
        self.console.print(text, end="", soft_wrap=True, markup=False, highlight=False)
        self._column += len(text)

    def _end_stream(self, run_id: str) -> None:
        if self.live_mode:
            stream = self._streams.pop(run_id, None)
            if stream is not None:
                self._print(_indented(stream[0], Text(stream[1])))
        elif self._inline == run_id:
            self._end_inline()

    def _end_inline(self) -> None:
        if self._inline is not None:
            self._inline = None
            self.console.print(soft_wrap=True)

    def _progress(self, key: str, label: str, depth: int, p: dict[str, Any]) -> None:
        current, total = float(p["current"]), float(p["total"])
        status = str(p.get("status", ""))
        if not self.live_mode:
            self._print(progress_row(label, current, total, status, depth))
            return
        self._bars[key] = _Bar(label, depth, current, total, status)
        if total > 0 and current >= total:  # finished: it leaves the live area for good
            del self._bars[key]
            self._print(progress_row(label, current, total, status, depth))
        self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _live_renderable(self) -> RenderableType:
        parts: list[RenderableType] = [
            progress_row(b.label, b.current, b.total, b.status, b.depth)
            for b in self._bars.values()
        ]
        parts += [_indented(d, Text(text + "▌")) for d, text in self._streams.values()]
        return Group(*parts)


def _indented(depth: int, text: Text) -> RenderableType:
    """``text`` wrapped at word boundaries, every line at the indent of ``depth``."""
    return Padding(text, (0, 0, 0, 2 * depth)) if depth else text


# -- trace ---------------------------------------------------------------------------


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return ""
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def trace_tree(trace: dict[str, Any]) -> Tree:
    """The rich Tree of a trace (the dict :func:`eventbus._runs.build_trace` returns)."""
    status = str(trace.get("status", ""))
    head = Text.assemble(
        ("run ", "dim"),
        (str(trace.get("run_id")), "bold"),
        "  ",
        (status, _STATUS_STYLE.get(status, "")),
        (f"  {trace.get('events', 0)} events  {_duration(trace.get('duration'))}", "dim"),
    )
    if trace.get("error"):
        head.append(f"\n{trace['error']}", style="red")
    tree = Tree(head)

    def add(parent: Tree, node: dict[str, Any]) -> None:
        label = Text.assemble((str(node["name"]), "bold"), (f"  {node['run_type']}", "cyan"))
        extras = [_duration(node.get("duration"))]
        if node.get("tokens"):
            extras.append(f"{node['tokens']} tokens")
        if node.get("custom_events"):
            extras.append(f"{node['custom_events']} custom events")
        if not node.get("ended") and not node.get("failed"):
            extras.append("did not end")
        label.append("  " + "  ".join(e for e in extras if e), style="dim")
        if node.get("error"):
            label.append(f"  ✗ {node['error']}", style="bold red")
        elif node.get("failed"):
            label.append("  ✗ failed", style="red")
        branch = parent.add(label)
        for child in node.get("children", ()):
            add(branch, child)

    for root in trace.get("tree", ()):
        add(tree, root)
    return tree


# -- runs ----------------------------------------------------------------------------


def runs_table(runs: list[dict[str, Any]], title: str) -> Table:
    """The table of ``eventbus runs`` (``RunInfo.to_dict()`` of :mod:`eventbus._runs`)."""
    table = Table(title=escape(title), title_justify="left", expand=False)
    table.add_column("run id", no_wrap=True)
    table.add_column("name")
    table.add_column("status")
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right")
    table.add_column("events", justify="right")
    for run in runs:
        started = run.get("started")
        when = (
            _dt.datetime.fromtimestamp(started).strftime("%Y-%m-%d %H:%M:%S")
            if isinstance(started, (int, float)) and started > 0
            else "?"
        )
        status = str(run["status"])
        note = " (partial)" if run.get("partial") else ""
        table.add_row(
            str(run["run_id"]),
            escape(str(run.get("name") or "")),
            Text(status, style=_STATUS_STYLE.get(status, "")),
            when,
            _duration(run.get("duration")),
            f"{run['events']}{note}",
        )
    return table


def groups_table(groups: list[dict[str, Any]], title: str) -> Table:
    """The table of ``eventbus groups``."""
    table = Table(title=escape(title), title_justify="left", expand=False)
    table.add_column("group", no_wrap=True)
    for name in ("consumers", "pending", "lag", "dead letters"):
        table.add_column(name, justify="right")
    for g in groups:
        dead = int(g["dead_letters"])
        table.add_row(
            escape(str(g["name"])),
            str(g["consumers"]),
            "?" if g["pending"] is None else str(g["pending"]),
            "?" if g["lag"] is None else str(g["lag"]),
            Text(str(dead), style="bold red" if dead else ""),
        )
    return table


def dead_letters_text(letters: list[Any], title: str) -> Group:
    """``eventbus dead-letters``: each dead frame (``DecodedDeadLetter``) with why, and
    its records."""
    parts: list[RenderableType] = [Text(title, style="bold")]
    for letter in letters:
        head = Text.assemble(
            ("✗ ", "bold red"),
            (f"at {letter.position}", "bold"),
            f"  {letter.deliveries} deliveries  ",
            (letter.reason, "red"),
        )
        parts.append(head)
        if letter.decode_error:
            parts.append(Text(f"    not decodable: {letter.decode_error}", style="magenta"))
            continue
        for r in letter.records:
            if r.kind == "event" and isinstance(r.event, dict):
                what = f"{r.event.get('event')} {r.event.get('name', '')}"
            else:
                what = r.kind + (f": {r.error}" if r.error else "")
            parts.append(Text(f"    run {letter.run_id} #{r.seq} {short(what, 100)}", style="dim"))
    return Group(*parts)
