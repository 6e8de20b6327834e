"""Smoke test of the benchmark suite: the codec scenario runs and writes sane results."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "benchmarks" / "results" / "codec.json"


@pytest.mark.timeout(180)
def test_codec_quick_writes_positive_rows() -> None:
    before = RESULT.stat().st_mtime if RESULT.exists() else 0.0
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "codec", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "## codec" in proc.stdout
    assert RESULT.stat().st_mtime > before
    doc = json.loads(RESULT.read_text())
    assert doc["quick"] is True
    assert doc["machine"]["cores"]
    rows = doc["results"]
    assert {r["event"] for r in rows} == {"token", "prompt_end", "custom"}
    assert any(r["codec"] == "eventbus msgpack" for r in rows)
    for row in rows:
        assert not row.get("error"), row
        assert row["encode_us"] > 0, row
        assert row["decode_us"] > 0, row
        assert row["bytes"] > 0, row
