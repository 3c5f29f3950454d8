"""What a client cannot do to the ingress, whatever it sends: end a stream for others, grow memory without bound,
get an infinite score, double-append a retried reading; and how streams end on drain."""

from __future__ import annotations

import grpc
import pytest_asyncio

from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

OK, WARMING, ERROR = pb.ITEM_STATUS_OK, pb.ITEM_STATUS_WARMING_UP, pb.ITEM_STATUS_ERROR
INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED, INTERNAL, UNAVAILABLE = 3, 5, 8, 13, 14


def config(registry, **overrides) -> ServeConfig:
    settings = dict(port=0, backend="inprocess", registry=str(registry), metrics_port=0, poll_s=60.0,
                    batch_wait_ms=1.0, drain_grace_s=5.0)
    return ServeConfig(**{**settings, **overrides})


@pytest_asyncio.fixture
async def registry(tmp_path, ec2_bundle):
    publish(ec2_bundle.path, tmp_path, "ec2")
    return tmp_path


async def started(registry, **overrides) -> ScoringServer:
    server = ScoringServer(config(registry, **overrides))
    await server.start()
    return server


@pytest_asyncio.fixture
async def server(registry):
    server = await started(registry)
    yield server
    await server.stop(0)


@pytest_asyncio.fixture
async def stub(server):
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.AnomalyScorerStub(channel)


async def test_a_pot_threshold_that_fell_back_is_reported_as_the_quantile_it_is(tmp_path, ec2_bundle):
    import json
    import shutil

    bundle = tmp_path / "fallback"
    shutil.copytree(ec2_bundle.path, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["threshold"]["method"] = "pot"  # as bundles written before the method was named honestly
    manifest["threshold"]["params"]["fallback"] = "quantile: fewer than 10 peaks"
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    publish(bundle, tmp_path / "registry", "fb")
    server = await started(tmp_path / "registry")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.AnomalyScorerStub(channel)
            info = await stub.GetModel(pb.GetModelRequest(fleet_id="fb"))
            listed = (await stub.ListModels(pb.ListModelsRequest())).models
    finally:
        await server.stop(0)
    assert info.threshold_method == "quantile (pot fallback: fewer than 10 peaks)"
    assert [m.threshold_method for m in listed] == [info.threshold_method]
