"""Paths shared by the tests (importable as `support`: tests/ is on pytest's pythonpath)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
NAB_FIXTURE = FIXTURES / "nab" / "data" / "realKnownCause"
MACHINE_TEMPERATURE = NAB_FIXTURE / "machine_temperature_system_failure.csv"
EC2_LATENCY = NAB_FIXTURE / "ec2_request_latency_system_failure.csv"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
# Top folders that are packages (each is one `aelstm.<name>`): found, so a new one is checked without editing a test.
PACKAGE_FOLDERS = sorted(folder.name for folder in REPO.iterdir() if (folder / "__init__.py").is_file())


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python -m module args` from the repository root, as a user runs a benchmark (output captured)."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
