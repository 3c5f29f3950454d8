"""The README's cluster walk, scripted (`scripts/cluster_walk.sh`): three `ray start` nodes (two that score, a
training node) with token authentication, deploy, fleets fitted on the training node, two ingresses, publish,
rollback, a re-deploy under load, undeploy, no process left running and nothing left in the temp dir. About two
minutes on two cores; AELSTM_CLUSTER_WALK=0 leaves it out of a quick local run."""

from __future__ import annotations

import os
import subprocess

import pytest

from support import REPO

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900),
              pytest.mark.skipif(os.environ.get("AELSTM_CLUSTER_WALK") == "0",
                                 reason="AELSTM_CLUSTER_WALK=0: the README's cluster walk (~3 min) left out")]


def test_the_readme_cluster_walk():
    done = subprocess.run(["bash", str(REPO / "scripts" / "cluster_walk.sh")], capture_output=True, text=True,
                          timeout=840)
    if done.returncode == 3:  # `ray start` itself failed three times: the host, not aelstm; its log says why
        pytest.skip(f"ray start could not start a node on this host: {done.stderr[-1500:]}")
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    assert "cluster walk: every step passed" in done.stdout
