"""The client against the real `aelstm serve` ingress (in-process onnxruntime backend, real gRPC on 127.0.0.1)."""

from __future__ import annotations

import io
import json
import threading
from contextlib import asynccontextmanager

import grpc
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fake_server import ServerThread

from aelstm.client.cli import main
from aelstm.client.payloads import window_item
from aelstm.core.preprocess import sliding_windows
from aelstm.core.scoring import score_series
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc
from support import EC2_LATENCY

app = pytest.importorskip("aelstm.server.app", reason="the server package is not available")
config_module = pytest.importorskip("aelstm.server.config")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def real_server(tiny_bundle, tmp_path_factory):
    """`aelstm serve --backend inprocess` serving the EC2 fixture's model as the default, in a thread."""
    _, bundle, series = tiny_bundle
    registry = tmp_path_factory.mktemp("registry")
    config = config_module.ServeConfig(port=0, backend="inprocess", registry=str(registry),
                                       default_bundle=str(bundle.path), metrics_port=0, drain_grace_s=1.0)

    @asynccontextmanager
    async def serving():
        server = app.ScoringServer(config)
        await server.start()
        try:
            yield server.address
        finally:
            await server.stop(1.0)

    with ServerThread(serving) as thread:
        yield thread.target, bundle, series


def test_loadtest_against_the_real_server_loses_nothing(real_server, tmp_path):
    target, bundle, _ = real_server
    path = tmp_path / "report.json"
    result = CliRunner().invoke(main, ["--target", target, "loadtest", "-G", "2", "-D", "32", "-b", "8", "--rate",
                                       "50", "--warmup", "0.5s", "--duration", "1s", "--no-progress",
                                       "--json", str(path)])
    assert result.exit_code == 0, result.output
    report = json.loads(path.read_text())
    measured = report["measured"]
    assert report["config"]["window"] == bundle.window
    assert report["config"]["fleets"] == ["default"]  # the server has only a default model
    assert measured["lost"] == 0 and not measured["errors"] and measured["answered"] == measured["sent"] > 0
    assert measured["item_status"] == {"ok": measured["items_answered"]}


def test_remote_scores_match_local_scoring(real_server):
    target, bundle, series = real_server
    result = CliRunner().invoke(main, ["--target", target, "score", str(EC2_LATENCY), "--dataset", "nab"])
    assert result.exit_code == 0, result.output
    remote = pd.read_csv(io.StringIO(result.stdout))
    local = score_series(bundle, series, device="cpu")
    assert (remote["row"].to_numpy() == local["row"].to_numpy()).all()
    # Whole windows are judged against the model's calibrated level (a streaming threshold follows readings).
    assert (remote["is_anomaly"].to_numpy() == (local["score"].to_numpy() > bundle.threshold)).all()
    np.testing.assert_allclose(remote["score"].to_numpy(), local["score"].to_numpy(), rtol=1e-3, atol=1e-3)


def test_watch_prints_what_the_real_server_flags(real_server):
    target, bundle, series = real_server
    windows = sliding_windows(series.values, bundle.window, 1)

    watched = threading.Event()

    def score_the_series() -> None:  # again and again until the watcher has seen three: it may subscribe late
        with grpc.insecure_channel(target) as channel:
            stub = scoring_pb2_grpc.AnomalyScorerStub(channel)
            while not watched.is_set():
                for start in range(0, len(windows), 500):
                    items = [window_item("watched", w) for w in windows[start : start + 500]]
                    stub.Score(pb.ScoreRequest(request_id=str(start), fleet_id="fleet-w", items=items), timeout=30)
                    if watched.is_set():
                        return

    sender = threading.Thread(target=score_the_series)
    sender.start()
    try:
        result = CliRunner().invoke(main, ["--target", target, "watch", "--fleet", "fleet-w", "--count", "3",
                                           "--for", "60s"])
    finally:
        watched.set()
        sender.join()
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "device=watched" in line]
    assert len(lines) == 3 and all("fleet=fleet-w" in line for line in lines)


def test_health_reports_serving(real_server):
    target, _, _ = real_server
    result = CliRunner().invoke(main, ["--target", target, "health", "--wait", "10s"])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("SERVING")
