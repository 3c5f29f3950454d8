"""The served-alarms NAB benchmark as a command on a tiny corpus: a real in-process server, NAB's results layout,
the served alarms equal to the policy run offline, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from support import run_module

pytestmark = pytest.mark.integration


def _run(*args: str):
    return run_module("benchmarks.nab.served", *args)


def test_served_benchmark_writes_nab_layout_and_summary(tiny_nab: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = _run("--data", str(tiny_nab), "--split", str(tiny_nab / "split.json"), "--out", str(out),
                "--cache", str(tmp_path / "cache"), "--seeds", "0", "--jobs", "1")
    assert done.returncode == 0, done.stderr
    frame = pd.read_csv(out / "aelstm-served" / "catA" / "aelstm-served_a1.csv")
    assert list(frame.columns) == ["timestamp", "value", "anomaly_score", "label"]
    assert len(frame) == 1000 and frame["label"].sum() == 41
    assert set(frame["anomaly_score"].unique()) <= {0.0, 1.0} and frame["anomaly_score"][:150].eq(0).all()
    summary = json.loads((out / "served.json").read_text())
    (run,) = summary["runs"]
    assert run["files_where_served_differs_from_offline"] == []
    assert run["rows_judged"] == 4 * (1000 - 150)  # every row from the end of the probation on, on every file
    assert run["held_out"]["standard"]["tp"] == 1  # the 30σ spike of the held-out half is found
    assert summary["chosen"] in {row["policy"] for row in summary["development_grid"]}
    assert "← chosen" in (out / "served.md").read_text()
    assert "**held-out**" in (out / "served.md").read_text() and (out / "served.png").is_file()


def test_bad_arguments_give_one_line(tmp_path: Path) -> None:
    done = _run("--data", str(tmp_path / "missing"))
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "no NAB labels" in done.stderr
