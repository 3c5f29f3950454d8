"""The settings selection reads SKAB's development runs only, and its grid spans the threshold methods, risks,
drift depths and the AE-LSTM patch."""

from __future__ import annotations

import json
import subprocess
import sys

from evaluation.test_eval_protocols import write_skab

from aelstm.training.evaluation.selection import aelstm_variants, policies
from support import REPO


def test_the_grid_spans_methods_depths_risks_and_patch():
    grid = [policy.threshold_rule for policy in policies()]
    assert {(r.kind, getattr(r, "depth", 0)) for r in grid} >= {("pot", 0), ("spot", 0), ("spot", 128)}
    assert {r.risk for r in grid} >= {1e-3, 1e-2}
    assert aelstm_variants() == [{"patch": p, "score_steps": k, "error_score": e} for p in (1, 4) for k in (1, 8)
                                 for e in ("pooled", "standardised", "feature-max")]


def test_selection_never_opens_a_held_out_run(tmp_path):
    """Held-out runs are replaced by unreadable files: the selection must still run, on valve1 runs only."""
    write_skab(tmp_path)
    for held_out in ("valve2", "other"):
        for path in (tmp_path / "skab" / "data" / held_out).glob("*.csv"):
            path.write_text("not a csv\n")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "benchmarks.quality.select", "--dataset", "skab", "--quick",
                           "--epochs", "1", "--quiet", "--data-root", str(tmp_path), "-o", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    selection = json.loads((out / "selection-skab.json").read_text())
    assert selection["cases"] and all(c.startswith("valve1/") for c in selection["cases"])
    assert {r["detector"] for r in selection["grid"]} == {"ae-lstm", "pca", "isolation-forest"}
    assert selection["chosen"]["policy"] in [r["policy"] for r in selection["grid"]]
    assert "valve2, other" in (out / "selection-skab.md").read_text()
