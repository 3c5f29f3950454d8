"""Settings and thresholds come from the development half only: the grid, the choice, and the runner's use of it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aelstm.training.nab.corpus import load_corpus
from aelstm.training.nab.selection import GRID, PATCHES, Setting, declared_grid, develop
from benchmarks.nab import run


def test_the_declared_grid_in_tie_breaking_order() -> None:
    grid = declared_grid(with_patch=False)
    assert len(grid) == np.prod([len(values) for values in GRID.values()]) == len(set(grid))
    assert grid[0] == Setting(short=1, long=None, refractory=0, fine_tune=False, patch=None)
    with_patch = declared_grid(with_patch=True)
    assert len(with_patch) == len(grid) * len(PATCHES) and {s.patch for s in with_patch} == set(PATCHES)


def _development(tiny_nab: Path) -> tuple[str, ...]:
    return tuple(json.loads((tiny_nab / "split.json").read_text())["development"])


def test_develop_scores_only_the_files_it_is_given_and_keeps_the_first_best(tiny_nab: Path) -> None:
    files = load_corpus(tiny_nab, list(_development(tiny_nab)))
    seen = []

    def scores_of(candidate: float, given) -> list[np.ndarray]:
        seen.append(tuple(nab.key for nab in given))
        return [np.where(nab.labels == 1, candidate, 0.0) for nab in given]  # fires on every window row

    choice = develop(files, [0.0, 0.5, 0.7], scores_of)
    assert set(seen) == {_development(tiny_nab)}
    assert choice.chosen.candidate == 0.5  # 0.5 and 0.7 both hit every window first: the earlier one wins
    assert choice.chosen.score == pytest.approx(100.0) and choice.candidates[0].score == pytest.approx(0.0)
    assert choice.chosen.thresholds == {"standard": 0.5, "reward_low_FP_rate": 0.5, "reward_low_FN_rate": 0.5}


def test_the_runner_chooses_on_development_files_and_reports_held_out_at_those_thresholds(
    tiny_nab: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def recording(files, candidates, scores_of):
        calls.append(tuple(nab.key for nab in files))
        return develop(files, candidates, scores_of)

    monkeypatch.setattr(run, "develop", recording)
    monkeypatch.setattr(run, "NAB_TRAIN", {"window": 10, "hidden": 8, "latent": 2, "epochs": 2, "patience": 1})
    out = tmp_path / "out"
    args = ["--modes", "ae-lstm,zscore", "--seeds", "0", "--jobs", "1", "--data", str(tiny_nab),
            "--split", str(tiny_nab / "split.json"), "--out", str(out), "--cache", str(tmp_path / "cache")]
    assert run.main(args) == 0
    assert calls and set(calls) == {_development(tiny_nab)}  # the grid search and every detector's thresholds
    summary = json.loads((out / "summary.json").read_text())
    assert Setting(**summary["selection"]["chosen"]) in declared_grid(with_patch=run.patch_supported())
    for entry in summary["detectors"].values():
        chosen = entry["thresholds_from_development"]
        assert chosen == {name: result["threshold"] for name, result in entry["development"].items()}
        assert {name: result["threshold"] for name, result in entry["held_out"]["at_threshold"].items()} == chosen
    assert (out / "summary.png").stat().st_size > 0 and "held-out" in (out / "summary.md").read_text()
    assert pd.read_csv(out / "zscore" / "catA" / "zscore_a0.csv")["anomaly_score"].between(0, 1).all()
