"""Repeated warnings are rate-limited: one line per period, with how many were held back."""

from __future__ import annotations

import logging

from aelstm.server.logs import Throttled


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_same_warning_is_logged_once_per_period_with_the_count_held_back(caplog):
    clock = Clock()
    throttled = Throttled(logging.getLogger("aelstm.test"), every_s=10.0, clock=clock)
    with caplog.at_level(logging.WARNING, logger="aelstm.test"):
        for second in range(25):  # a failure per 0.1 s for 2.5 s, then 20 s of failures every second
            clock.now = 100.0 + second * 0.1
            throttled.warning("scoring backend failed for %s: %s", "ec2", "gone")
        for second in range(3, 23):
            clock.now = 100.0 + second
            throttled.warning("scoring backend failed for %s: %s", "ec2", "gone")
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["scoring backend failed for ec2: gone",
                     "scoring backend failed for ec2: gone (31 more like it in the last 10 s not logged)",
                     "scoring backend failed for ec2: gone (9 more like it in the last 10 s not logged)"]
    assert [record.fields["suppressed"] for record in caplog.records] == [0, 31, 9]


def test_different_warnings_are_limited_apart(caplog):
    throttled = Throttled(logging.getLogger("aelstm.test"), every_s=10.0, clock=Clock())
    with caplog.at_level(logging.WARNING, logger="aelstm.test"):
        for _ in range(5):
            throttled.warning("scoring backend failed for %s", "ec2")
            throttled.warning("a Scorer replica failed mid-call (%s)", "ActorDiedError")
    assert [record.getMessage() for record in caplog.records] == [
        "scoring backend failed for ec2", "a Scorer replica failed mid-call (ActorDiedError)"]


async def test_an_ingress_whose_backend_fails_every_call_logs_it_once(tmp_path, ec2_bundle, wire, caplog):
    import numpy as np

    from aelstm.server.app import ScoringServer
    from aelstm.server.config import ServeConfig
    from aelstm.server.registry import publish
    from aelstm.v1 import scoring_pb2 as pb

    publish(ec2_bundle.path, tmp_path, "ec2")
    server = ScoringServer(ServeConfig(port=0, backend="inprocess", registry=str(tmp_path), metrics_port=0,
                                       poll_s=60.0))
    await server.start()

    async def failing(key, windows):
        raise RuntimeError("replica lost")

    server.coalescer.score = failing
    window = ec2_bundle.series.values[:16].astype(np.float32).reshape(16, 1)
    try:
        with caplog.at_level(logging.WARNING, logger="aelstm.server.scoring"):
            for i in range(30):
                response = await server.scorer.score_request(
                    pb.ScoreRequest(request_id=str(i), fleet_id="ec2", items=[wire.window("d", window)]))
                assert response.results[0].error.code == 14  # UNAVAILABLE, every time
    finally:
        await server.stop(0)
    (line,) = [r.getMessage() for r in caplog.records if "scoring backend failed" in r.getMessage()]
    assert line.startswith("scoring backend failed for ec2/1@") and line.endswith(": replica lost")
