"""What a client cannot do to the ingress, whatever it sends: end a stream for others, grow memory without bound,
get an infinite score, double-append a retried reading; and how streams end on drain."""

from __future__ import annotations

import asyncio
import gc
import socket
import time

import grpc
import numpy as np
import pytest
import pytest_asyncio

from aelstm.core.bundle import load_bundle, write_manifest
from aelstm.core.policy import Policy
from aelstm.core.runtime import BundleScorer, Scores
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


def good_window(ec2_bundle) -> np.ndarray:
    return ec2_bundle.series.values[:16].astype(np.float32).reshape(16, 1)


async def test_a_huge_unknown_fleet_id_gets_invalid_argument_and_the_stream_goes_on(stub, wire, ec2_bundle):
    window = good_window(ec2_bundle)
    huge = pb.ScoreRequest(request_id="huge", fleet_id="f" * 16384,
                           items=[pb.Item(device_id=f"d{i}") for i in range(1100)])
    long_request = pb.ScoreRequest(request_id="r" * 300, fleet_id="ec2", items=[wire.window("a", window)])
    long_device = pb.ScoreRequest(request_id="device", fleet_id="ec2",
                                  items=[wire.window("é" * 200, window), wire.window("ok", window)])
    unknown = pb.ScoreRequest(request_id="unknown", fleet_id="g" * 200, items=[wire.window("a", window)])
    after = pb.ScoreRequest(request_id="after", fleet_id="ec2", items=[wire.window("a", window)])
    answers = await wire.stream(stub, [huge, long_request, long_device, unknown, after])
    response = answers["huge"][0]
    assert response.fleet_id == "" and response.ByteSize() < 200_000
    assert {r.error.code for r in response.results} == {INVALID_ARGUMENT} and len(response.results) == 1100
    assert "fleet_id is 16384 bytes, the limit is 256" in response.results[0].error.message
    refused = answers[""][0]
    assert refused.results[0].error.code == INVALID_ARGUMENT and "request_id" in refused.results[0].error.message
    device = answers["device"][0].results
    assert (device[0].status, device[0].error.code, device[0].device_id) == (ERROR, INVALID_ARGUMENT, "")
    assert "device_id is 400 bytes" in device[0].error.message and device[1].status == OK
    message = answers["unknown"][0].results[0].error.message
    assert answers["unknown"][0].results[0].error.code == NOT_FOUND and len(message) < 300
    assert answers["after"][0].results[0].status == OK


async def test_a_response_over_the_send_limit_degrades_to_compact_item_errors(registry, wire):
    server = await started(registry, max_message_mb=1, max_items=10_000)
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.AnomalyScorerStub(channel)
            # 0.9 MB in, ~1.6 MB of NOT_FOUND errors echoing each 200-byte device id out.
            big = pb.ScoreRequest(request_id="big", fleet_id="nobody",
                                  items=[pb.Item(device_id=f"{i:05d}" + "x" * 195) for i in range(4500)])
            assert big.ByteSize() < 1024 * 1024
            after = pb.ScoreRequest(request_id="after", fleet_id="nobody", items=[pb.Item(device_id="a")])
            answers = await wire.stream(stub, [big, after])
    finally:
        await server.stop(0)
    response = answers["big"][0]
    assert response.ByteSize() <= 1024 * 1024 and len(response.results) == 4500
    assert {r.error.code for r in response.results} == {RESOURCE_EXHAUSTED}
    assert "send fewer items" in response.results[0].error.message
    assert answers["after"][0].results[0].error.code == NOT_FOUND


async def test_only_fleets_with_a_model_get_a_metrics_label(server, stub, wire, ec2_bundle):
    window = good_window(ec2_bundle)
    for i in range(50):
        await stub.Score(pb.ScoreRequest(request_id=str(i), fleet_id=f"random-{i}", items=[wire.window("a", window)]))
    await stub.Score(pb.ScoreRequest(request_id="ec2", fleet_id="ec2", items=[wire.window("a", window)]))
    fleets = {sample.labels["fleet"] for metric in server.metrics.requests.collect() for sample in metric.samples}
    items = {sample.labels["fleet"] for metric in server.metrics.items.collect() for sample in metric.samples}
    assert fleets == items == {"ec2", "other"}


class _Context:
    """The parts of grpc.aio.ServicerContext a stream touches; no deadline, as a caller that set none."""

    def time_remaining(self):
        return None

    async def abort(self, code, details):
        raise AssertionError(f"aborted: {code} {details}")


async def test_a_client_that_stops_reading_stops_the_server_reading(registry, wire, ec2_bundle):
    server = await started(registry, max_in_flight_per_stream=4)
    pulled = 0
    window = good_window(ec2_bundle)

    async def requests():
        nonlocal pulled
        while True:
            pulled += 1
            yield pb.ScoreRequest(request_id=str(pulled), fleet_id="ec2", items=[wire.window("a", window)])

    responses = server.service.StreamScore(requests(), _Context())
    try:
        await anext(responses)  # one response read, then the client reads no more
        await asyncio.sleep(0.5)
        assert pulled <= 4 + 1  # the slots, plus at most the response being handed over
    finally:
        await responses.aclose()
        await server.stop(0)


