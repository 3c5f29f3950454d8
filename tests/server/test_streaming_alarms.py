"""Served alarms equal `aelstm score`'s, device by device, however readings are batched and whatever order the
backend answers in; a resend gets the verdict its own readings got and teaches nothing."""

from __future__ import annotations

import numpy as np
import pytest
import pytest_asyncio

from aelstm.core.scoring import score_series
from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from support import EC2_LATENCY

OK = pb.ITEM_STATUS_OK
ROWS = 700
POLICIES = {"dspot": "sum | spot:risk=0.01,depth=20", "likelihood": "likelihood | refractory:n=20 | fixed:value=0.3",
            "confirmed": "sum | spot:risk=0.015,depth=20 | confirm:k=2,n=3 | hold:n=4"}


@pytest.fixture(scope="module", params=sorted(POLICIES))
def served_bundle(request, tmp_path_factory):
    from aelstm.core.data import load_nab
    from aelstm.training.train import TrainConfig, train_series

    series = load_nab(EC2_LATENCY)
    config = TrainConfig(window=8, hidden=8, latent=4, epochs=2, policy=POLICIES[request.param])
    _, bundle = train_series(series, tmp_path_factory.mktemp(request.param) / "bundle", config, rows=600,
                             progress=False)
    return bundle, series


@pytest_asyncio.fixture
async def server(tmp_path, served_bundle):
    publish(served_bundle[0].path, tmp_path, "ec2")
    server = ScoringServer(ServeConfig(port=0, backend="inprocess", registry=str(tmp_path), metrics_port=0,
                                       poll_s=60.0, batch_wait_ms=2.0, drain_grace_s=5.0,
                                       scoring_budget_ms=60_000.0))  # every reading judged: none refused
    await server.start()
    yield server
    await server.stop(0)


def offline_table(bundle, series):
    """`aelstm score` over the first ROWS readings, as float32 as they travel, keyed by row."""
    values = series.values[:ROWS].astype(np.float32).astype(np.float64)
    plain = series.__class__(**{**series.__dict__, "values": values, "labels": None, "timestamps": None})
    return score_series(bundle, plain).set_index("row")


@pytest.mark.parametrize("per_item", [1, 16, 256])
async def test_served_alarms_equal_aelstm_score(stub, wire, served_bundle, per_item):
    """Readings sent `per_item` at a time (two devices, requests interleaved, many in flight): each item's
    alarmed windows are exactly `aelstm score`'s alarms over the item's rows, and its shown verdict is that of its
    most anomalous row."""
    bundle, series = served_bundle
    offline = offline_table(bundle, series)
    assert offline["is_anomaly"].any() and not offline["is_anomaly"].all()
    values = series.values[:ROWS].astype(np.float32)
    requests = []
    for start in range(0, ROWS, per_item):
        end = min(start + per_item, ROWS)
        items = [wire.readings(device, values[start:end], timestamp_ms=end) for device in ("a", "b")]
        requests.append(pb.ScoreRequest(request_id=str(start), fleet_id="ec2", items=items))
    answers = await wire.stream(stub, requests)
    checked = 0
    for start in range(0, ROWS, per_item):
        end = min(start + per_item, ROWS)
        rows = offline.loc[start : end - 1]
        for result in answers[str(start)][0].results:
            if rows.empty:
                assert result.status == pb.ITEM_STATUS_WARMING_UP
                continue
            assert result.status == OK, result.error.message
            assert result.alarmed_windows == int(rows["is_anomaly"].sum())
            assert result.is_anomaly == bool(rows["is_anomaly"].any())
            margin = (rows["alarm_score"] - rows["threshold"]).to_numpy()
            shown = rows.iloc[len(margin) - 1 - int(np.argmax(margin[::-1]))]  # the latest among ties
            assert result.alarm_score == pytest.approx(shown["alarm_score"], rel=1e-5, abs=1e-6)
            assert result.threshold == pytest.approx(shown["threshold"], rel=1e-5)
            checked += 1
    assert checked >= 2 * (ROWS - bundle.window) // per_item


async def test_a_resend_gets_its_own_verdict_and_teaches_nothing(stub, wire, served_bundle):
    """One reading per ms, items ending at ts 5 (warming up), 10, 20, 30, 40: resending ts 30 gets the windows
    ending at ts 30 as they were judged then, not the newest; resending ts 5 is still WARMING_UP; the resends move
    nothing (ts 50 is judged exactly as for a device that never resent); late data is refused."""
    values = served_bundle[1].values[:60].astype(np.float32)
    ends = (5, 10, 20, 30, 40)

    async def send(device: str, ts: int, first: int | None = None) -> pb.ItemResult:
        first = ends[ends.index(ts) - 1] if first is None else first
        request = pb.ScoreRequest(request_id="r", fleet_id="ec2",
                                  items=[wire.readings(device, values[first:ts], timestamp_ms=ts)])
        return (await stub.Score(request)).results[0]

    def verdict(result: pb.ItemResult) -> tuple:
        return result.status, result.score, result.alarm_score, result.threshold, result.alarmed_windows

    sent = {device: {ts: await send(device, ts, 0 if ts == 5 else None) for ts in ends} for device in ("dev", "ctl")}
    assert sent["dev"][5].status == pb.ITEM_STATUS_WARMING_UP
    again = await send("dev", 30)
    assert again == sent["dev"][30] and verdict(again) != verdict(sent["dev"][40])
    assert await send("dev", 5, 0) == sent["dev"][5]
    assert verdict(await send("dev", 50, 40)) == verdict(await send("ctl", 50, 40))
    late = await send("dev", 45, 40)
    assert late.status == pb.ITEM_STATUS_ERROR and late.error.code == 11  # OUT_OF_RANGE
    assert "late data" in late.error.message
