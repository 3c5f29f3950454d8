"""Gateways survive an ingress restart: a stream that ends UNAVAILABLE is reopened and unanswered requests are sent
again by request id, against a real ingress stopped and started again on the same port."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from aelstm.client.connection import ConnectionOptions
from aelstm.client.loadtest import LoadRun, Schedule, run_report
from aelstm.client.synthetic import inject_anomalies, normal_telemetry
from aelstm.client.workload import build_workload

app = pytest.importorskip("aelstm.server.app", reason="the server package is not available")
config_module = pytest.importorskip("aelstm.server.config")

pytestmark = pytest.mark.integration


def serve_config(bundle, registry, port: int = 0):
    return config_module.ServeConfig(port=port, backend="inprocess", registry=str(registry),
                                     default_bundle=str(bundle.path), metrics_port=0, drain_grace_s=1.0,
                                     batch_wait_ms=1.0)


async def restart_later(server, bundle, registry, after_s: float, down_s: float):
    """Stop `server` after `after_s` (it drains: answers what it received, ends streams UNAVAILABLE), start a new
    one on the same port `down_s` later; returns the new server."""
    await asyncio.sleep(after_s)
    port = server.port
    await server.stop(1.0)
    await asyncio.sleep(down_s)
    again = app.ScoringServer(serve_config(bundle, registry, port))
    await again.start()
    return again


async def test_loadtest_reconnects_and_resends_across_an_ingress_restart(tiny_bundle, tmp_path):
    _, bundle, _ = tiny_bundle
    rng = np.random.default_rng(0)
    telemetry = inject_anomalies(normal_telemetry(8, 200, 1, rng, np.zeros(1), np.ones(1)), 0.0, rng)
    workload = build_workload(telemetry, fleets=["default"], gateways=2, batch=4, window=bundle.window,
                              pool_messages=200)
    schedule = Schedule(rate=100, warmup_s=0.0, duration_s=2.5, drain_s=5.0, max_time_s=30.0)
    server = app.ScoringServer(serve_config(bundle, tmp_path))
    await server.start()
    run = LoadRun(ConnectionOptions(target=server.address, deadline_s=5.0), workload, schedule)
    restarted = asyncio.create_task(restart_later(server, bundle, tmp_path, after_s=0.8, down_s=0.5))
    try:
        report = run_report(await run.run(), schedule)
    finally:
        (again,) = await asyncio.gather(restarted, return_exceptions=True)
        await (again if isinstance(again, app.ScoringServer) else server).stop(0)
    measured = report["measured"]
    assert measured["sent"] == pytest.approx(250, abs=3)
    assert measured["lost"] == 0 and not measured["errors"], measured
    assert measured["answered"] == measured["sent"]
    assert measured["reconnects"] >= 2  # both gateways
    assert measured["resent"] > 0  # at least the messages due while the server was down
    assert report["passed"]


async def test_replay_reconnects_and_resends_across_an_ingress_restart(tiny_bundle, tmp_path):
    from aelstm.client.replay import replay
    from aelstm.core.data import Series

    _, bundle, full = tiny_bundle
    series = Series("part", full.values[:300], full.feature_names)  # 300 rows in about 2.4 s: interval 8 ms
    server = app.ScoringServer(serve_config(bundle, tmp_path))
    await server.start()
    reconnects: list[int] = []
    restarted = asyncio.create_task(restart_later(server, bundle, tmp_path, after_s=0.8, down_s=0.5))
    try:
        table = await replay(ConnectionOptions(target=server.address, deadline_s=5.0), series, fleet_id="default",
                             device_id="d1", mode="windows", window=bundle.window, speed=1.0, interval_s=0.008,
                             on_reconnect=reconnects.append)
    finally:
        (again,) = await asyncio.gather(restarted, return_exceptions=True)
        await (again if isinstance(again, app.ScoringServer) else server).stop(0)
    assert len(table) == 300 - bundle.window + 1
    assert set(table["status"]) == {"ok"}, table["status"].value_counts()
    assert reconnects and sum(reconnects) > 0
