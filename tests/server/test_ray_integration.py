"""End to end on a real local Ray Serve: the real gRPC ingress, concurrent bidi streams of real NAB data from
several clients and two fleets, bad items, anomaly watchers, health, and a hot model swap mid-stream.

One Ray instance for the whole module (started and shut down by the `live` fixture).
"""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest
import pytest_asyncio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aelstm.core.bundle import load_bundle
from aelstm.core.preprocess import sliding_windows
from aelstm.core.runtime import BundleScorer
from aelstm.core.scoring import labelled_events
from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]

SERVING = health_pb2.HealthCheckResponse.SERVING
# These tests send bursts as fast as they can to check what is scored, not admission (test_overload.py does): a queue
# budget no burst here reaches, so nothing is refused.
NO_REFUSAL_MS = 60_000.0


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(tmp_path_factory, ec2_bundle, machine_bundle):
    """A server on Ray Serve; also records the health statuses seen while it started."""
    registry = tmp_path_factory.mktemp("registry")
    publish(ec2_bundle.path, registry, "ec2")
    publish(machine_bundle.path, registry, "machines")
    server = ScoringServer(ServeConfig(port=0, backend="ray", registry=str(registry), metrics_port=0, poll_s=0.2,
                                       max_batch=256, batch_wait_ms=2.0, ray_cpus=2, drain_grace_s=5.0,
                                       scoring_budget_ms=NO_REFUSAL_MS))
    starting = asyncio.ensure_future(server.start())
    seen = []
    try:
        while server.port is None and not starting.done():
            await asyncio.sleep(0.01)
        if starting.done():
            starting.result()  # a start that failed says why
        async with grpc.aio.insecure_channel(server.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while not seen or seen[-1][0] != SERVING:
                asked = time.monotonic()
                status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=10)).status
                seen.append((status, time.monotonic() - asked))
                await asyncio.sleep(0.05)
        await starting
        yield server, registry, seen
    finally:
        await asyncio.gather(starting, return_exceptions=True)
        await server.stop(5)


@pytest_asyncio.fixture(loop_scope="module")
async def stub(live):
    server = live[0]
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.AnomalyScorerStub(channel)


async def test_health_goes_from_not_serving_to_serving_and_answers_while_ray_starts(live):
    seen = live[2]
    assert seen[0][0] == health_pb2.HealthCheckResponse.NOT_SERVING
    assert seen[-1][0] == SERVING
    assert len(seen) > 10  # Ray took a while to start, and health kept answering meanwhile...
    assert max(took for _, took in seen) < 1.0  # ...at once: starting Ray does not block the event loop


def readings_requests(series, fleet: str, device: str, per_request: int) -> list[pb.ScoreRequest]:
    """The whole series as one-reading items, `per_request` of them per request, in time order."""
    values = series.values.astype(np.float32)
    return [pb.ScoreRequest(request_id=f"{device}-{start}", fleet_id=fleet, items=[
        pb.Item(device_id=device, timestamp_ms=row,
                readings=pb.Tensor(shape=[1, values.shape[1]], packed=values[row : row + 1].tobytes()))
        for row in range(start, min(start + per_request, len(values)))])
        for start in range(0, len(values), per_request)]


def window_requests(series, fleet: str, device: str, per_request: int, count: int, bad_every: int = 0):
    """Whole windows; every `bad_every`-th request also carries a window of the wrong shape."""
    windows = sliding_windows(series.values.astype(np.float32), 16)[:count]
    requests = []
    for n, start in enumerate(range(0, len(windows), per_request)):
        items = [pb.Item(device_id=device, timestamp_ms=start + k + 15,
                         window=pb.Tensor(shape=[16, 1], packed=w.tobytes()))
                 for k, w in enumerate(windows[start : start + per_request])]
        if bad_every and n % bad_every == 0:
            items.insert(1, pb.Item(device_id="bad", window=pb.Tensor(shape=[8, 1], packed=windows[0][:8].tobytes())))
        requests.append(pb.ScoreRequest(request_id=f"{device}-{n}", fleet_id=fleet, items=items))
    return requests


