"""Deploying the scoring application again, on a real local Ray Serve, under an ingress that keeps scoring: the
same settings restart nothing, live settings reach the running replicas, and a change that needs new replicas rolls
over without failing an item.

One Ray instance for the whole module (started and shut down by the `live` fixture). Bounded in time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import grpc
import numpy as np
import pytest
import pytest_asyncio

from aelstm.core.preprocess import sliding_windows
from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.ray_backend import deploy
from aelstm.server.registry import publish
from aelstm.server.scoring_app import APP_NAME, SCORER
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

pytestmark = [pytest.mark.integration, pytest.mark.asyncio(loop_scope="module")]


def application_actors() -> set[str]:
    """Named actors of every replica of the application, the model store's included (Serve names them
    SERVE_REPLICA::<app>#<deployment>#<replica id>: a replaced replica has a new name)."""
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{APP_NAME}#")}


async def replicas_answering() -> list[dict]:
    """What each running Scorer replica says of itself: process id and live settings."""
    from ray import serve

    return await serve.get_deployment_handle(SCORER, APP_NAME).broadcast("where").results_async(timeout_s=60)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live(tmp_path_factory, ec2_bundle):
    registry = tmp_path_factory.mktemp("registry")
    publish(ec2_bundle.path, registry, "ec2")
    server = ScoringServer(ServeConfig(port=0, backend="ray", registry=str(registry), metrics_port=0, poll_s=0.2,
                                       replicas=1, cpus_per_replica=1.0, ray_cpus=2, drain_grace_s=5.0,
                                       scoring_budget_ms=60_000.0, backend_grace_s=30.0))
    try:
        await asyncio.wait_for(server.start(), 240)
        yield server
    finally:
        await server.stop(5)


@pytest_asyncio.fixture(loop_scope="module")
async def stub(live):
    async with grpc.aio.insecure_channel(live.address) as channel:
        yield pb_grpc.AnomalyScorerStub(channel)


def request(wire, ec2_bundle, i: int) -> pb.ScoreRequest:
    windows = sliding_windows(ec2_bundle.series.values.astype(np.float32), 16)
    return pb.ScoreRequest(request_id=f"r{i}", fleet_id="ec2",
                           items=[wire.window(f"d{k}", windows[(i * 4 + k) % len(windows)]) for k in range(4)])


async def test_deploying_the_same_settings_again_restarts_nothing(live, stub, wire, ec2_bundle):
    actors, answering = await asyncio.to_thread(application_actors), await replicas_answering()
    assert len(actors) == 2  # one Scorer, one model store
    await asyncio.to_thread(deploy, live.config.scorer())
    assert await asyncio.to_thread(application_actors) == actors
    assert [a["pid"] for a in await replicas_answering()] == [a["pid"] for a in answering]
    scored = await stub.Score(request(wire, ec2_bundle, 0))
    assert {r.status for r in scored.results} == {pb.ITEM_STATUS_OK}


async def test_live_settings_reach_the_running_replicas(live, stub, wire, ec2_bundle):
    actors, answering = await asyncio.to_thread(application_actors), await replicas_answering()
    tuned = replace(live.config.scorer(), max_batch=128, replica_batch_wait_ms=1.0, threads_per_replica=2)
    await asyncio.to_thread(deploy, tuned)
    deadline = time.monotonic() + 60
    while (now := await replicas_answering())[0]["tuning"] != tuned.tuning():
        assert time.monotonic() < deadline, f"the replica still runs with {now[0]['tuning']}"
        await asyncio.sleep(0.2)
    assert [a["pid"] for a in now] == [a["pid"] for a in answering]
    assert await asyncio.to_thread(application_actors) == actors
    scored = await stub.Score(request(wire, ec2_bundle, 1))  # through @serve.batch now, with 2 threads
    assert {r.status for r in scored.results} == {pb.ITEM_STATUS_OK}


async def test_a_change_that_needs_new_replicas_rolls_over_without_failing_an_item(live, stub, wire, ec2_bundle):
    actors = await asyncio.to_thread(application_actors)
    results: list[tuple[float, pb.ScoreResponse]] = []
    stop = asyncio.Event()

    async def steady_load() -> None:  # about 25 requests (100 windows) a second
        i = 0
        while not stop.is_set():
            sent = time.monotonic()
            response = await stub.Score(request(wire, ec2_bundle, i), timeout=60)
            results.append((time.monotonic() - sent, response))
            i += 1
            await asyncio.sleep(0.04)

    load = asyncio.create_task(steady_load())
    try:
        await asyncio.sleep(1.0)
        await asyncio.to_thread(deploy, replace(live.config.scorer(), models_per_replica=3))
        deadline = time.monotonic() + 120
        while (await asyncio.to_thread(application_actors)) & actors or not live.serving:
            assert time.monotonic() < deadline, "the application was not rolled over within 120 s"
            await asyncio.sleep(0.2)
        served_after = len(results)
        while len(results) < served_after + 25:  # the new replicas score too
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await load
    failed = [r.error.message for _, response in results for r in response.results if r.status != pb.ITEM_STATUS_OK]
    assert not failed, (len(failed), failed[:3])
    slowest = max(took for took, _ in results)
    print(f"rolled over under load: {len(results)} requests, all {4 * len(results)} items OK, slowest {slowest:.2f} s")
