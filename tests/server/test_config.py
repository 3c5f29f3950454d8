"""`aelstm serve` settings: defaults < YAML file < flags, and clear one-line errors."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from aelstm.cli import main
from aelstm.core.errors import AelstmError
from aelstm.server.config import ServeConfig, load_config


def test_flags_override_the_file_which_overrides_defaults(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text("port: 6000\nmax-batch: 128\nbackend: inprocess\ntokens: [a, b]\n")
    config = load_config(path, {"port": 7000, "replicas": None})
    assert (config.port, config.max_batch, config.backend, config.tokens) == (7000, 128, "inprocess", ("a", "b"))
    assert config.replicas == ServeConfig().replicas
    scorer = config.scorer()
    assert (scorer.max_batch, scorer.replica_batch_wait_ms, config.backend_calls()) == (128, 0.0, 1)
    assert (config.call_gap_s(), config.batch_wait_s()) == (0.0, 0.002)


@pytest.mark.parametrize(("text", "message"), [
    ("replicas: 0\n", "replicas must be ≥ 1"),
    ("backend: spark\n", "backend must be one of"),
    ("colour: blue\n", "unknown setting 'colour'"),
    ("- a list\n", "must be a mapping"),
    ("port: [\n", "not valid YAML"),
    ("tls-cert: c.pem\n", "TLS needs both"),
    ("replicas: 3\nmax-replicas: 2\n", "below replicas"),
    ("max-batch: many\n", "invalid serve settings"),
    ("ray-temp-dir: /no/such/folder\n", "not an existing folder"),
    ("retrain-on-drift: 5\n", "retrain-on-drift retrains on recorded readings: it needs record-dir"),
    ("retrain-on-drift: 0.5\nrecord-dir: rec\n", "retrain-on-drift must be ≥ 1, got 0.5"),
    ("retrain-fit-resource: training\n", "retrain-fit-resource places retraining fits on a Ray cluster's nodes: "
                                         "it needs ray-address"),
])
def test_bad_settings_are_refused_with_a_clear_message(tmp_path, text, message):
    path = tmp_path / "serve.yaml"
    path.write_text(text)
    with pytest.raises(AelstmError, match=message):
        load_config(path, {})


def test_a_ray_temp_dir_too_long_for_rays_socket_paths_is_refused(tmp_path):
    deep = tmp_path / ("d" * 40)
    deep.mkdir()
    with pytest.raises(AelstmError, match="socket paths under it would pass 107 bytes"):
        ServeConfig(ray_temp_dir=str(deep))
    assert ServeConfig(ray_temp_dir="/tmp").ray_temp_dir == "/tmp"


def test_cli_reports_bad_settings_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["serve", "--config", str(tmp_path / "absent.yaml")])
    assert result.exit_code == 1
    assert result.output.startswith("error: cannot read config") and "Traceback" not in result.output


def test_publish_command(tmp_path, ec2_bundle):
    runner = CliRunner()
    result = runner.invoke(main, ["publish", str(ec2_bundle.path), "--fleet", "f", "--registry", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "fleet f version 1" in result.output
    result = runner.invoke(main, ["publish", str(tmp_path / "nope"), "--fleet", "f", "--registry", str(tmp_path)])
    assert result.exit_code == 1 and result.output.startswith("error: bundle")


def test_the_example_config_holds_the_defaults():
    from pathlib import Path

    import aelstm.server

    example = Path(aelstm.server.__file__).parent / "serve.example.yaml"
    assert load_config(example, {}) == ServeConfig()


def test_the_example_config_names_every_setting():
    from pathlib import Path

    import yaml

    import aelstm.server

    example = yaml.safe_load((Path(aelstm.server.__file__).parent / "serve.example.yaml").read_text())
    assert {key.replace("-", "_") for key in example} == ServeConfig.names()


def test_every_setting_is_a_flag_with_its_declared_default():
    from dataclasses import fields

    from aelstm.server.config import shown_default

    help_text = " ".join(CliRunner().invoke(main, ["serve", "--help"], terminal_width=400).output.split())
    for spec in fields(ServeConfig):
        flag = spec.metadata.get("flag") or f"--{spec.name.replace('_', '-')}"
        assert flag in help_text
        assert f"[default: {shown_default(spec)}]" in help_text


def test_the_serve_deploy_config_builds_the_scoring_application():
    import importlib

    import yaml
    from ray.serve import Application

    from support import REPO

    config = yaml.safe_load((REPO / "deploy" / "serve_config.yaml").read_text())
    (application,) = config["applications"]
    assert application["name"] == "aelstm" and application["route_prefix"] is None
    module, attribute = application["import_path"].split(":")
    built = getattr(importlib.import_module(module), attribute)(application["args"])
    assert isinstance(built, Application)


def test_scorer_settings_refuse_unknown_and_bad_arguments():
    from aelstm.server.scoring_app import app

    with pytest.raises(AelstmError, match="unknown setting 'replica'"):
        app({"replica": 2})
    with pytest.raises(AelstmError, match="replicas must be ≥ 1"):
        app({"replicas": 0})
