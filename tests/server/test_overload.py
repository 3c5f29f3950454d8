"""Overload on a real ingress (gRPC on 127.0.0.1, the in-process backend): refused, not queued, fairly between fleets.

The backend is the real in-process onnxruntime one, slowed to a known pace (1 ms per window, one call at a time),
so its capacity (about 1,000 windows/s) does not depend on how busy this machine is. One fleet offers twice that,
another a sixth of it, both through the real load generator.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from aelstm.client.connection import ConnectionOptions
from aelstm.client.loadtest import LoadRun, Schedule, run_report
from aelstm.client.synthetic import inject_anomalies, normal_telemetry
from aelstm.client.workload import build_workload
from aelstm.core.runtime import Scores
from aelstm.server.app import ScoringServer
from aelstm.server.backend import InProcessBackend
from aelstm.server.config import ServeConfig
from aelstm.server.registry import DEFAULT_FLEET, publish

pytestmark = pytest.mark.integration

SECONDS_PER_WINDOW = 0.001
CAPACITY = 1 / SECONDS_PER_WINDOW  # windows/s
BUDGET_MS = 150.0  # scoring budget: over twice what the quiet fleet takes (the call under way, then its own)
BATCH = 16


class PacedBackend(InProcessBackend):
    """The in-process backend at a known pace: each call takes at least `SECONDS_PER_WINDOW` per window."""

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        scores, _ = await asyncio.gather(super().score(key, windows), asyncio.sleep(SECONDS_PER_WINDOW * len(windows)))
        return scores


def fleet_workload(fleet: str, seed: int):
    """Two gateways sending windows of 32 devices of `fleet`, BATCH per message."""
    rng = np.random.default_rng(seed)
    values = normal_telemetry(32, 200, 1, rng, np.full(1, 50.0), np.full(1, 5.0))
    return build_workload(inject_anomalies(values, 0.0, rng, kinds=("spike",)), fleets=[fleet], gateways=2,
                          batch=BATCH, window=16, pool_messages=200)


async def test_overload_is_refused_at_once_fairly_and_nothing_is_lost(tmp_path, ec2_bundle):
    publish(ec2_bundle.path, tmp_path, DEFAULT_FLEET)  # both made-up fleets share its queue
    config = ServeConfig(port=0, backend="inprocess", registry=str(tmp_path), metrics_port=0, max_batch=32,
                         scoring_budget_ms=BUDGET_MS, drain_grace_s=5.0)
    server = ScoringServer(config, backend=PacedBackend(threads=1))
    await server.start()
    try:
        options = ConnectionOptions(target=server.address, deadline_s=10.0)
        loud = Schedule(rate=2 * CAPACITY / BATCH, warmup_s=0.5, duration_s=3.0, drain_s=10.0)
        quiet = Schedule(rate=CAPACITY / 6 / BATCH, warmup_s=0.5, duration_s=3.0, drain_s=10.0, seed=1)
        runs = await asyncio.gather(LoadRun(options, fleet_workload("loud", 0), loud).run(),
                                    LoadRun(options, fleet_workload("quiet", 1), quiet).run())
        reports = [run_report(run, schedule) for run, schedule in zip(runs, (loud, quiet), strict=True)]
        metrics = server.metrics.registry
    finally:
        await server.stop()

    loud_report, quiet_report = (report["measured"] for report in reports)
    for report in (loud_report, quiet_report):
        # every message answered, every item scored or refused: nothing lost, no error of either kind
        assert report["lost"] == 0 and not report["errors"] and not report["item_errors"], report
        assert report["answered"] == report["sent"] > 0
        assert report["items_answered"] + report["items_refused"] == report["items_sent"]
    loud_refused = loud_report["items_refused"] / loud_report["items_sent"]
    quiet_refused = quiet_report["items_refused"] / quiet_report["items_sent"]
    assert loud_refused > 0.3, loud_report  # it offered twice the capacity
    assert quiet_refused < 0.1, quiet_report  # the loud fleet's backlog is not the quiet one's
    # admitted work was served in its budget plus one call, not after a queue growing all run (seconds by the end)
    assert loud_report["latency_ms"]["p99"] < BUDGET_MS + 250, loud_report["latency_ms"]
    assert quiet_report["latency_ms"]["p99"] < BUDGET_MS + 250, quiet_report["latency_ms"]
    refused_ms = loud_report["refused_latency_ms"]
    assert refused_ms["p50"] < 30 and refused_ms["max"] < BUDGET_MS + 250  # mostly at once, never left waiting
    goodput = (loud_report["throughput"]["items_per_s"] + quiet_report["throughput"]["items_per_s"])
    # refusing cheaply keeps the backend busy with admitted work (about 0.7-0.85 of its pace here on a shared
    # machine: the event loop runs server and clients; half catches a refusal that wastes capacity)
    assert goodput > 0.5 * CAPACITY
    # on the server: no admitted request waited for its call past the budget (plus scheduling slack)
    waits = metrics.get_sample_value("aelstm_stage_seconds_count", {"stage": "queue"})
    within = metrics.get_sample_value("aelstm_stage_seconds_bucket", {"stage": "queue", "le": "0.2"})
    assert waits > 0 and within == waits
    refused = sum(metrics.get_sample_value("aelstm_refused_windows_total", {"reason": reason}) or 0
                  for reason in ("predicted", "expired"))
    assert refused == sum(r[phase]["items_refused"] for r in reports for phase in ("warmup", "measured"))
