"""Paths shared by the tests (importable as `support`: tests/ is on pytest's pythonpath)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"
NAB_FIXTURE = FIXTURES / "nab" / "data" / "realKnownCause"
MACHINE_TEMPERATURE = NAB_FIXTURE / "machine_temperature_system_failure.csv"
EC2_LATENCY = NAB_FIXTURE / "ec2_request_latency_system_failure.csv"
SHARED_DATASETS = REPO.parent / "shared" / "datasets"
