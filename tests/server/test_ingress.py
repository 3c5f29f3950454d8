"""The gRPC ingress over real gRPC on 127.0.0.1, scoring in-process with onnxruntime (no Ray)."""

from __future__ import annotations

import asyncio
import math
import shutil

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aelstm.core.bundle import load_bundle
from aelstm.core.preprocess import sliding_windows
from aelstm.core.runtime import BundleScorer
from aelstm.server.app import ScoringServer
from aelstm.server.backend import BackendUnavailable, InProcessBackend
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

OK, WARMING, ERROR = pb.ITEM_STATUS_OK, pb.ITEM_STATUS_WARMING_UP, pb.ITEM_STATUS_ERROR
INVALID_ARGUMENT, NOT_FOUND, RESOURCE_EXHAUSTED = 3, 5, 8


def config(registry, **overrides) -> ServeConfig:
    settings = dict(port=0, backend="inprocess", registry=str(registry), metrics_port=0, poll_s=60.0,
                    batch_wait_ms=1.0, drain_grace_s=5.0)
    return ServeConfig(**{**settings, **overrides})


@pytest_asyncio.fixture
async def registry(tmp_path, ec2_bundle, machine_bundle):
    publish(ec2_bundle.path, tmp_path, "ec2")
    publish(machine_bundle.path, tmp_path, "machines")
    return tmp_path


@pytest_asyncio.fixture
async def server(registry):
    server = ScoringServer(config(registry, max_items=8, max_readings_per_item=64))
    await server.start()
    yield server
    await server.stop(0)


def ec2_windows(ec2_bundle, count: int) -> np.ndarray:
    values = ec2_bundle.series.values.astype(np.float32)
    return sliding_windows(values, 16)[:count]


async def test_stream_answers_every_request_once_with_the_offline_scores(stub, wire, ec2_bundle):
    windows = ec2_windows(ec2_bundle, 40)
    requests = [pb.ScoreRequest(request_id=f"r{i}", fleet_id="ec2",
                                items=[wire.window(f"d{k}", w, packed=k % 2 == 0)
                                       for k, w in enumerate(windows[i * 4 : i * 4 + 4])])
                for i in range(10)]
    answers = await wire.stream(stub, requests)
    assert sorted(answers) == sorted(r.request_id for r in requests)
    assert all(len(responses) == 1 for responses in answers.values())
    expected = BundleScorer(load_bundle(ec2_bundle.path), device="cpu").score(windows)
    got = np.concatenate([[item.score for item in answers[f"r{i}"][0].results] for i in range(10)])
    np.testing.assert_allclose(got, expected.score, rtol=1e-5)
    first = answers["r0"][0].results[0]
    assert (first.status, first.model_name, first.model_version) == (OK, "ec2-latency", "1")
    assert math.isclose(first.score, first.rec_part + first.pred_part, rel_tol=1e-5)


async def test_bad_items_get_item_errors_and_the_stream_goes_on(stub, wire, ec2_bundle):
    good = ec2_windows(ec2_bundle, 1)[0]
    nan_only = np.full_like(good, np.nan)
    gappy = good.copy()
    gappy[3:6] = np.nan
    infinite = good.copy()
    infinite[2] = np.inf
    broken = pb.Item(device_id="x", window=pb.Tensor(shape=[16, 1], packed=b"\0" * 10))
    bad = pb.ScoreRequest(request_id="bad", fleet_id="ec2", items=[
        wire.window("short", good[:15]), wire.window("nan", nan_only), wire.window("inf", infinite), broken,
        pb.Item(device_id="empty"), wire.window("", good), wire.window("gappy", gappy),
        wire.readings("many", np.zeros((65, 1))),
    ])
    unknown = pb.ScoreRequest(request_id="unknown", fleet_id="nobody", items=[wire.window("a", good)])
    oversize = pb.ScoreRequest(request_id="big", fleet_id="ec2", items=[wire.window("a", good)] * 9)
    after = pb.ScoreRequest(request_id="after", fleet_id="ec2", items=[wire.window("a", good)])
    answers = await wire.stream(stub, [bad, unknown, oversize, after])
    results = answers["bad"][0].results
    assert [r.status for r in results] == [ERROR] * 6 + [OK, ERROR]
    assert [r.error.code for r in results] == [INVALID_ARGUMENT] * 6 + [0, RESOURCE_EXHAUSTED]
    assert "expected [window=16, features=1]" in results[0].error.message
    assert "only NaN" in results[1].error.message
    assert "Inf" in results[2].error.message
    assert "packed bytes" in results[3].error.message
    assert [r.device_id for r in results][:3] == ["short", "nan", "inf"]
    assert answers["unknown"][0].results[0].error.code == NOT_FOUND
    assert "aelstm publish" in answers["unknown"][0].results[0].error.message
    assert {r.error.code for r in answers["big"][0].results} == {RESOURCE_EXHAUSTED}
    assert answers["after"][0].results[0].status == OK


