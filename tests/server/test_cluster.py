"""Scale-out on a real Ray cluster on this machine (two scoring nodes and a training node): see
`cluster_scenario.py`, run here in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from support import EC2_LATENCY

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def test_two_ingresses_two_nodes_node_loss_and_redeploy(tmp_path, ec2_bundle):
    scenario = Path(__file__).with_name("cluster_scenario.py")
    done = subprocess.run([sys.executable, str(scenario), str(ec2_bundle.path), str(EC2_LATENCY), str(tmp_path)],
                          capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stderr[-4000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(set(figures["placement"].values())) == 2  # a Scorer replica on each scoring node
    loss = figures["node_loss"]
    print(f"\nworker node removed under load: {loss['ok']}/{loss['requests']} OK, "
          f"longest gap without answers {loss['longest_gap_s']} s")
