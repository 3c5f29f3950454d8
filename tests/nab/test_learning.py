"""NAB with the server's retraining loop, as a command on a tiny corpus: the loop runs between segments, retrained
versions are published and served, and the report holds both modes side by side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aelstm.core.policy import Policy
from support import run_module

pytestmark = pytest.mark.integration

POLICY = "sum | spot:risk=0.0001,depth=128"


def _run(*args: str):
    return run_module("benchmarks.nab.learning", *args)


def test_learning_benchmark_retrains_between_segments_and_reports_both_modes(tiny_nab: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    done = _run("--data", str(tiny_nab), "--split", str(tiny_nab / "split.json"), "--out", str(out),
                "--cache", str(tmp_path / "cache"), "--seeds", "0", "--jobs", "1", "--policy", POLICY,
                "--cadences", "400")
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "learning.json").read_text())
    assert summary["chosen_every"] == 400 and summary["policy"] == Policy.parse(POLICY).spec
    (row,) = summary["development_grid"]
    # 865 scored rows per file: segments of 400, 400, 65, so two runs of the loop on each half
    assert row["retraining"]["runs"] == 2 and row["retraining"]["failed"] == 0
    (run,) = summary["runs"]
    retraining = run["retraining"]
    assert retraining["runs"] == 4 and retraining["failed"] == 0
    # every fleet's turn after both segments ends somewhere: a fleet with too few normal readings is skipped
    assert retraining["published"] + retraining["kept aside"] + retraining["skipped"] == 8
    assert retraining["published"] >= 4
    assert run["with_learning"]["held_out"]["standard"]["tp"] == 1  # the held-out spike is still found
    assert run["without_learning"]["held_out"]["standard"]["tp"] == 1
    report = (out / "learning.md").read_text()
    assert "← chosen" in report and "every 400 readings" in report


def test_a_cadence_too_short_to_retrain_on_is_one_line(tiny_nab: Path, tmp_path: Path) -> None:
    done = _run("--data", str(tiny_nab), "--split", str(tiny_nab / "split.json"), "--out", str(tmp_path),
                "--policy", POLICY, "--cadences", "10")
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "cadence" in done.stderr