async def test_readings_warm_up_then_score_the_window_ending_at_the_last_reading(stub, wire, ec2_bundle):
    values = ec2_bundle.series.values[:20].astype(np.float32)
    first = await stub.Score(pb.ScoreRequest(request_id="1", fleet_id="ec2",
                                             items=[wire.readings("dev", values[:10], timestamp_ms=7)]))
    result = first.results[0]
    assert (result.status, result.readings_held, result.readings_needed, result.timestamp_ms) == (WARMING, 10, 16, 7)
    second = await stub.Score(pb.ScoreRequest(request_id="2", fleet_id="ec2", items=[
        wire.readings("dev", values[10:16]), wire.readings("dev", values[16:20])]))
    expected = BundleScorer(load_bundle(ec2_bundle.path), device="cpu").score(np.stack([values[:16], values[4:20]]))
    assert [r.status for r in second.results] == [OK, OK]
    np.testing.assert_allclose([r.score for r in second.results], expected.score, rtol=1e-5)


async def test_models_are_listed_and_described(stub):
    listed = await stub.ListModels(pb.ListModelsRequest())
    assert sorted((m.fleet_id, m.model_name, m.model_version) for m in listed.models) == [
        ("ec2", "ec2-latency", "1"), ("machines", "machine-temp", "1")]
    model = await stub.GetModel(pb.GetModelRequest(fleet_id="machines"))
    assert (model.window, list(model.features), model.is_default) == (16, ["value"], False)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetModel(pb.GetModelRequest(fleet_id="nobody"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_default_model_serves_fleets_without_their_own(registry, ec2_bundle, wire):
    server = ScoringServer(config(registry, default_bundle=str(ec2_bundle.path)))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.AnomalyScorerStub(channel)
            model = await stub.GetModel(pb.GetModelRequest(fleet_id="new-fleet"))
            assert (model.is_default, model.fleet_id, model.model_name) == (True, "", "ec2-latency")
            response = await stub.Score(pb.ScoreRequest(request_id="r", fleet_id="new-fleet",
                                                        items=[wire.window("d", ec2_windows(ec2_bundle, 1)[0])]))
            assert response.results[0].status == OK
    finally:
        await server.stop(0)


async def test_watchers_receive_flagged_items_of_their_fleet(server, stub, wire, ec2_bundle):
    spike = ec2_windows(ec2_bundle, 1)[0].copy()
    spike[-1] = spike.max() * 20  # far outside anything the model saw as normal
    ec2_watch = stub.WatchAnomalies(pb.WatchAnomaliesRequest(fleet_id="ec2"))
    other_watch = stub.WatchAnomalies(pb.WatchAnomaliesRequest(fleet_id="machines"))
    while len(server.service.hub) < 2:
        await asyncio.sleep(0.01)
    response = await stub.Score(pb.ScoreRequest(request_id="spike", fleet_id="ec2", items=[
        wire.window("calm", ec2_windows(ec2_bundle, 1)[0]), wire.window("hot", spike)]))
    assert [r.is_anomaly for r in response.results] == [False, True]
    anomaly = await asyncio.wait_for(ec2_watch.read(), timeout=10)
    assert (anomaly.fleet_id, anomaly.request_id, anomaly.result.device_id) == ("ec2", "spike", "hot")
    assert server.service.hub._watchers and all(
        w.queue.empty() for w in server.service.hub._watchers if w.fleet == "machines")
    ec2_watch.cancel()
    other_watch.cancel()


async def test_hot_swap_serves_the_new_version_and_refuses_a_broken_one(server, stub, registry, wire,
                                                                          ec2_bundle):
    item = wire.window("d", ec2_windows(ec2_bundle, 1)[0])

    async def version() -> str:
        response = await stub.Score(pb.ScoreRequest(request_id="v", fleet_id="ec2", items=[item]))
        return response.results[0].model_version

    assert await version() == "1"
    publish(ec2_bundle.path, registry, "ec2")
    assert await server.models.refresh()
    assert await version() == "2"
    broken = registry / "ec2" / "3"
    shutil.copytree(registry / "ec2" / "2", broken)
    (broken / "model.onnx").write_bytes(b"corrupt")
    assert not await server.models.refresh()
    assert await version() == "2"
    assert server.models.scanner.refusals == 1


async def test_health_is_not_serving_until_a_model_is_published(tmp_path, ec2_bundle):
    server = ScoringServer(config(tmp_path))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = (await health.Check(health_pb2.HealthCheckRequest())).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            alive = (await health.Check(health_pb2.HealthCheckRequest(service="aelstm.liveness"))).status
            assert alive == health_pb2.HealthCheckResponse.SERVING  # not ready, yet alive: no restart
            publish(ec2_bundle.path, tmp_path, "ec2")
            await server.models.refresh()
            await asyncio.sleep(0.05)  # the health update is scheduled on the loop
            status = (await health.Check(health_pb2.HealthCheckRequest(service="aelstm.v1.AnomalyScorer"))).status
            assert status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)


async def test_bearer_tokens(registry):
    server = ScoringServer(config(registry, tokens=("s3cret",)))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.AnomalyScorerStub(channel)
            for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", "s3cret"),)):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.ListModels(pb.ListModelsRequest(), metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            stream = stub.StreamScore(metadata=(("authorization", "Bearer nope"),))
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stream.read()
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            listed = await stub.ListModels(pb.ListModelsRequest(), metadata=(("authorization", "Bearer s3cret"),))
            assert len(listed.models) == 2
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await server.stop(0)


class GatedBackend(InProcessBackend):
    """Scores only once `gate` opens: requests stay in flight as long as a test needs."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.received = 0

    async def score(self, key, windows):
        self.received += len(windows)
        await self.gate.wait()
        return await super().score(key, windows)


async def test_stop_answers_what_was_received_then_ends_streams_with_unavailable(registry, wire, ec2_bundle):
    backend = GatedBackend()
    server = ScoringServer(config(registry), backend=backend)
    await server.start()
    windows = ec2_windows(ec2_bundle, 4)
    async with grpc.aio.insecure_channel(server.address) as channel:
        call = pb_grpc.AnomalyScorerStub(channel).StreamScore()
        for i in range(4):
            await call.write(pb.ScoreRequest(request_id=str(i), fleet_id="ec2", items=[wire.window("d", windows[i])]))

        async def received() -> None:  # all four read by the server, none answered
            while backend.received + sum(q.windows for q in server.coalescer._queues.values()) < 4:
                await asyncio.sleep(0.005)

        await asyncio.wait_for(received(), timeout=30)
        stopping = asyncio.ensure_future(server.stop(5))
        await asyncio.sleep(0.1)
        backend.gate.set()
        answered = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            while True:
                answered.append((await asyncio.wait_for(call.read(), timeout=30)).request_id)
        await stopping
    assert sorted(answered) == ["0", "1", "2", "3"]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


class ReplacingBackend(InProcessBackend):
    """Its application is forever being replaced: every call is refused as during a rollout."""

    async def score(self, key, windows):
        raise BackendUnavailable("the scoring application is being replaced (ActorDiedError)")


async def test_a_held_call_answers_unavailable_before_its_callers_deadline_not_after_the_grace(registry, wire,
                                                                                               ec2_bundle):
    server = ScoringServer(config(registry, backend_grace_s=60.0), backend=ReplacingBackend())
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            window = ec2_windows(ec2_bundle, 1)[0]
            request = pb.ScoreRequest(request_id="d", fleet_id="ec2", items=[wire.window("d", window)])
            started = asyncio.get_running_loop().time()
            response = await pb_grpc.AnomalyScorerStub(channel).Score(request, timeout=1.0)
            answered_s = asyncio.get_running_loop().time() - started
        # held while the caller could still get scores, then told UNAVAILABLE (to retry), not left 60 s in a call
        # whose caller has gone
        assert response.results[0].error.code == grpc.StatusCode.UNAVAILABLE.value[0]
        assert 0.3 < answered_s < 1.0
        sample = server.metrics.registry.get_sample_value
        assert sample("aelstm_backend_held_calls_total", {"outcome": "gave_up"}) == 1
    finally:
        await server.stop(0)


async def test_metrics_count_requests_items_and_batches(server, stub, wire, ec2_bundle):
    window = ec2_windows(ec2_bundle, 1)[0]
    await stub.Score(pb.ScoreRequest(request_id="m", fleet_id="ec2", items=[
        wire.window("a", window), wire.window("b", window[:3])]))
    sample = server.metrics.registry.get_sample_value
    assert sample("aelstm_requests_total", {"fleet": "ec2", "rpc": "Score"}) == 1
    assert sample("aelstm_items_total", {"fleet": "ec2", "status": "ok"}) == 1
    assert sample("aelstm_items_total", {"fleet": "ec2", "status": "invalid_argument"}) == 1
    assert sample("aelstm_backend_batch_windows_count") >= 1
    assert sample("aelstm_models_loaded") == 2


async def test_messages_over_the_size_limit_are_refused(registry, wire):
    server = ScoringServer(config(registry, max_message_mb=1))
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.AnomalyScorerStub(channel)
            huge = pb.ScoreRequest(request_id="huge", fleet_id="ec2",
                                   items=[wire.readings("d", np.zeros((300_000, 1)))])  # 1.2 MB
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Score(huge)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            small = await stub.Score(pb.ScoreRequest(request_id="ok", fleet_id="ec2",
                                                     items=[wire.readings("d", np.zeros((2, 1)))]))
            assert small.results[0].status == WARMING
    finally:
        await server.stop(0)


async def test_the_server_times_every_stage_of_a_request(server, stub, ec2_bundle, wire):
    request = pb.ScoreRequest(request_id="t", fleet_id="ec2",
                              items=[wire.window("d", w) for w in ec2_windows(ec2_bundle, 3)])
    await stub.Score(request)
    registry = server.metrics.registry
    for stage in ("prepare", "queue", "call", "compute", "respond"):
        count = registry.get_sample_value("aelstm_stage_seconds_count", {"stage": stage})
        assert count and count >= 1, stage
    compute = registry.get_sample_value("aelstm_stage_seconds_sum", {"stage": "compute"})
    call = registry.get_sample_value("aelstm_stage_seconds_sum", {"stage": "call"})
    assert 0 < compute <= call
    assert registry.get_sample_value("aelstm_backend_replicas") == 1  # one scoring thread


async def test_the_scoring_seam_answers_without_any_transport(server, stub, wire, ec2_bundle):
    windows = ec2_windows(ec2_bundle, 3)

    def request(reader: str) -> pb.ScoreRequest:  # a device of its own for each path: the same readings, fresh
        return pb.ScoreRequest(request_id="seam", fleet_id="ec2", items=[
            wire.window("a", windows[0]), wire.window("b", windows[1][:4]), wire.readings(reader, windows[2])])

    direct = await server.scorer.score_request(request("c"))
    over_grpc = await stub.Score(request("c2"))
    assert [r.status for r in direct.results] == [OK, ERROR, OK]
    for a, b in zip(direct.results, over_grpc.results, strict=True):
        assert (a.status, a.score, a.is_anomaly, a.error.code) == (b.status, b.score, b.is_anomaly, b.error.code)
