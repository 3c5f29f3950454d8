"""Refused calls are counted by code: UNAUTHENTICATED (no or unknown token), PERMISSION_DENIED (fleet not granted)."""

from __future__ import annotations

import grpc
import pytest
import pytest_asyncio

from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc


@pytest_asyncio.fixture
async def scoped(tmp_path, ec2_bundle):
    publish(ec2_bundle.path, tmp_path, "ec2")
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("ec2-token: ec2\n")
    server = ScoringServer(ServeConfig(port=0, backend="inprocess", registry=str(tmp_path), metrics_port=0,
                                       poll_s=60.0, drain_grace_s=1.0, tokens_file=str(tokens)))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield server, pb_grpc.AnomalyScorerStub(channel)
    finally:
        await server.stop(0)


def denied(server: ScoringServer, code: str) -> float:
    return server.metrics.registry.get_sample_value("aelstm_auth_denied_total", {"code": code}) or 0.0


async def test_refusals_are_counted_by_code(scoped):
    server, stub = scoped
    token = (("authorization", "Bearer ec2-token"),)
    await stub.GetModel(pb.GetModelRequest(fleet_id="ec2"), metadata=token)
    assert (denied(server, "UNAUTHENTICATED"), denied(server, "PERMISSION_DENIED")) == (0, 0)
    with pytest.raises(grpc.aio.AioRpcError, match="UNAUTHENTICATED"):
        await stub.ListModels(pb.ListModelsRequest(), metadata=(("authorization", "Bearer wrong"),))
    with pytest.raises(grpc.aio.AioRpcError, match="PERMISSION_DENIED"):
        await stub.GetModel(pb.GetModelRequest(fleet_id="machines"), metadata=token)
    other = await stub.Score(pb.ScoreRequest(request_id="r", fleet_id="machines", items=[pb.Item(device_id="d")]),
                             metadata=token)
    assert other.results[0].error.code == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert (denied(server, "UNAUTHENTICATED"), denied(server, "PERMISSION_DENIED")) == (1, 2)
