"""Operator commands that need no cluster: registry list / rollback, deploy settings, the CPU warning."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

import aelstm.server
from aelstm.server import cli
from aelstm.server.config import ScorerSettings, cpu_shortfall
from aelstm.server.registry import publish
from aelstm.server.scoring_app import app as application

EXAMPLE = Path(aelstm.server.__file__).parent / "serve.example.yaml"
SERVE_CONFIG = Path(__file__).parents[2] / "deploy" / "serve_config.yaml"


def invoke(*args: str):
    return CliRunner().invoke(cli.main, [str(a) for a in args])


def test_registry_list_and_rollback(tmp_path, ec2_bundle, machine_bundle):
    publish(ec2_bundle.path, tmp_path, "f")
    publish(machine_bundle.path, tmp_path, "f")
    result = invoke("registry", "rollback", "f", "--registry", tmp_path)
    assert result.exit_code == 0, result.output
    assert "published ec2-latency as fleet f version 3 (sha256 " in result.output
    (tmp_path / "f" / "2").rename(tmp_path / "f" / ".removed")
    lines = invoke("registry", "list", "--registry", tmp_path).output.splitlines()
    states = {line.split()[1]: line.split()[2] for line in lines[1:]}
    assert states == {"3": "served", "2": "deleted", "1": "present"}
    assert lines[1].endswith("rollback of 1")
    missing = invoke("registry", "rollback", "f", "--to", "2", "--registry", tmp_path)
    assert missing.exit_code == 1 and "has no version 2" in missing.output


def test_deploy_reads_the_serve_settings_file_and_flags_win():
    settings = cli.scorer_settings(EXAMPLE, {"replicas": 3, "max_batch": None})
    assert settings == ScorerSettings(replicas=3)


def test_the_ray_serve_config_is_the_same_application():
    """deploy/serve_config.yaml is what `aelstm deploy --dry-run` prints for its settings: one set of names."""
    shipped = yaml.safe_load(SERVE_CONFIG.read_text())
    args = shipped["applications"][0]["args"]
    assert yaml.safe_load(cli.serve_config_yaml(ScorerSettings.from_mapping(args))) == shipped
    application(args)  # the builder `serve deploy` calls accepts them


def test_replicas_beyond_the_cpus_are_named():
    assert cpu_shortfall(ScorerSettings(replicas=2), 2) is None
    message = cpu_shortfall(ScorerSettings(replicas=1, max_replicas=8), 2)
    assert message.startswith("8 Scorer replica(s) at 1 CPU each need 8 CPUs, but only 2 are available")


def test_serve_warns_before_starting_an_embedded_ray_too_small(monkeypatch, tmp_path):
    started = []

    async def fake_serve(config) -> None:
        started.append(config)

    monkeypatch.setattr(cli, "_serve", fake_serve)
    result = invoke("serve", "--registry", tmp_path, "--max-replicas", "4", "--ray-cpus", "2")
    assert result.exit_code == 0 and len(started) == 1
    assert "warning: 4 Scorer replica(s) at 1 CPU each need 4 CPUs" in result.output
    assert "on the embedded Ray (--ray-cpus)" in result.output
