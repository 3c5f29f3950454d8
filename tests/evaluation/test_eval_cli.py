"""`aelstm evaluate` end to end: the quick N-BaIoT smoke run writes the report, bad input is one clear line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from aelstm.server.cli import main


def test_quick_nbaiot_run_writes_json_markdown_and_figures(shared_datasets, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--dataset", "nbaiot", "--quick", "--quiet",
                                       "--data-root", str(shared_datasets), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "nbaiot.json").read_text())
    assert set(report["skipped"]) == {"svc", "random-forest"}  # no labelled training split in this sample
    assert {"ae-lstm", "ae-only", "lstm-only", "ae-then-lstm", "random"} <= set(report["detectors"])
    joint = report["detectors"]["ae-lstm"]
    assert joint["timing"]["batch_windows"] == 64 and joint["timing"]["ms_per_batch"] > 0
    assert 0.0 <= joint["pooled"]["f1"] <= 1.0 and joint["pooled"]["roc_auc"] is not None
    markdown = (tmp_path / "nbaiot.md").read_text()
    assert "| Joint AE-LSTM (co-trained) |" in markdown and "97.5 / 95.8 / 96.2 / 96.0" in markdown
    assert (tmp_path / "nbaiot_roc_pr.png").stat().st_size > 10_000
    assert (tmp_path / "nbaiot_detection_example.png").stat().st_size > 10_000


def test_missing_data_root_is_one_line_and_exit_1(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--dataset", "skab", "--data-root", str(tmp_path / "nope")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [f"error: datasets folder not found: {tmp_path / 'nope'} "
                                                  "(pass --data-root)"]


def test_unknown_detector_is_rejected(tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--dataset", "skab", "--detectors", "ae-lstm,magic",
                                       "--data-root", str(tmp_path)])
    assert result.exit_code == 1 and "unknown detector(s) ['magic']" in result.output


def test_quick_skab_run_includes_leaderboard_and_sensitivity(shared_datasets, tmp_path):
    result = CliRunner().invoke(main, ["evaluate", "--dataset", "skab", "--quick", "--quiet", "--detectors",
                                       "ae-lstm,zscore", "--data-root", str(shared_datasets), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "skab.json").read_text())
    assert set(report["detectors"]) == {"ae-lstm", "zscore"}
    assert [r["value"] for r in report["sensitivity"]["results"]["hidden"]] == [16, 32, 64, 128]
    assert [r["value"] for r in report["sensitivity"]["results"]["learning_rate"]] == [1e-4, 1e-3, 1e-2]
    markdown = (tmp_path / "skab.md").read_text()
    assert "SKAB target (F1 > 0.78 with FAR ≤ 13.6%)" in markdown and "Conv-AE (leaderboard best)" in markdown
    assert (tmp_path / "skab_sensitivity.png").stat().st_size > 10_000