async def test_a_resent_reading_is_not_appended_twice(server, stub, wire, ec2_bundle):
    values = ec2_bundle.series.values[:20].astype(np.float32).reshape(-1, 1)
    score = server.coalescer.score
    failures = 1

    async def failing_once(key, windows):
        nonlocal failures
        if failures:
            failures -= 1
            raise RuntimeError("replica lost")
        return await score(key, windows)

    server.coalescer.score = failing_once
    first = await stub.Score(pb.ScoreRequest(request_id="1", fleet_id="ec2",
                                             items=[wire.readings("d", values[:16], timestamp_ms=16)]))
    assert first.results[0].error.code == UNAVAILABLE
    resent = await stub.Score(pb.ScoreRequest(request_id="1", fleet_id="ec2",
                                              items=[wire.readings("d", values[:16], timestamp_ms=16)]))
    expected = BundleScorer(load_bundle(ec2_bundle.path), device="cpu").score(values[None, :16])
    assert resent.results[0].status == OK
    np.testing.assert_allclose(resent.results[0].score, expected.score[0], rtol=1e-5)
    older = await stub.Score(pb.ScoreRequest(request_id="2", fleet_id="ec2",
                                             items=[wire.readings("d", values[16:18], timestamp_ms=15)]))
    assert older.results[0].error.code == grpc.StatusCode.OUT_OF_RANGE.value[0]  # late data: never appended
    again = await stub.Score(pb.ScoreRequest(request_id="1", fleet_id="ec2",
                                             items=[wire.readings("d", values[:16], timestamp_ms=16)]))
    assert again.results[0] == resent.results[0]
    # Without a timestamp (0) readings are always appended.
    plain = [await stub.Score(pb.ScoreRequest(request_id="3", fleet_id="ec2", items=[
        wire.readings("p", values[:10])])) for _ in range(2)]
    assert [p.results[0].readings_held for p in plain] == [10, 0] and plain[1].results[0].status == OK


@pytest.mark.parametrize("payload", ["window", "readings"])
async def test_huge_values_are_refused_naming_the_limit(stub, wire, ec2_bundle, payload):
    window = good_window(ec2_bundle)
    window[5] = 1e19
    item = wire.window("a", window) if payload == "window" else wire.readings("a", window)
    response = await stub.Score(pb.ScoreRequest(request_id="x", fleet_id="ec2", items=[item]))
    result = response.results[0]
    assert (result.status, result.error.code) == (ERROR, INVALID_ARGUMENT)
    assert "outside [" in result.error.message and "overflow" in result.error.message


async def test_a_non_finite_score_is_never_returned(server, stub, wire, ec2_bundle):
    async def infinite(key, windows):
        n = len(windows)
        return Scores(np.array([np.inf, 1.0][:n] * n, np.float32)[:n], np.zeros(n, np.float32),
                      np.zeros(n, np.float32))

    server.coalescer.score = infinite
    window = good_window(ec2_bundle)
    response = await stub.Score(pb.ScoreRequest(request_id="x", fleet_id="ec2",
                                                items=[wire.window("a", window), wire.window("b", window)]))
    first, second = response.results
    assert (first.status, first.error.code) == (ERROR, INTERNAL) and "non-finite" in first.error.message
    assert second.status == OK and np.isfinite(second.score)


async def test_cancelling_an_idle_stream_leaves_no_unretrieved_task(server):
    problems = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: problems.append(context.get("message")))
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            call = pb_grpc.AnomalyScorerStub(channel).StreamScore()
            await asyncio.sleep(0.3)  # the server waits for a first request
            call.cancel()
            await asyncio.sleep(0.5)
        for _ in range(3):
            gc.collect()
            await asyncio.sleep(0.05)
    finally:
        loop.set_exception_handler(None)
    assert not [p for p in problems if "never retrieved" in str(p)], problems


async def test_watchers_end_with_unavailable_on_drain(registry):
    server = await started(registry)
    async with grpc.aio.insecure_channel(server.address) as channel:
        watch = pb_grpc.AnomalyScorerStub(channel).WatchAnomalies(pb.WatchAnomaliesRequest())
        await asyncio.sleep(0.3)
        stopping = asyncio.create_task(server.stop(5))
        with pytest.raises(grpc.aio.AioRpcError) as ended:
            async for _ in watch:
                pass
        await stopping
    assert ended.value.code() == grpc.StatusCode.UNAVAILABLE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_stopping_the_metrics_server_does_not_block_the_event_loop(registry):
    server = await started(registry, metrics_port=free_port())
    gaps, last = [], asyncio.get_running_loop().time()

    async def tick():
        nonlocal last
        while True:
            await asyncio.sleep(0.01)
            now = asyncio.get_running_loop().time()
            gaps.append(now - last)
            last = now

    http = server._metrics_http
    shutdown = http.shutdown
    # shutdown() waits for the serving thread's next 0.5 s poll: make it always take that long.
    http.shutdown = lambda: (time.sleep(0.5), shutdown())
    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.05)
    await server.stop(0)
    await asyncio.sleep(0.05)  # the ticker's next tick measures the gap a blocking stop would leave
    ticker.cancel()
    assert max(gaps) < 0.2, max(gaps)


async def test_a_threshold_that_fell_back_is_reported_with_its_policy(tmp_path, ec2_bundle):
    import json
    import shutil

    bundle = tmp_path / "fallback"
    shutil.copytree(ec2_bundle.path, bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    threshold = Policy.from_dict(manifest["policy"]).threshold_index
    fitted = manifest["policy"]["rules"][threshold]["fitted_state"]  # as the fit records too few scores for a tail
    fitted["params"]["fallback"] = "too few scores for a tail fit, 12 < 20"
    fitted.pop("streaming", None)
    write_manifest(bundle, manifest)
    publish(bundle, tmp_path / "registry", "fb")
    server = await started(tmp_path / "registry")
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.AnomalyScorerStub(channel)
            info = await stub.GetModel(pb.GetModelRequest(fleet_id="fb"))
            listed = (await stub.ListModels(pb.ListModelsRequest())).models
    finally:
        await server.stop(0)
    spec = load_bundle(bundle).policy.spec
    assert info.threshold_method == f"{spec} (fallback: too few scores for a tail fit, 12 < 20)"
    assert [m.threshold_method for m in listed] == [info.threshold_method]
