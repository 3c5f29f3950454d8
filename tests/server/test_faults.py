"""Faults on a real local Ray Serve: a Scorer replica killed mid-stream. Bounded in time."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import pytest

from aelstm.core.preprocess import sliding_windows
from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration


def scorer_replicas() -> list[dict]:
    """Named actors of the Scorer replicas (Serve names them SERVE_REPLICA::<app>#Scorer#<id>)."""
    import ray

    return [a for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::") and "#Scorer#" in a["name"]]


def kill_replica() -> str:
    import ray

    victim = scorer_replicas()[0]
    ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
    return victim["name"]


def running_scorers() -> int:
    from aelstm.server.ray_backend import running_replicas

    return running_replicas()


async def test_a_replica_killed_mid_stream_loses_no_request_and_is_replaced(tmp_path, ec2_bundle, wire):
    publish(ec2_bundle.path, tmp_path, "ec2")
    server = ScoringServer(ServeConfig(port=0, backend="ray", registry=str(tmp_path), metrics_port=0, poll_s=0.5,
                                       replicas=2, cpus_per_replica=0.5, ray_cpus=2, drain_grace_s=5.0,
                                       scoring_budget_ms=60_000.0))  # the stall while a replica is replaced: waited out
    await asyncio.wait_for(server.start(), 240)
    try:
        assert len(scorer_replicas()) == 2
        windows = sliding_windows(ec2_bundle.series.values.astype(np.float32), 16)
        requests = [pb.ScoreRequest(request_id=f"r{i}", fleet_id="ec2",
                                    items=[wire.window(f"d{k}", windows[(i * 8 + k) % len(windows)])
                                           for k in range(8)])
                    for i in range(200)]
        killed = []

        async def between(i: int) -> None:
            if i == 60:  # mid-stream, with requests in flight
                killed.append(await asyncio.to_thread(kill_replica))

        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.AnomalyScorerStub(channel)
            answers = await asyncio.wait_for(wire.stream(stub, requests, pause_s=0.01, between=between), 120)
            assert killed
            assert sorted(answers) == sorted(r.request_id for r in requests)  # one answer each, stream open
            assert all(len(responses) == 1 for responses in answers.values())
            statuses = {r.status for responses in answers.values() for r in responses[0].results}
            assert statuses == {pb.ITEM_STATUS_OK}, [r.error.message for rs in answers.values()
                                                     for r in rs[0].results if r.status != pb.ITEM_STATUS_OK][:3]
            deadline = time.monotonic() + 90  # Ray Serve replaces the dead replica
            while time.monotonic() < deadline:
                names = {a["name"] for a in await asyncio.to_thread(scorer_replicas)}
                if await asyncio.to_thread(running_scorers) == 2 and killed[0] not in names:
                    break
                await asyncio.sleep(0.5)
            else:
                pytest.fail("the killed Scorer replica was not replaced within 90 s")
            after = await stub.Score(requests[0])  # and the replacement scores
            assert {r.status for r in after.results} == {pb.ITEM_STATUS_OK}
    finally:
        await server.stop(5)
