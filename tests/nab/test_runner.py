"""The NAB runner end to end on a tiny synthetic corpus: NAB results layout, summary, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from support import REPO


def _tiny_corpus(root: Path) -> None:
    rng = np.random.default_rng(0)
    windows = {}
    for category, name, spike in (("catA", "one.csv", 700), ("catB", "two.csv", None)):
        stamps = pd.date_range("2020-01-01", periods=1000, freq="5min")
        values = rng.normal(size=1000)
        if spike is not None:
            values[spike] += 30.0
        (root / "data" / category).mkdir(parents=True)
        pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": values}).to_csv(
            root / "data" / category / name, index=False
        )
        windows[f"{category}/{name}"] = (
            [[str(stamps[spike - 20]), str(stamps[spike + 20])]] if spike is not None else []
        )
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))


def _run(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmarks.nab.run", *args]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_runner_writes_nab_layout_and_summary(tmp_path: Path) -> None:
    _tiny_corpus(tmp_path / "nab")
    out = tmp_path / "results"
    done = _run("--detectors", "zscore", "--data", str(tmp_path / "nab"), "--out", str(out), "--jobs", "1")
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out / "zscore" / "catA" / "zscore_one.csv")
    assert list(frame.columns) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(frame) == 1000 and frame["label"].sum() == 41
    assert frame["anomaly_score"].between(0, 1).all()
    summary = json.loads((out / "summary.json").read_text())
    standard = summary["detectors"]["zscore"]["optimised"]["standard"]
    assert standard["tp"] == 1 and standard["score"] > 50  # a 30σ spike in the window's first half
    assert "| **zscore** (ours)" in (out / "summary.md").read_text()


def test_runner_bad_arguments_give_one_line(tmp_path: Path) -> None:
    done = _run("--detectors", "nope", "--data", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "unknown detector" in done.stderr
    done = _run("--detectors", "zscore", "--data", str(tmp_path / "missing"))
    assert done.returncode == 2 and "no NAB labels" in done.stderr
