"""Instructions per event (callgrind): what the noisy machine cannot blur.

    python -m benchmarks._callgrind WORKLOAD TOKENS [MODE ...]   (under valgrind; see run())

:func:`run` starts this module under ``valgrind --tool=callgrind --collect-atstart=no``.
The child runs the workload once per mode to warm up, then, per mode, switches collection
on around exactly one run (a tiny C shim issues callgrind's client requests: zero, toggle,
dump with the mode as label) and prints the events of a run. The parent reads the dumps'
totals: instructions of the whole process (the run, the publisher's writer task, the
broker client; not the broker) per event, and, per mode, the inclusive instructions of
the hot C-level functions (the compiled codec, msgspec) from ``callgrind_annotate``.

Modes: ``local`` (iterate ``astream_events(version="v2")``), ``memory``, ``redis``,
``rabbitmq`` (``Publisher.run``, connected once before); for diagnosis, ``codec`` (local,
each event encoded as a publisher does, nothing else: the codec's share) and ``nohop``
(``astream`` driven with LangChain's v2 handler forwarding each event to a sink, as a
publisher could, without ``astream_events``' queue and generator).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SLOWDOWN = 50.0  # about how much slower a Python run is under callgrind

_SHIM = r"""
#include <valgrind/callgrind.h>
void cg_on(void) { CALLGRIND_ZERO_STATS; CALLGRIND_TOGGLE_COLLECT; }
void cg_off(const char *label) { CALLGRIND_TOGGLE_COLLECT; CALLGRIND_DUMP_STATS_AT(label); }
"""


def _build_shim(where: Path) -> Path:
    src, lib = where / "cgshim.c", where / "cgshim.so"
    src.write_text(_SHIM)
    subprocess.run(
        ["cc", "-O1", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True, timeout=120
    )
    return lib


def why_not() -> str | None:
    """Why callgrind figures cannot be produced here (None: they can)."""
    if shutil.which("valgrind") is None:
        return "valgrind not on PATH"
    if shutil.which("cc") is None:
        return "no C compiler (cc) for the client-request shim"
    if not Path("/usr/include/valgrind/callgrind.h").exists():
        return "valgrind/callgrind.h not installed"
    return None


def _workload(name: str, tokens: int) -> tuple[Any, Any, dict[str, Any]]:
    from langchain_core.messages import HumanMessage

    from ._common import TOKEN_GRAPH_MODES, streaming_chain, token_graph

    if name == "chain":
        return streaming_chain(tokens), {"q": "hi"}, {}
    if name == "graph":
        inp = {"messages": [HumanMessage("hi")], "done": False}
        return token_graph(tokens), inp, {"stream_mode": TOKEN_GRAPH_MODES}
    raise SystemExit(f"unknown workload {name!r}")


async def _child(workload: str, tokens: int, modes: list[str], shim: str) -> None:
    from eventbus import Publisher, _writer
    from eventbus._lc_handler import ForwardingHandler
    from eventbus._wire import RecordEncoder

    from ._common import URLS, cleanup, fresh

    # a run under callgrind is ~SLOWDOWN times slower: the publisher's time-based batching
    # is scaled alike (linger, the rate window), and the writer is held in its busy mode
    # (it lingers while events arrive faster than _BUSY_RATE a second, which a run flat
    # out does in real time): scaling the rate alone left ~2 events per batch on a loaded
    # machine, so the broker rows measured batch size (events per batch is reported:
    # compare it with the interleaved run's)
    _writer._BUSY_RATE = 0.0
    _writer._RATE_WINDOW *= SLOWDOWN
    cg = ctypes.CDLL(shim)
    runnable, inp, kwargs = _workload(workload, tokens)
    encoder = RecordEncoder()
    pubs: dict[str, Any] = {}
    namespaces: dict[str, str] = {}
    try:
        for mode in modes:
            if mode in ("memory", "redis", "rabbitmq"):
                ns = namespaces[mode] = fresh("cg")
                url = URLS[mode] if mode != "memory" else f"memory://{ns}"
                pubs[mode] = await Publisher(url, namespace=ns, linger=0.010 * SLOWDOWN).connect()

        async def once(mode: str) -> int:
            if mode == "local":
                n = 0
                async for _ in runnable.astream_events(inp, version="v2", **kwargs):
                    n += 1
                return n
            if mode == "codec":  # local, and each event encoded as a publisher does
                n = 0
                async for event in runnable.astream_events(inp, version="v2", **kwargs):
                    n += 1
                    encoder.encode_event(n, time.time(), encoder.to_tree(event))
                return n
            if mode == "nohop":  # astream driven with LangChain's v2 handler, no queue hop
                got = [0]

                class Sink:
                    def start(self, root: str) -> None:
                        pass

                    def event(self, root: str, event: Any) -> None:
                        got[0] += 1

                    def end(self, root: str) -> None:
                        pass

                    def error(self, root: str, error: BaseException) -> None:
                        pass

                handler = ForwardingHandler(Sink())
                rid = uuid.uuid4()
                config = {"callbacks": [handler], "run_id": rid}
                async for _ in handler.tap_output_aiter(
                    rid, runnable.astream(inp, config, **kwargs)
                ):
                    pass
                return got[0]
            pub = pubs[mode]
            before = pub.stats.events
            await pub.run(runnable, inp, config={"run_id": uuid.uuid4()}, **kwargs)
            return int(pub.stats.events - before)

        for mode in modes:  # warm-up: imports, caches, the broker's topology
            await once(mode)
        out: dict[str, Any] = {}
        for mode in modes:
            pub = pubs.get(mode)
            batches = pub.stats.batches if pub is not None else 0
            cg.cg_on()
            events = await once(mode)
            cg.cg_off(mode.encode())
            out[mode] = {"events": events}
            if pub is not None:
                out[mode]["wire_bytes_per_event"] = pub.stats.bytes / max(1, pub.stats.events)
                out[mode]["events_per_batch"] = events / max(1, pub.stats.batches - batches)
        print("result " + json.dumps(out), flush=True)
    finally:
        for pub in pubs.values():
            await pub.aclose()
        for mode, ns in namespaces.items():
            await cleanup(mode, ns)


_HOT = (
    # the compiled codec's outermost frame (its functions have no symbols: the largest
    # non-recursive entry of its module), its own msgspec encodes of typed nodes included
    ("codec walk", re.compile(r"^\?\?\?:0x[0-9a-f]+ \[.*_codec\.cpython[^]]*\.so\]$")),
    # msgspec's Encoder.encode: records and frames (and the codec's typed nodes)
    ("msgspec Encoder.encode", re.compile(r"^\?\?\?:Encoder_encode \[")),
)


def _hot(dump: Path) -> dict[str, int]:
    """Inclusive instructions of the hot C-level functions of a dump (the largest match
    per group: callees are inside it)."""
    try:
        text = subprocess.run(
            ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(dump)],
            capture_output=True,
            text=True,
            timeout=300,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    out: dict[str, int] = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)", line)
        if not m:
            continue
        count, name = int(m.group(1).replace(",", "")), m.group(2)
        for label, pattern in _HOT:
            if pattern.search(name) and count > out.get(label, 0):
                out[label] = count
    return out


def run(workload: str, tokens: int, modes: list[str], timeout: float = 1800) -> dict[str, Any]:
    """Instructions per event of one run of ``workload`` per mode (see the module doc):
    ``{mode: {"events", "instructions", "instructions_per_event", "hot": {...}}}``."""
    root = Path(__file__).resolve().parent.parent
    keep = os.environ.get("EVENTBUS_CALLGRIND_KEEP")  # a directory to keep the dumps in
    with tempfile.TemporaryDirectory(prefix="eventbus-cg-") as tmp:
        where = Path(keep or tmp)
        where.mkdir(parents=True, exist_ok=True)
        shim = _build_shim(where)
        out_file = where / "cg.out"
        env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        proc = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--collect-atstart=no",
                f"--callgrind-out-file={out_file}",
                sys.executable,
                "-m",
                "benchmarks._callgrind",
                workload,
                str(tokens),
                *modes,
                "--shim",
                str(shim),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            cwd=root,
        )
        lines = [x for x in proc.stdout.splitlines() if x.startswith("result ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"callgrind run failed ({proc.returncode}): {proc.stderr[-600:]}")
        result: dict[str, Any] = json.loads(lines[-1][len("result ") :])
        for dump in sorted(where.glob("cg.out.*")):
            text = dump.read_text(errors="replace")
            label = re.search(r"^desc: Trigger: Client Request: (\S+)", text, re.M)
            totals = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
            if not label or not totals or label.group(1) not in result:
                continue
            row = result[label.group(1)]
            row["instructions"] = int(totals.group(1))
            row["instructions_per_event"] = row["instructions"] / max(1, row["events"])
            row["hot"] = {k: v / max(1, row["events"]) for k, v in _hot(dump).items()}
        return result


def main() -> None:
    args = sys.argv[1:]
    shim = args[args.index("--shim") + 1]
    args = args[: args.index("--shim")]
    workload, tokens, *modes = args
    asyncio.run(_child(workload, int(tokens), modes or ["local", "memory"], shim))


if __name__ == "__main__":
    main()
