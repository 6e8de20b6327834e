"""Smoke test of the benchmark suite: the codec scenario runs and writes sane results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
def test_codec_quick_writes_positive_rows(tmp_path: Path) -> None:
    # into a scratch directory: the committed results are the last full run's
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "codec", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
        env={**os.environ, "EVENTBUS_BENCH_RESULTS": str(tmp_path)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "## codec" in proc.stdout
    doc = json.loads((tmp_path / "codec.json").read_text())
    assert doc["quick"] is True
    assert doc["machine"]["cores"]
    rows = doc["results"]
    assert {r["event"] for r in rows} == {
        "token",
        "prompt_end",
        "custom",
        "token, packed x250, kept alive",
    }
    # the targets are judged in the code, on the worst repetition
    (encode,) = [r for r in rows if r["event"] == "token" and r["codec"] == "eventbus msgpack"]
    assert encode["targets"][0]["what"] == "encode"
    assert encode["targets"][0]["met"] == (encode["encode_worst_us"] <= 5.0)
    assert any(r["codec"] == "eventbus msgpack" for r in rows)
    for row in rows:
        assert not row.get("error"), row
        assert row["encode_us"] > 0, row
        assert row["decode_us"] > 0, row
        assert row["bytes"] > 0, row


def test_readme_figures_are_the_committed_results() -> None:
    """The README's performance block is what ``--write-md`` renders from the committed
    result files: no figure in it that the current tables do not contain."""
    from benchmarks import _readme

    docs = _readme.load(ROOT / "benchmarks" / "results")
    assert {"publish", "latency", "codec", "consume", "overhead"} <= set(docs), (
        "result files missing: run `python -m benchmarks --write-md` and commit them"
    )
    readme = (ROOT / "README.md").read_text()
    start, end = readme.index(_readme.BEGIN), readme.index(_readme.END) + len(_readme.END)
    assert readme[start:end] == _readme.render(docs)
    # and BENCHMARKS.md is generated from the same runs
    benchmarks_md = (ROOT / "BENCHMARKS.md").read_text()
    for name, doc in docs.items():
        assert f"_Run {doc['started']}, {doc['seconds']} s" in benchmarks_md, name
