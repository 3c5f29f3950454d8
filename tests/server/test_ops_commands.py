"""Operator commands that need no cluster: registry list / rollback, deploy settings, the CPU warning."""

from __future__ import annotations

from pathlib import Path

import yaml
from click.testing import CliRunner

import aelstm.server
from aelstm.cli import main
from aelstm.server import cli
from aelstm.server.config import ScorerSettings, cpu_shortfall
from aelstm.server.registry import publish
from aelstm.server.scoring_app import app as application

EXAMPLE = Path(aelstm.server.__file__).parent / "serve.example.yaml"
SERVE_CONFIG = Path(__file__).parents[2] / "deploy" / "serve_config.yaml"


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


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
    """deploy/serve_config.yaml is what `aelstm deploy --replicas 2 --max-replicas 8 --dry-run` prints: one set of
    names, and the one config both deploy."""
    shipped = yaml.safe_load(SERVE_CONFIG.read_text())
    assert yaml.safe_load(cli.serve_config_yaml(ScorerSettings(replicas=2, max_replicas=8))) == shipped
    application(shipped["applications"][0]["args"])  # the builder `serve deploy` calls accepts them


def test_only_what_new_replicas_need_is_the_application_code():
    """Ray Serve takes a change of an application's `args` as new code and replaces every replica: batching,
    threads and replica counts must stay out of them, so that changing those restarts nothing."""
    def application(**settings) -> dict:
        return yaml.safe_load(cli.serve_config_yaml(ScorerSettings(**settings)))["applications"][0]

    base = application(replicas=2, max_replicas=4)
    for change in ({"max_batch": 64}, {"replica_batch_wait_ms": 2.0}, {"threads_per_replica": 2}, {"replicas": 3},
                   {"max_replicas": 6}, {"target_ongoing_requests": 3.0}):
        changed = application(**{"replicas": 2, "max_replicas": 4, **change})
        assert changed["args"] == base["args"], change
        assert changed["deployments"] != base["deployments"], change
    assert application(threads_per_replica=2, max_batch=64)["deployments"][0]["user_config"] == {
        "max_batch": 64, "replica_batch_wait_ms": 0.0, "threads_per_replica": 2}
    assert application(replicas=2, max_replicas=4, cpus_per_replica=2.0)["args"] != base["args"]


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


def cluster_steps() -> list[list[str]]:
    """The commands of the README's cluster walk, as argument lists (comments and placeholders kept as words)."""
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### On a Ray cluster\n", 1)[1].split("\n## ", 1)[0]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.split("#", 1)[0].split() for line in block.splitlines() if line.split("#", 1)[0].strip()]


def test_every_aelstm_command_of_the_cluster_walk_exists_with_its_options():
    steps = [step for step in cluster_steps() if step[0] == "aelstm"]
    assert {step[1] for step in steps} >= {"deploy", "publish", "serve", "registry", "undeploy"}
    for step in steps:
        words = [w for w in step[1:] if not w.startswith("-")][:2]
        command = words if words[0] == "registry" else words[:1]
        help_text = invoke(*command, "--help").output
        assert "Usage:" in help_text, step
        for option in (w for w in step if w.startswith("--")):
            assert option in help_text, (step, option)


def test_the_cluster_walk_uses_only_commands_the_installed_ray_has():
    """Ray's own CLI (`ray`, `serve`) as installed: e.g. `serve delete` does not exist in Ray 2.60."""
    import subprocess
    import sys

    options: dict[tuple[str, str], set[str]] = {}  # each command once: Ray's CLI takes seconds to start
    for step in (s for s in cluster_steps() if s[0] in ("ray", "serve")):
        options.setdefault((step[0], step[1]), set()).update(w for w in step if w.startswith("--"))
    bin_dir = Path(sys.executable).parent
    for (program, command), flags in options.items():
        done = subprocess.run([str(bin_dir / program), command, "--help"], capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, (program, command, done.stderr[-500:])
        assert {flag for flag in flags if flag not in done.stdout} == set(), (program, command)
