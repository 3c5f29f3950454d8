import json

import numpy as np
import pandas as pd
from click.testing import CliRunner

from aelstm.cli import main
from support import EC2_LATENCY


def test_train_score_info_round_trip(tmp_path):
    runner = CliRunner()
    bundle = tmp_path / "bundle"
    trained = runner.invoke(
        main,
        [
            "train", str(EC2_LATENCY), "--dataset", "nab", "--until-first-anomaly", "-o", str(bundle),
            "--window", "16", "--hidden", "8", "--latent", "2", "--epochs", "2", "--quiet", "--name", "ec2",
        ],
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    assert "threshold" in trained.output and (bundle / "model.onnx").is_file()

    info = runner.invoke(main, ["info", str(bundle)])
    assert json.loads(info.output)["model"]["name"] == "ec2"

    scores_csv = tmp_path / "scores.csv"
    scored = runner.invoke(main, ["score", str(bundle), str(EC2_LATENCY), "--dataset", "nab", "-o", str(scores_csv)])
    assert scored.exit_code == 0, scored.output
    table = pd.read_csv(scores_csv)
    assert len(table) == 4032 - 15
    assert {"timestamp", "score", "rec_part", "pred_part", "threshold", "is_anomaly", "label"} <= set(table.columns)
    assert "labelled events flagged" in scored.output


def test_bad_inputs_give_one_line_errors(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["train", str(tmp_path / "nope.csv"), "-o", str(tmp_path / "b")])
    assert missing.exit_code == 1
    assert missing.output.strip().startswith("error:") and "Traceback" not in missing.output
    assert len(missing.output.strip().splitlines()) == 1

    not_a_bundle = runner.invoke(main, ["info", str(tmp_path)])
    assert not_a_bundle.exit_code == 1 and "manifest.json is missing" in not_a_bundle.output

    bad_option = runner.invoke(main, ["train", str(EC2_LATENCY), "-o", str(tmp_path / "b"), "--window", "x"])
    assert bad_option.exit_code == 2 and "--window" in bad_option.output


def test_every_command_has_help():
    runner = CliRunner()
    for command in main.commands:
        result = runner.invoke(main, [command, "--help"])
        assert result.exit_code == 0 and "Usage:" in result.output


def _plant_csv(path, labelled: bool):
    """A pandas-style CSV: an unnamed row index, one sensor, and (optionally) an `anomaly` column with one event."""
    t = np.arange(600)
    frame = pd.DataFrame({"temp": np.sin(2 * np.pi * t / 24)})
    if labelled:
        frame["anomaly"] = ((t >= 500) & (t < 520)).astype(int)
    frame.to_csv(path)
    return path


SMALL = ["--window", "12", "--hidden", "8", "--latent", "2", "--epochs", "1", "--quiet"]


def test_csv_defaults_leave_out_index_and_labels_and_train_on_the_normal_part(tmp_path):
    runner = CliRunner()
    data = _plant_csv(tmp_path / "plant.csv", labelled=True)
    trained = runner.invoke(main, ["train", str(data), "-o", str(tmp_path / "b"), "--patch", "3", *SMALL])
    assert trained.exit_code == 0, trained.output
    assert trained.stderr.splitlines()[:3] == [
        "note: plant.csv: labels from column 'anomaly'; not used as features: 'Unnamed: 0' (label-named or row-index "
        "columns; name them in --features to use them)",
        "features (1): temp",
        "training on 500 of 600 rows: every row before the first labelled anomaly",
    ]
    assert "on rows 0–499 × features [temp]: 1 epochs" in trained.stdout
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["architecture"]["patch"] == 3 and manifest["training"]["rows"] == 500
    assert manifest["training"]["stopped_early"] is False and manifest["training"]["epochs_run"] == 1

    scored = runner.invoke(main, ["score", str(tmp_path / "b"), str(data), "-o", str(tmp_path / "s.csv")])
    assert scored.exit_code == 0, scored.output
    assert "features (1): temp" in scored.stderr and "labelled events flagged" in scored.stderr
    assert pd.read_csv(tmp_path / "s.csv")["label"].sum() == 20


def test_an_unlabelled_csv_trains_on_the_whole_file_and_a_fraction_still_works(tmp_path):
    runner = CliRunner()
    data = _plant_csv(tmp_path / "plant.csv", labelled=False)
    whole = runner.invoke(main, ["train", str(data), "-o", str(tmp_path / "b"), *SMALL])
    assert whole.exit_code == 0, whole.output
    assert "training on 600 of 600 rows: the whole file (it has no labelled anomalies)" in whole.stderr
    part = runner.invoke(main, ["train", str(data), "-o", str(tmp_path / "c"), "--train-fraction", "0.5", *SMALL])
    assert "training on 300 of 600 rows: the first 50% of the file" in part.stderr
    refused = runner.invoke(main, ["train", str(data), "-o", str(tmp_path / "d"), "--until-first-anomaly", *SMALL])
    assert refused.exit_code == 1 and "needs labels" in refused.output


def test_scoring_a_file_without_the_models_features_is_refused_naming_them(tmp_path):
    runner = CliRunner()
    data = _plant_csv(tmp_path / "plant.csv", labelled=False)
    assert runner.invoke(main, ["train", str(data), "-o", str(tmp_path / "b"), *SMALL]).exit_code == 0
    other = tmp_path / "other.csv"
    pd.DataFrame({"pressure": np.ones(50)}).to_csv(other, index=False)
    scored = runner.invoke(main, ["score", str(tmp_path / "b"), str(other)])
    assert scored.exit_code == 1
    assert "missing column(s) ['temp'] of the features ['temp']" in scored.output


def test_a_window_no_longer_than_the_patch_is_a_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["train", str(EC2_LATENCY), "-o", str(tmp_path / "b"), "--window", "4",
                                       "--patch", "4"])
    assert result.exit_code == 1 and "window 4 is too short for patch 4" in result.output


def test_the_epoch_windows_option_defaults_to_the_configuration_and_zero_means_every_window():
    from aelstm.training.cli import train_config

    assert train_config("db4", 1, False).epoch_windows == 4096  # the configuration's default
    assert train_config("db4", 1, False, epoch_windows=0).epoch_windows is None
    assert train_config("db4", 1, False, epoch_windows=512).epoch_windows == 512
