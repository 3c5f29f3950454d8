"""The deployment artefacts in deploy/ agree with the code and pass the checks this machine can run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from support import PACKAGE_FOLDERS, REPO

DEPLOY = REPO / "deploy"


def test_the_rayservice_runs_exactly_the_serve_config():
    service = yaml.safe_load((DEPLOY / "rayservice.yaml").read_text())
    assert (service["apiVersion"], service["kind"]) == ("ray.io/v1", "RayService")
    shipped = yaml.safe_load((DEPLOY / "serve_config.yaml").read_text())
    assert yaml.safe_load(service["spec"]["serveConfigV2"]) == shipped


def test_the_image_installs_what_the_wheel_needs():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    copied = {source for line in dockerfile.splitlines() if line.startswith("COPY ") for source in line.split()[1:-1]}
    assert {"cli", "core", "training", "server", "client"} <= set(PACKAGE_FOLDERS)
    assert {"pyproject.toml", "setup.py", "protos", *PACKAGE_FOLDERS} <= copied
    assert 'pip install --no-cache-dir ".[cpu]"' in dockerfile


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed")
def test_the_systemd_unit_verifies(tmp_path):
    unit = (DEPLOY / "aelstm-ingress.service").read_text()
    here = Path(sys.executable).with_name("aelstm")  # the unit's binary, as installed here
    (tmp_path / "aelstm-ingress.service").write_text(unit.replace("/opt/aelstm/.venv/bin/aelstm", str(here)))
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "aelstm-ingress.service")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
