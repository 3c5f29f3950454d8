"""The retraining loop end to end: the server records readings judged normal, `aelstm retrain` (run by the server,
in its own process) learns a fleet's new normal from them, the gate lets the better model through, and the fleet
stops alarming; recordings are Parquet, sampled by device, and never hold alarmed items."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pyarrow.parquet as pq
import pytest

from aelstm.core.data import Series
from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.drift import DriftMeter
from aelstm.server.recorder import Recorder, RecorderSettings, is_recorded
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

FLEET = "plant"


def wave(rows: int, level: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (level + np.sin(2 * np.pi * np.arange(rows) / 60) + rng.normal(0, 0.05, rows))[:, None]


@pytest.fixture(scope="module")
def level_zero_bundle(tmp_path_factory) -> Path:
    from aelstm.training.train import TrainConfig, train_series

    path = tmp_path_factory.mktemp("bundles") / "plant"
    series = Series(FLEET, wave(1200), ("v",))
    # DSPOT without suppression: every window over the threshold alarms, so the count tells how well the model fits
    train_series(series, path, TrainConfig(window=16, hidden=16, latent=4, epochs=4, patience=2,
                                           policy="sum | spot:risk=0.0001,depth=512"), rows=1200, progress=False)
    return path


async def alarms(address: str, device: str, values: np.ndarray) -> int:
    """Send `values` one reading per item on one stream; how many items raised an alarm."""
    requests = (pb.ScoreRequest(request_id=str(i), fleet_id=FLEET, items=[pb.Item(
        device_id=device, timestamp_ms=1000 * (i + 1),
        readings=pb.Tensor(shape=[1, 1], packed=values[i : i + 1].astype("<f4").tobytes()))])
        for i in range(len(values)))
    async with grpc.aio.insecure_channel(address) as channel:
        responses = [r async for r in pb_grpc.AnomalyScorerStub(channel).StreamScore(requests)]
    assert len(responses) == len(values)
    return sum(r.results[0].is_anomaly for r in responses)


async def model_info(address: str) -> pb.ModelInfo:
    async with grpc.aio.insecure_channel(address) as channel:
        return await pb_grpc.AnomalyScorerStub(channel).GetModel(pb.GetModelRequest(fleet_id=FLEET))


async def recording_server(tmp_path: Path, bundle: Path, **settings) -> ScoringServer:
    """An in-process server of `bundle` as fleet FLEET that records every device's normal readings in
    `tmp_path / "recorded"`, with these retraining settings; started."""
    registry = tmp_path / "registry"
    publish(bundle, registry, FLEET)
    server = ScoringServer(ServeConfig(port=0, backend="inprocess", registry=str(registry), metrics_port=0,
                                       record_dir=str(tmp_path / "recorded"), record_devices=1.0,
                                       retrain_min_rows=500, **settings))
    await server.start()
    return server


async def test_a_fleet_whose_normal_level_moved_stops_alarming_after_one_retrain(tmp_path, level_zero_bundle):
    recorded = tmp_path / "recorded"
    server = await recording_server(tmp_path, level_zero_bundle, poll_s=60.0, record_flush_s=3600.0,
                                    retrain_every_s=3600.0)
    try:
        moved = wave(1500, level=3.0, seed=1)
        before = await alarms(server.address, "fresh-1", moved[:300])
        await alarms(server.address, "recorded", moved)
        drifted = (await model_info(server.address)).drift
        outcomes = await server.retraining.retrain_once()
        assert [(o["fleet"], o["status"], o["version"]) for o in outcomes] == [(FLEET, "published", "2")], outcomes
        assert outcomes[0]["below_scoring"], "the loop's fits run in the idle scheduling class"
        assert await server.models.refresh()
        after = await alarms(server.address, "fresh-2", moved[:300])
        assert before >= 3 and after <= 1, (before, after)  # the level shift alarms until the model learns it
        assert drifted > 20 and (await model_info(server.address)).drift < 3, drifted  # 1: as calibrated

        files = list((recorded / FLEET).glob("*.parquet"))
        table = pq.read_table(files[0])
        assert table.column_names == ["device", "timestamp_ms", "position", "v"]

        again = await server.retraining.retrain_once()  # nothing new since version 2: skipped, version kept
        assert [o["status"] for o in again] == ["skipped"]
        await server.models.refresh()
        assert server.models.resolve(FLEET).version == "2"
        sample = server.metrics.registry.get_sample_value
        assert sample("aelstm_retrained_fleets_total", {"outcome": "published"}) == 1
        assert sample("aelstm_recorded_readings_total", {"fleet": FLEET, "outcome": "kept"}) > 500
    finally:
        await server.stop(0)


async def test_a_fleet_whose_drift_reaches_the_trigger_is_retrained_without_a_schedule(tmp_path, level_zero_bundle):
    server = await recording_server(tmp_path, level_zero_bundle, poll_s=0.2, record_flush_s=0.5,
                                    retrain_on_drift=5.0)
    try:
        moved = wave(1500, level=3.0, seed=1)
        await alarms(server.address, "recorded", moved)
        sample = server.metrics.registry.get_sample_value
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 240
        while not (server.models.resolve(FLEET).version == "2"  # the drift check retrained, the poll serves it
                   and sample("aelstm_retrained_fleets_total", {"outcome": "published"}) == 1):
            assert loop.time() < deadline, "no retrained version served within 240 s of the drift"
            await asyncio.sleep(0.2)
        assert sample("aelstm_drift_retrains_total", {"fleet": FLEET}) >= 1
        assert await alarms(server.address, "fresh", moved[:300]) <= 1
        assert server.retraining.drifted() == []  # the new version's drift starts afresh
    finally:
        await server.stop(0)


async def test_the_recorder_samples_devices_stably_and_writes_parquet(tmp_path):
    devices = [f"d{i}" for i in range(1000)]
    chosen = [d for d in devices if is_recorded("f", d, 0.1)]
    assert 60 < len(chosen) < 140 and chosen == [d for d in devices if is_recorded("f", d, 0.1)]
    dropped = []
    recorder = Recorder(RecorderSettings(tmp_path, device_fraction=1.0, max_buffered_rows=5),
                        on_dropped=lambda fleet, rows: dropped.append(rows))
    recorder.offer("f", "a", 1000, np.ones((3, 2), np.float32), ("x", "y"))
    recorder.offer("f", "b", 2000, np.ones((3, 2), np.float32), ("x", "y"))  # over the bound: dropped, counted
    (path,) = await recorder.flush()
    assert dropped == [3]
    assert pq.read_table(path).to_pydict() == {"device": ["a"] * 3, "timestamp_ms": [1000] * 3,
                                               "position": [0, 1, 2], "x": [1.0] * 3, "y": [1.0] * 3}
    assert await recorder.flush() == []


def test_drift_is_the_recent_share_above_the_calibration_p99_over_one_percent():
    rng = np.random.default_rng(0)
    meter = DriftMeter(windows=500, min_windows=100)
    seen = list(rng.random(50))
    meter.observe("m", np.array(seen), 0.99)
    assert meter.ratio("m") is None  # too few windows yet
    for size in rng.integers(1, 700, 40):
        scores = rng.random(size) * rng.choice([1.0, 1.05])
        meter.observe("m", scores, 0.99)
        seen.extend(scores)
        assert meter.ratio("m") == pytest.approx(np.mean(np.array(seen[-500:]) > 0.99) / 0.01)
    meter.retain(set())
    assert meter.ratio("m") is None


def test_a_pinned_fleet_is_not_retrained(tmp_path, ec2_bundle):
    from aelstm.server.registry import pin
    from aelstm.training.retrain import plan_retraining

    publish(ec2_bundle.path, tmp_path / "registry", FLEET)
    pin(tmp_path / "registry", FLEET, "1")
    plan = plan_retraining(tmp_path / "recorded", tmp_path / "registry", None, min_rows=1)
    assert plan.fleets == [] and [o.reason for o in plan.skipped] == [f"fleet {FLEET} is pinned to version 1"]


def test_the_loop_places_fits_on_the_training_nodes_it_is_given(tmp_path):
    """On a cluster the loop's run fits where the ingress was told (`--retrain-fit-resource`), and the command it
    builds is one `aelstm retrain` accepts."""
    from aelstm.server.retraining import retrain_command
    from aelstm.training.cli import retrain

    config = ServeConfig(registry=str(tmp_path / "registry"), record_dir=str(tmp_path / "recorded"),
                         ray_address="auto", retrain_fit_resource="training")
    command = retrain_command(config, tmp_path / "summary.json")
    at = command.index("--ray-address")
    assert command[at : at + 4] == ["--ray-address", "auto", "--fit-resource", "training"]
    assert "--fit-resource" not in retrain_command(ServeConfig(registry=str(tmp_path)), tmp_path / "summary.json")
    parsed = retrain.make_context("retrain", command[command.index("aelstm.training.retrain") + 1 :])
    assert parsed.params["fit_resource"] == "training" and parsed.params["ray_address"] == "auto"
