"""`aelstm evaluate` end to end: the quick N-BaIoT smoke run writes the report, bad input is one clear line."""

from __future__ import annotations

import json

from click.testing import CliRunner

from aelstm.cli import main


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
    assert "SKAB target (F1 ≥ 0.8 with FAR ≤ 15%" in markdown and "Conv-AE (leaderboard best)" in markdown
    assert "**Split: held-out.** Settings chosen on the development runs (valve1/*) only" in markdown
    assert report["split"] == "held-out" and not any(c.startswith("valve1/") for c in report["cases"])
    assert "| F1 at shipped threshold | best F1 over thresholds | shipped / best |" in markdown
    assert (tmp_path / "skab_sensitivity.png").stat().st_size > 10_000
    assert (tmp_path / "skab_shipped_vs_best.png").stat().st_size > 10_000


def test_seeds_and_a_selection_file_reach_the_report(shared_datasets, tmp_path):
    chosen = tmp_path / "selection.json"
    chosen.write_text(json.dumps({"chosen": {"policy": "sum | spot:risk=0.01,depth=32", "aelstm": {}}}))
    result = CliRunner().invoke(main, ["evaluate", "--dataset", "skab", "--quick", "--quiet", "--no-sensitivity",
                                       "--detectors", "ae-only,pca", "--seeds", "2", "--settings", str(chosen),
                                       "--data-root", str(shared_datasets), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "skab.json").read_text())
    assert report["settings"]["policy"].startswith("sum | spot:risk=0.01,depth=32")
    assert report["detectors"]["ae-only"]["seeds"] == [0, 1] and report["detectors"]["pca"]["seeds"] == [0]
    summary = report["detectors"]["ae-only"]["summary"]["f1"]
    assert summary["n"] == 2 and summary["sd"] is not None
    assert report["detectors"]["ae-only"]["policy"] == report["settings"]["policy"]


def test_a_file_without_a_chosen_setting_is_one_clear_line(shared_datasets, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    result = CliRunner().invoke(main, ["evaluate", "--dataset", "skab", "--settings", str(bad),
                                       "--data-root", str(shared_datasets)])
    assert result.exit_code == 1 and "not a selection file" in result.output
