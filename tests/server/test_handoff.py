"""One device, one state: a gateway that moves to another ingress takes its device's window and policy state along."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest_asyncio

from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.handoff import LocalHandoff
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb

ROWS, MOVE_AT = 300, 150


@pytest_asyncio.fixture
async def ingresses(tmp_path, ec2_bundle):
    """Two in-process ingresses on one registry, and whether they share a handoff store."""
    publish(ec2_bundle.path, tmp_path, "ec2")
    started = []

    async def start(handoff) -> ScoringServer:
        server = ScoringServer(ServeConfig(port=0, backend="inprocess", registry=str(tmp_path), metrics_port=0,
                                           poll_s=60.0, batch_wait_ms=1.0, drain_grace_s=5.0,
                                           scoring_budget_ms=60_000.0), handoff=handoff)  # none refused
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop(0)


async def test_a_device_that_moves_keeps_its_window_and_policy_state(ingresses, wire, ec2_bundle):
    values = ec2_bundle.series.values[:ROWS].astype(np.float32) * 1.3  # off the training level: DSPOT adapts
    handoff = LocalHandoff()
    first, second = await ingresses(handoff), await ingresses(handoff)
    stayed = await wire.verdicts(first.address, "ec2", "control", values, range(ROWS))
    before = await wire.verdicts(first.address, "ec2", "mover", values, range(MOVE_AT))
    moved = await wire.verdicts(second.address, "ec2", "mover", values, range(MOVE_AT, ROWS))
    assert {**before, **moved} == stayed
    events = [server.metrics.registry.get_sample_value for server in (first, second)]
    assert events[0]("aelstm_device_events_total", {"event": "handed_over"}) == 2  # each stream's end, each device
    assert events[1]("aelstm_device_events_total", {"event": "adopted"}) == 1


async def test_without_a_shared_store_the_device_starts_over(ingresses, wire, ec2_bundle):
    values = ec2_bundle.series.values[:ROWS].astype(np.float32) * 1.3
    first, second = await ingresses(LocalHandoff()), await ingresses(LocalHandoff())
    await wire.verdicts(first.address, "ec2", "mover", values, range(MOVE_AT))
    moved = await wire.verdicts(second.address, "ec2", "mover", values, range(MOVE_AT, ROWS))
    assert moved[MOVE_AT][0] == pb.ITEM_STATUS_WARMING_UP  # what every ingress did before handoff


class SlowHandoff(LocalHandoff):
    """A store a network hop away: taking a device over takes a while."""

    async def take(self, keys):
        await asyncio.sleep(0.05)
        return await super().take(keys)


async def test_readings_are_admitted_in_arrival_order_while_a_device_is_taken_over(ingresses, wire, ec2_bundle):
    """Many requests for a device in flight on one stream while its state is fetched: none overtakes another (an
    overtaken request would be late data)."""
    values = ec2_bundle.series.values[:ROWS].astype(np.float32)
    server = await ingresses(SlowHandoff())
    verdicts = await wire.verdicts(server.address, "ec2", "new", values, range(ROWS))
    assert {status for status, *_ in verdicts.values()} == {pb.ITEM_STATUS_WARMING_UP, pb.ITEM_STATUS_OK}
