"""`aelstm train-fleets`: fleets found in files, folders and key columns; fits on a local Ray; the publishing gate."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from aelstm.cli import main
from aelstm.core.bundle import load_bundle
from aelstm.core.cli_options import read_series
from aelstm.core.errors import DataError
from aelstm.core.scoring import score_series
from aelstm.server.registry import list_versions
from aelstm.training.fleets import discover_fleets

SMALL = ["--window", "16", "--hidden", "16", "--latent", "4", "--epochs", "4", "--patience", "2"]


def wave(rows: int, period: float, level: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    return level + np.sin(2 * np.pi * t / period) + rng.normal(0, 0.05, rows)


def write(path: Path, **columns: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(columns).to_csv(path, index=False)
    return path


def read(path: Path):
    return read_series(path, "csv", None, None, None, ",", "refuse")


def test_a_fleet_is_a_file_a_folder_or_a_key_value(tmp_path):
    write(tmp_path / "data" / "pumps.csv", v=wave(100, 10))
    write(tmp_path / "data" / "fans" / "1.csv", v=wave(60, 10))
    write(tmp_path / "data" / "fans" / "2.csv", v=wave(40, 10))
    (tmp_path / "data" / "bad.csv").write_text("v\n1\nhot\n")
    fleets = {f.name: f for f in discover_fleets(tmp_path / "data", read)}
    assert sorted(fleets) == ["bad", "fans", "pumps"]
    assert len(fleets["fans"].series) == 100 and len(fleets["pumps"].series) == 100
    assert fleets["bad"].series is None and "'hot'" in fleets["bad"].error

    keyed = write(tmp_path / "all.csv", fleet=np.repeat(["a", "b"], 50), v=np.arange(100.0))
    groups = {f.name: f.series for f in discover_fleets(keyed, read, key_column="fleet")}
    assert groups["a"].feature_names == ("v",) and groups["b"].values[0, 0] == 50.0

    write(tmp_path / "clash" / "x.csv", v=wave(10, 5))
    write(tmp_path / "clash" / "x" / "1.csv", v=wave(10, 5))
    with pytest.raises(DataError, match="both a file and a folder"):
        discover_fleets(tmp_path / "clash", read)
    with pytest.raises(DataError, match="key column 'nope' not found"):
        discover_fleets(keyed, read, key_column="nope")


async def test_fleets_train_in_parallel_on_ray_and_each_is_served_by_its_own_model(tmp_path, monkeypatch):
    from aelstm.server.app import ScoringServer
    from aelstm.server.config import ServeConfig
    from aelstm.v1 import scoring_pb2 as pb
    from aelstm.v1 import scoring_pb2_grpc as pb_grpc

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    data = tmp_path / "fleets"
    for name, period, level in (("pumps", 12, 0.0), ("fans", 30, 5.0), ("valves", 7, -3.0)):
        write(data / f"{name}.csv", v=wave(700, period, level))
    (data / "corrupt.csv").write_text("v\n1.0\n2.0\n")  # too few readings for a window
    registry = tmp_path / "registry"
    summary = tmp_path / "summary.json"
    result = CliRunner().invoke(main, ["train-fleets", str(data), "--registry", str(registry), "--summary",
                                       str(summary), "--quiet", *SMALL])
    assert result.exit_code == 1, result.output
    assert "1 of 4 fleet(s) failed: corrupt" in result.output
    outcomes = {o["fleet"]: o for o in json.loads(summary.read_text())}
    assert outcomes["corrupt"]["status"] == "failed" and "too few" in outcomes["corrupt"]["reason"]
    assert {o["status"] for name, o in outcomes.items() if name != "corrupt"} == {"published"}
    assert {(r.fleet, r.version, r.state) for r in list_versions(registry)} == {
        ("fans", "1", "served"), ("pumps", "1", "served"), ("valves", "1", "served")}

    server = ScoringServer(ServeConfig(port=0, backend="inprocess", registry=str(registry), metrics_port=0))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.AnomalyScorerStub(channel)
            for fleet in ("pumps", "fans", "valves"):
                info = await stub.GetModel(pb.GetModelRequest(fleet_id=fleet))
                assert info.model_name == fleet
                first = read(data / f"{fleet}.csv").slice(0, 16)
                window = pb.Tensor(shape=[16, 1], packed=first.values.astype("<f4").tobytes())
                request = pb.ScoreRequest(request_id="1", fleet_id=fleet, items=[pb.Item(device_id="d", window=window)])
                (answer,) = [response async for response in stub.StreamScore(iter([request]))]
                expected = score_series(load_bundle(registry / fleet / "1"), first)["score"].iloc[0]
                assert answer.results[0].score == pytest.approx(expected, rel=1e-4)
    finally:
        await server.stop(0)


def test_fits_below_scoring_lower_their_own_ray_workers_and_nothing_else(tmp_path, monkeypatch):
    """On a cluster whose nodes also score, each retraining fit lowers the worker it runs in (a fresh one, so no
    lowered worker is reused); the process that runs the job is left as it is."""
    from aelstm.core.priority import is_below_scoring
    from aelstm.training.cli import fleet_runner
    from aelstm.training.config import TrainConfig
    from aelstm.training.fleet_training import FleetTrainer

    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    for name, period in (("pumps", 12), ("fans", 30)):
        write(tmp_path / "data" / f"{name}.csv", v=wave(600, period))
    fleets = discover_fleets(tmp_path / "data", read)
    config = TrainConfig(window=16, hidden=16, latent=4, epochs=4, patience=2)
    with fleet_runner(False, None, 1, len(fleets), below_scoring=True) as runner:
        outcomes = FleetTrainer(tmp_path / "registry", runner, progress=False).train(fleets, lambda _: config)
    assert [(o.status, o.below_scoring) for o in outcomes] == [("published", True)] * 2
    assert not is_below_scoring()


def test_fits_that_cannot_run_side_by_side_stay_in_the_process(tmp_path, monkeypatch):
    """One fleet, or CPUs for one fit at a time: no embedded Ray is started (RAY_ADDRESS=local names it too), since
    it could only add its start-up; the fits run here and publish."""
    import aelstm.server.ray_backend as ray_backend

    def refuse(*args, **kwargs):
        raise AssertionError("an embedded Ray was started")

    monkeypatch.setattr(ray_backend, "init_ray", refuse)
    write(tmp_path / "one" / "pumps.csv", v=wave(600, 12))
    for name, period in (("pumps", 12), ("fans", 30)):
        write(tmp_path / "two" / f"{name}.csv", v=wave(600, period))
    for data, extra in ((tmp_path / "one", []), (tmp_path / "two", ["--cpus-per-fleet", str(os.cpu_count())])):
        registry = tmp_path / f"registry-{data.name}"
        result = CliRunner().invoke(main, ["train-fleets", str(data), "--registry", str(registry), "--quiet", *SMALL,
                                           *extra], env={"RAY_ADDRESS": "local"})
        assert result.exit_code == 0, result.output
        assert "one after another in this process, without Ray" in result.output
        assert {r.state for r in list_versions(registry)} == {"served"}


def test_fits_are_placed_by_a_resource_only_on_a_cluster(tmp_path):
    """--fit-resource names the nodes of a cluster that train: without --ray-address there are none to name, so the
    job stops before it trains anything rather than ignoring the placement (the cluster test places fits by it)."""
    write(tmp_path / "data" / "pumps.csv", v=wave(600, 12))
    for extra in ([], ["--no-ray"], ["--ray-address", "local"]):
        result = CliRunner().invoke(main, ["train-fleets", str(tmp_path / "data"), "--registry",
                                           str(tmp_path / "registry"), "--quiet", *SMALL, "--fit-resource", "training",
                                           *extra], env={"RAY_ADDRESS": None})
        assert result.exit_code == 2, result.output
        assert "--fit-resource places fits on the nodes of a Ray cluster: it needs --ray-address" in result.output
    assert not (tmp_path / "registry").exists()


def test_a_fit_no_node_could_run_is_refused_before_the_job_starts():
    """Ray leaves a task that no node could ever run pending forever: the job checks the alive nodes first. With a
    placing resource a fit asks for its CPUs in units of it instead."""
    from aelstm.training.fleet_training import placement_problem

    head, trainer = {"CPU": 2.0, "memory": 1e9}, {"CPU": 0.0, "training": 4.0}
    assert placement_problem([head, trainer], 2, None) is None
    assert placement_problem([head, trainer], 4, "training") is None
    assert "has the 8 CPUs a fit asks for (at most 2)" in placement_problem([head, trainer], 8, None)
    assert "has the 6 'training' unit(s) a fit asks for (at most 4)" in placement_problem([head, trainer], 6,
                                                                                            "training")
    assert "(at most 0): start training nodes with `ray start --num-cpus 0 --resources '{\"gpu-train\": CORES}'`" \
        in placement_problem([head, trainer], 1, "gpu-train")


def test_a_new_model_is_published_only_when_the_gate_passes(tmp_path):
    first, shifted = tmp_path / "first", tmp_path / "shifted"
    write(first / "plant.csv", v=wave(1200, 60, seed=1))
    write(shifted / "plant.csv", v=wave(1200, 60, level=3.0, seed=1))
    registry = tmp_path / "registry"
    run = lambda data, *extra: CliRunner().invoke(  # noqa: E731
        main, ["train-fleets", str(data), "--registry", str(registry), "--no-ray", "--quiet", *SMALL, *extra])

    assert run(first).exit_code == 0
    moved = run(shifted)  # the served model flags the shifted normal readings; one trained on them does not
    assert moved.exit_code == 0 and "published        2" in moved.output, moved.output

    tight = run(shifted, "--policy", "sum | quantile:q=0.5")  # flags half of the normal windows: worse
    assert tight.exit_code == 0 and "kept aside" in tight.output, tight.output
    assert [(r.version, r.state) for r in list_versions(registry)] == [("2", "served"), ("1", "present")]
    (aside,) = (registry / ".aside" / "plant").iterdir()
    assert "version 2 flags" in (aside / "REASON").read_text()
    assert load_bundle(aside).policy.spec.startswith("sum | quantile")
