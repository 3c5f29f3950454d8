"""The ingress's own metrics registry carries the process metrics operators expect beside aelstm's."""

from __future__ import annotations

import sys

import pytest

from aelstm.server.metrics import Metrics


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process metrics are read from /proc")
def test_the_registry_reports_the_process_memory_cpu_and_file_descriptors():
    sample = Metrics().registry.get_sample_value
    assert sample("process_resident_memory_bytes") > 10_000_000  # a Python process with numpy and grpc loaded
    assert sample("process_cpu_seconds_total") > 0
    assert 0 < sample("process_open_fds") <= sample("process_max_fds")
    assert sample("process_start_time_seconds") > 1_600_000_000
