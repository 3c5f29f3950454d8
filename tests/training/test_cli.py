import json

import pandas as pd
from click.testing import CliRunner

from aelstm.server.cli import main
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
