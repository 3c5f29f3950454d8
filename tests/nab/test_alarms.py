"""The shipped-alarms benchmark: a served-style model per file, every calibrator's binary alarms scored by NAB,
the calibrator chosen on the development half only."""

from __future__ import annotations

import json

import numpy as np

from aelstm.training.detectors.base import Calibrator
from aelstm.training.nab.corpus import load_corpus
from benchmarks.nab import alarms


def test_alarms_are_binary_quiet_in_probation_and_aligned_to_window_ends(tiny_nab):
    nab = load_corpus(tiny_nab / "data" / "..")[0]
    scores = np.zeros(len(nab.values) - 15)
    scores[[10, nab.probation + 5, len(scores) - 1]] = 100.0
    flags = alarms.alarms(nab, scores, np.random.default_rng(0).exponential(size=200), Calibrator("pot", 1e-3, 0))
    assert set(np.unique(flags)) <= {0.0, 1.0}
    assert flags[: nab.probation].sum() == 0
    assert np.flatnonzero(flags).tolist() == [15 + nab.probation + 5, len(nab.values) - 1]


def test_the_development_half_chooses_and_both_halves_are_reported(tiny_nab, tmp_path, monkeypatch):
    seen = []
    original = alarms.judge

    def judge(files, *rest):
        seen.append([f.key for f in files])
        return original(files, *rest)

    monkeypatch.setattr(alarms, "judge", judge)
    out = tmp_path / "out"
    assert alarms.main(["--data", str(tiny_nab), "--split", str(tiny_nab / "split.json"), "--out", str(out),
                        "--jobs", "1"]) == 0
    result = json.loads((out / "alarms.json").read_text())
    assert seen[0] == ["catA/a0.csv", "catB/b0.csv"]  # the choice sees development files only
    best = max(row["profiles"]["standard"]["score"] for row in result["development"])
    chosen = next(row for row in result["development"] if row["label"] == result["chosen"])
    assert chosen["profiles"]["standard"]["score"] == best
    assert len(result["held_out"]) == len(result["development"]) and (out / "alarms.md").is_file()
