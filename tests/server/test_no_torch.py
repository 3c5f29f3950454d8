"""The serving path needs only the ONNX bundle: importing it must never pull in torch."""

from __future__ import annotations

import subprocess
import sys

SERVING_MODULES = ("aelstm.server.app", "aelstm.server.cli", "aelstm.server.ray_backend", "aelstm.server.service",
                   "aelstm.server.registry", "aelstm.server.backend", "aelstm.core.runtime")


def test_serving_modules_do_not_import_torch():
    code = (f"import sys\nfor name in {SERVING_MODULES!r}:\n    __import__(name)\n"
            "from aelstm.cli import main\n"
            "assert 'aelstm.server.app' in sys.modules\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_serving_path_builds_on_the_core_not_on_training():
    code = (f"import sys\nfor name in {SERVING_MODULES!r}:\n    __import__(name)\n"
            "print(sorted(m for m in sys.modules if m.startswith('aelstm.training')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_the_fleet_job_driver_plans_and_settles_without_torch():
    """Only a fit imports torch: the process that reads the fleets, submits their fits to Ray, gates and publishes
    (or plans a retraining) never spends seconds of CPU importing it beside the fits."""
    code = ("import sys\nimport aelstm.training.fleet_training, aelstm.training.retrain, aelstm.training.config\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
