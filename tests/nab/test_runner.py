"""The NAB runner as a command on a tiny corpus: NAB results layout, summary files, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

from support import REPO


def _run(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmarks.nab.run", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_runner_writes_nab_layout_and_summary(tiny_nab: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = _run("--modes", "zscore", "--data", str(tiny_nab), "--split", str(tiny_nab / "split.json"),
                "--out", str(out), "--jobs", "1")
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out / "zscore" / "catA" / "zscore_a0.csv")
    assert list(frame.columns) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(frame) == 1000 and frame["label"].sum() == 41
    assert frame["anomaly_score"].between(0, 1).all()
    summary = json.loads((out / "summary.json").read_text())
    held_out = summary["detectors"]["zscore"]["held_out"]["at_threshold"]["standard"]
    assert held_out["tp"] == 1 and held_out["score"] > 50  # a 30σ spike early in the held-out window
    assert summary["split"]["held_out"] == {"files": 2, "windows": 1}
    assert "| zscore |" in (out / "summary.md").read_text()


def test_runner_bad_arguments_give_one_line(tmp_path: Path) -> None:
    done = _run("--modes", "nope", "--data", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "unknown detector" in done.stderr
    done = _run("--modes", "zscore", "--data", str(tmp_path / "missing"))
    assert done.returncode == 2 and "no NAB labels" in done.stderr