async def test_concurrent_streams_of_two_fleets(live, stub, wire, ec2_bundle, machine_bundle):
    server = live[0]
    ec2 = ec2_bundle.series
    gateways = {
        "ec2-readings": readings_requests(ec2, "ec2", "gw-a", per_request=32),
        "ec2-windows": window_requests(ec2, "ec2", "gw-b", per_request=64, count=2000, bad_every=5),
        "machine-windows": window_requests(machine_bundle.series, "machines", "gw-c", per_request=128, count=3000),
    }
    watch = stub.WatchAnomalies(pb.WatchAnomaliesRequest(fleet_id="ec2"))
    while not len(server.service.hub):
        await asyncio.sleep(0.01)
    answers = dict(zip(gateways, await asyncio.gather(*(wire.stream(stub, r) for r in gateways.values())),
                       strict=True))

    for name, requests in gateways.items():  # every request answered exactly once, every item in order
        assert sorted(answers[name]) == sorted(r.request_id for r in requests), name
        for request in requests:
            (response,) = answers[name][request.request_id]
            assert [r.device_id for r in response.results] == [i.device_id for i in request.items]

    results = {name: [r for rs in answers[name].values() for r in rs[0].results] for name in gateways}
    assert {(r.model_name, r.model_version) for r in results["machine-windows"]} == {("machine-temp", "1")}
    windows_ok = [r for r in results["ec2-windows"] if r.device_id != "bad"]
    assert {(r.status, r.model_name, r.model_version) for r in windows_ok} == {(pb.ITEM_STATUS_OK, "ec2-latency", "1")}
    bad = [r for r in results["ec2-windows"] if r.device_id == "bad"]
    assert bad and {(r.status, r.error.code) for r in bad} == {(pb.ITEM_STATUS_ERROR, 3)}

    # Readings: the first 15 warm up, then one score per reading, equal to scoring the series offline.
    streamed = sorted(results["ec2-readings"], key=lambda r: r.timestamp_ms)
    assert [r.status for r in streamed[:15]] == [pb.ITEM_STATUS_WARMING_UP] * 15
    scored = streamed[15:]
    assert {r.status for r in scored} == {pb.ITEM_STATUS_OK}
    offline = BundleScorer(load_bundle(ec2_bundle.path), device="cpu").score(
        sliding_windows(ec2.values.astype(np.float32), 16))
    np.testing.assert_allclose([r.score for r in scored], offline.score, rtol=1e-4)

    # Flags land inside the labelled anomaly windows (threshold from normal training data only).
    flagged_rows = np.asarray([r.timestamp_ms for r in scored if r.is_anomaly])
    labels = ec2.labels.astype(bool)
    events = labelled_events(labels)
    hit = [a <= flagged_rows[(flagged_rows >= a)].min(initial=10**9) <= b for a, b in events]
    assert labels[flagged_rows].any(), "no flag inside a labelled window"
    assert sum(hit) >= 2, f"labelled events with a flag: {sum(hit)} of {len(events)}"

    # The watcher saw the flagged items of its fleet (both ec2 gateways).
    expected = sum(r.is_anomaly for r in scored) + sum(r.is_anomaly for r in windows_ok)
    received = [await asyncio.wait_for(watch.read(), timeout=10) for _ in range(expected)]
    assert {a.fleet_id for a in received} == {"ec2"}
    watch.cancel()


async def test_hot_swap_mid_stream_loses_no_request(live, stub, wire, machine_bundle):
    server, registry, _ = live
    requests = window_requests(machine_bundle.series, "machines", "gw-swap", per_request=4, count=400)

    async def between(i: int) -> None:
        if i == 30:
            publish(machine_bundle.path, registry, "machines")
        if i == 60:  # from here on the stream must see the new version
            for _ in range(600):
                if server.models.resolve("machines").version == "2":
                    break
                await asyncio.sleep(0.05)

    answers = await wire.stream(stub, requests, pause_s=0.005, between=between)
    assert sorted(answers) == sorted(r.request_id for r in requests)
    assert all(len(responses) == 1 for responses in answers.values())
    versions = [answers[r.request_id][0].results[0].model_version for r in requests]
    assert versions[0] == "1" and set(versions[60:]) == {"2"}
    assert versions == sorted(versions)  # never back to the old version once swapped
    assert {r.status for rs in answers.values() for r in rs[0].results} == {pb.ITEM_STATUS_OK}


async def test_ray_backend_reports_its_provider(live):
    server = live[0]
    entry = server.models.resolve("ec2")
    assert await server.backend.prepare(entry) in ("CPUExecutionProvider", "CUDAExecutionProvider")


async def test_two_fleets_sharing_replicas_get_their_own_models_scores(live, stub, wire, ec2_bundle, machine_bundle):
    """The same windows for two fleets at once: each score is the one its own model computes in the replica (the
    two models score these windows differently), never the other fleet's."""
    windows = sliding_windows(ec2_bundle.series.values.astype(np.float32), 16)[:64]
    offline = {fleet: BundleScorer(load_bundle(trained.path), device="cpu").score(windows).score
               for fleet, trained in (("ec2", ec2_bundle), ("machines", machine_bundle))}
    assert not np.allclose(offline["ec2"], offline["machines"], rtol=1e-3)
    requests = [pb.ScoreRequest(request_id=f"{fleet}-{i}", fleet_id=fleet,
                                items=[wire.window("d", windows[k]) for k in range(i, i + 8)])
                for i in range(0, 64, 8) for fleet in ("ec2", "machines")]  # interleaved, in flight together
    answers = await wire.stream(stub, requests)
    for fleet in ("ec2", "machines"):
        served = [r.score for i in range(0, 64, 8) for r in answers[f"{fleet}-{i}"][0].results]
        np.testing.assert_allclose(served, offline[fleet], rtol=1e-4)


async def test_a_device_moving_between_two_ingresses_of_the_cluster_keeps_its_state(live, wire, ec2_bundle):
    """A second ingress attached to the same cluster: the device's window and policy state travel through the
    cluster's handoff store, so its verdicts after the move are those of a device that never moved."""
    import ray

    server, registry, _ = live
    second = ScoringServer(ServeConfig(port=0, backend="ray", registry=str(registry), metrics_port=0, poll_s=0.2,
                                       ray_address=ray.get_runtime_context().gcs_address, drain_grace_s=5.0,
                                       scoring_budget_ms=NO_REFUSAL_MS))
    await second.start()
    try:
        deadline = time.monotonic() + 60
        while not second.serving and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert second.serving
        rows, move_at = 300, 150
        values = ec2_bundle.series.values[:rows].astype(np.float32) * 1.3  # off the training level: DSPOT adapts
        stayed = await wire.verdicts(server.address, "ec2", "ray-control", values, range(rows))
        before = await wire.verdicts(server.address, "ec2", "ray-mover", values, range(move_at))
        moved = await wire.verdicts(second.address, "ec2", "ray-mover", values, range(move_at, rows))
        assert {**before, **moved} == stayed
    finally:
        await second.stop(0)
    assert server.serving  # the attached ingress left the cluster's application running
