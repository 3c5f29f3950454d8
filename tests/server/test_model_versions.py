"""Two in-process ingresses on one registry: versions by content, convergence, refusals counted as they happen."""

from __future__ import annotations

import shutil

import grpc
import pytest_asyncio

from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc


def config(registry) -> ServeConfig:
    return ServeConfig(port=0, backend="inprocess", registry=str(registry), metrics_port=0, poll_s=60.0,
                       drain_grace_s=1.0)


@pytest_asyncio.fixture
async def ingresses(tmp_path, ec2_bundle):
    publish(ec2_bundle.path, tmp_path, "f")
    publish(ec2_bundle.path, tmp_path, "f")
    servers = [ScoringServer(config(tmp_path)) for _ in range(2)]
    for server in servers:
        await server.start()
    yield servers
    for server in servers:
        await server.stop(0)


async def served(server: ScoringServer, fleet: str) -> tuple[str, str, float]:
    """What a client sees: the model name, version and threshold the ingress serves for `fleet`."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        info = await pb_grpc.AnomalyScorerStub(channel).GetModel(pb.GetModelRequest(fleet_id=fleet))
    return info.model_name, info.model_version, round(info.threshold, 6)


def sample(server: ScoringServer, name: str, **labels: str) -> float | None:
    return server.metrics.registry.get_sample_value(name, labels)


async def test_publishing_after_a_deleted_version_reaches_every_ingress(ingresses, tmp_path, machine_bundle):
    shutil.rmtree(tmp_path / "f" / "2")
    publish(machine_bundle.path, tmp_path, "f")
    for server in ingresses:
        await server.models.refresh()
    seen = {await served(server, "f") for server in ingresses}
    assert len(seen) == 1 and next(iter(seen))[:2] == ("machine-temp", "3")


async def test_a_version_replaced_in_place_is_refused_counted_and_served_alike(ingresses, tmp_path, machine_bundle):
    first, late = ingresses
    shutil.rmtree(tmp_path / "f" / "2")
    shutil.copytree(machine_bundle.path, tmp_path / "f" / "2")
    assert await first.models.refresh()  # back to version 1: version 2 no longer holds what was published
    fresh = ScoringServer(config(tmp_path))  # an ingress started after the change
    await fresh.start()
    try:
        assert {await served(s, "f") for s in (first, fresh)} == {await served(first, "f")}
        assert (await served(fresh, "f"))[:2] == ("ec2-latency", "1")
    finally:
        await fresh.stop(0)
    assert sample(first, "aelstm_models_replaced_total", fleet="f") == 1
    assert sample(first, "aelstm_models_refused_total", fleet="f") == 1
    assert sample(late, "aelstm_models_refused_total", fleet="f") is None  # it has not scanned yet


async def test_a_refused_new_version_is_counted_at_once(ingresses, tmp_path):
    server = ingresses[0]
    broken = tmp_path / "f" / "3"
    shutil.copytree(tmp_path / "f" / "2", broken)
    (broken / "model.onnx").write_bytes(b"corrupt")
    assert not await server.models.refresh()  # nothing served changed ...
    assert sample(server, "aelstm_models_refused_total", fleet="f") == 1  # ... and the refusal counts already
    digest = server.models.resolve("f").digest
    assert sample(server, "aelstm_model_info", fleet="f", version="2", digest=digest) == 1
