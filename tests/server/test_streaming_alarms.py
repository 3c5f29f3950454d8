"""Served alarms under a streaming (DSPOT) threshold equal offline alarms, device by device, whatever order the
backend answers in; a resend gets its first verdict and teaches the threshold nothing."""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio

from aelstm.core.bundle import load_bundle
from aelstm.core.scoring import score_series
from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from support import EC2_LATENCY

OK = pb.ITEM_STATUS_OK
ROWS = 700


@pytest.fixture(scope="module")
def dspot_bundle(tmp_path_factory):
    from aelstm.core.data import load_nab
    from aelstm.training.train import TrainConfig, train_series

    series = load_nab(EC2_LATENCY)
    config = TrainConfig(window=8, hidden=8, latent=4, epochs=2, threshold_method="spot", drift_depth=20, pot_risk=0.01)
    _, bundle = train_series(series, tmp_path_factory.mktemp("dspot") / "bundle", config, rows=600, progress=False)
    return bundle, series


@pytest_asyncio.fixture
async def server(tmp_path, dspot_bundle):
    publish(dspot_bundle[0].path, tmp_path, "ec2")
    server = ScoringServer(ServeConfig(port=0, backend="inprocess", registry=str(tmp_path), metrics_port=0,
                                       poll_s=60.0, batch_wait_ms=2.0, drain_grace_s=5.0))
    await server.start()
    yield server
    await server.stop(0)


def test_the_bundle_ships_a_dspot_threshold(dspot_bundle):
    bundle = load_bundle(dspot_bundle[0].path)
    assert bundle.manifest["threshold"]["method"] == "dspot"
    assert bundle.streaming_threshold.config.depth == 20


async def test_served_alarms_equal_offline_alarms(stub, wire, dspot_bundle):
    """`one` sends one reading per item: its alarms are `aelstm score`'s, row by row. `chunks` sends 1–9 readings
    per item, scored at each item's last reading: its alarms are those of the same threshold run offline over the
    scores of those rows. Requests interleave both devices, many in flight at once."""
    bundle, series = dspot_bundle
    values = series.values[:ROWS].astype(np.float32)
    plain = series.__class__(**{**series.__dict__, "values": values.astype(np.float64), "labels": None,
                                "timestamps": None})
    offline = score_series(bundle, plain).set_index("row")
    assert offline["is_anomaly"].any() and not offline["is_anomaly"].all()
    ends = np.cumsum(np.random.default_rng(0).integers(1, 10, size=ROWS))
    ends = {*ends[ends < ROWS].tolist(), ROWS}
    requests, start = [], 0
    for row in range(ROWS):
        items = [wire.readings("one", values[row : row + 1], timestamp_ms=row + 1)]
        if row + 1 in ends:
            items.append(wire.readings("chunks", values[start : row + 1], timestamp_ms=row + 1))
            start = row + 1
        requests.append(pb.ScoreRequest(request_id=str(row), fleet_id="ec2", items=items))
    answers = await wire.stream(stub, requests)
    results = [answers[str(row)][0].results for row in range(ROWS)]

    one = [(row, r[0]) for row, r in enumerate(results) if r[0].status == OK]
    expected = offline.loc[[row for row, _ in one]]
    assert [r.is_anomaly for _, r in one] == expected["is_anomaly"].tolist()
    np.testing.assert_allclose([r.threshold for _, r in one], expected["threshold"], rtol=1e-5)

    chunked = [(row, r[1]) for row, r in enumerate(results) if len(r) == 2 and r[1].status == OK]
    alarms, limits = bundle.streaming_threshold.run(offline.loc[[row for row, _ in chunked], "score"].to_numpy())
    assert [r.is_anomaly for _, r in chunked] == alarms.tolist()
    np.testing.assert_allclose([r.threshold for _, r in chunked], limits, rtol=1e-5)


async def test_a_resend_gets_its_first_verdict_and_teaches_nothing(stub, wire, dspot_bundle):
    values = dspot_bundle[1].values[:40].astype(np.float32)

    async def send(rows: slice, timestamp_ms: int) -> pb.ItemResult:
        request = pb.ScoreRequest(request_id="r", fleet_id="ec2",
                                  items=[wire.readings("dev", values[rows], timestamp_ms=timestamp_ms)])
        return (await stub.Score(request)).results[0]

    await send(slice(0, 20), 20)
    first = await send(slice(20, 30), 30)
    again = await send(slice(20, 30), 30)
    after = await send(slice(30, 40), 40)
    other = await send(slice(0, 20), 20)  # a different device history would differ; this one is a resend too
    assert (again.score, again.threshold, again.is_anomaly) == (first.score, first.threshold, first.is_anomaly)
    assert other.threshold == after.threshold
