"""Fleet-scoped bearer tokens, per RPC, over real gRPC on 127.0.0.1 (in-process scoring)."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import pytest
import pytest_asyncio
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aelstm.cli import main
from aelstm.core.errors import AelstmError
from aelstm.core.preprocess import sliding_windows
from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.server.security import read_tokens_file
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

PERMISSION_DENIED = 7
EC2_TOKEN, ADMIN_TOKEN = "ec2-gateway-token", "admin-token"


def bearer(token: str, scheme: str = "Bearer") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"{scheme} {token}"),)


@pytest_asyncio.fixture
async def tenants(tmp_path, ec2_bundle, machine_bundle):
    registry = tmp_path / "registry"
    publish(ec2_bundle.path, registry, "ec2")
    publish(machine_bundle.path, registry, "machines")
    tokens = tmp_path / "tokens.yaml"
    ec2_digest = hashlib.sha256(EC2_TOKEN.encode()).hexdigest()
    tokens.write_text(f"sha256:{ec2_digest}: [ec2, pumps]\nmachines-token: machines\n")
    server = ScoringServer(ServeConfig(port=0, backend="inprocess", registry=str(registry), metrics_port=0,
                                       poll_s=60.0, batch_wait_ms=1.0, drain_grace_s=2.0, tokens=(ADMIN_TOKEN,),
                                       tokens_file=str(tokens)))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            yield server, pb_grpc.AnomalyScorerStub(channel), channel
    finally:
        await server.stop(0)


def window_request(ec2_bundle, wire, fleet: str, request_id: str = "r") -> pb.ScoreRequest:
    window = sliding_windows(ec2_bundle.series.values.astype("float32"), 16)[0]
    return pb.ScoreRequest(request_id=request_id, fleet_id=fleet, items=[wire.window("d1", window),
                                                                         wire.window("d2", window)])


async def test_score_answers_another_fleet_with_permission_denied_items(tenants, wire, ec2_bundle):
    _, stub, _ = tenants
    own = await stub.Score(window_request(ec2_bundle, wire, "ec2"), metadata=bearer(EC2_TOKEN))
    assert [r.status for r in own.results] == [pb.ITEM_STATUS_OK] * 2
    other = await stub.Score(window_request(ec2_bundle, wire, "machines"), metadata=bearer(EC2_TOKEN))
    assert [(r.status, r.error.code) for r in other.results] == [(pb.ITEM_STATUS_ERROR, PERMISSION_DENIED)] * 2
    assert "machines" in other.results[0].error.message
    admin = await stub.Score(window_request(ec2_bundle, wire, "machines"), metadata=bearer(ADMIN_TOKEN))
    assert admin.results[0].error.code == 0


async def test_stream_denies_items_of_another_fleet_and_goes_on(tenants, wire, ec2_bundle):
    _, stub, _ = tenants
    requests = [window_request(ec2_bundle, wire, fleet, f"r{i}")
                for i, fleet in enumerate(["ec2", "machines", "", "ec2"])]

    async def send():
        for request in requests:
            yield request

    answers = {r.request_id: r async for r in stub.StreamScore(send(), metadata=bearer(EC2_TOKEN))}
    assert sorted(answers) == ["r0", "r1", "r2", "r3"]
    assert {r.status for r in answers["r0"].results} | {r.status for r in answers["r3"].results} == {
        pb.ITEM_STATUS_OK}
    for denied in ("r1", "r2"):  # another fleet, and no fleet (the default model) is not one of its fleets
        assert {r.error.code for r in answers[denied].results} == {PERMISSION_DENIED}


async def test_get_model_of_another_fleet_is_permission_denied(tenants):
    _, stub, _ = tenants
    assert (await stub.GetModel(pb.GetModelRequest(fleet_id="ec2"), metadata=bearer(EC2_TOKEN))).fleet_id == "ec2"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetModel(pb.GetModelRequest(fleet_id="machines"), metadata=bearer(EC2_TOKEN))
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_list_models_shows_only_the_tokens_fleets(tenants):
    _, stub, _ = tenants
    mine = await stub.ListModels(pb.ListModelsRequest(), metadata=bearer(EC2_TOKEN))
    assert [m.fleet_id for m in mine.models] == ["ec2"]
    machines = await stub.ListModels(pb.ListModelsRequest(), metadata=bearer("machines-token"))
    assert [m.fleet_id for m in machines.models] == ["machines"]
    everything = await stub.ListModels(pb.ListModelsRequest(), metadata=bearer(ADMIN_TOKEN))
    assert sorted(m.fleet_id for m in everything.models) == ["ec2", "machines"]


async def test_watch_anomalies_is_scoped_to_the_tokens_fleets(tenants):
    server, stub, _ = tenants
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.WatchAnomalies(pb.WatchAnomaliesRequest(fleet_id="machines"), metadata=bearer(EC2_TOKEN)):
            pass
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED

    watch = stub.WatchAnomalies(pb.WatchAnomaliesRequest(), metadata=bearer(EC2_TOKEN))  # "": my fleets
    while not len(server.service.hub):
        await asyncio.sleep(0.01)
    for fleet in ("machines", "ec2"):
        server.service.hub.publish(pb.Anomaly(fleet_id=fleet, request_id=fleet))
    first = await asyncio.wait_for(watch.read(), 5)
    assert (first.fleet_id, first.request_id) == ("ec2", "ec2")
    watch.cancel()


async def test_bearer_scheme_is_case_insensitive(tenants):
    _, stub, _ = tenants
    for scheme in ("bearer", "BEARER", "Bearer"):
        listed = await stub.ListModels(pb.ListModelsRequest(), metadata=bearer(EC2_TOKEN, scheme))
        assert [m.fleet_id for m in listed.models] == ["ec2"]
    for metadata in (bearer(EC2_TOKEN, "Basic"), bearer("unknown"), (("authorization", EC2_TOKEN),)):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.ListModels(pb.ListModelsRequest(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_and_reflection_need_no_token(tenants):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    _, _, channel = tenants
    health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    services = [s.name async for r in reflect for s in r.list_services_response.service]
    assert "aelstm.v1.AnomalyScorer" in services


def test_tokens_file_is_hashed_and_checked(tmp_path):
    path = tmp_path / "tokens.yaml"
    path.write_text('plain: "a, b"\nops: "*"\n')
    grants = read_tokens_file(path)
    assert grants == {hashlib.sha256(b"plain").hexdigest(): frozenset({"a", "b"}),
                      hashlib.sha256(b"ops").hexdigest(): None}
    path.write_text("plain: []\n")
    with pytest.raises(AelstmError, match="at least one fleet"):
        read_tokens_file(path)


def test_plaintext_tokens_on_a_network_address_are_refused(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("t: [a]\n")
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--tokens-file", str(tokens),
                                       "--registry", str(tmp_path / "r"), "--backend", "inprocess"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "--allow-plaintext-tokens" in lines[0]
    with pytest.raises(AelstmError, match="plaintext"):
        ServeConfig(host="10.1.2.3", tokens=("x",))
    assert ServeConfig(host="10.1.2.3", tokens=("x",), allow_plaintext_tokens=True).allow_plaintext_tokens
    assert ServeConfig(host="127.0.0.1", tokens=("x",)).tokens == ("x",)
    assert ServeConfig(host="::1", tokens=("x",)).tokens == ("x",)


def test_tokens_file_from_the_environment(tmp_path):
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text("t: [a]\n")
    result = CliRunner().invoke(main, ["serve", "--host", "0.0.0.0", "--registry", str(tmp_path / "r"),
                                       "--backend", "inprocess"], env={"AELSTM_TOKENS_FILE": str(tokens)})
    assert result.exit_code != 0 and "--allow-plaintext-tokens" in result.output
