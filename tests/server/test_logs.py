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
