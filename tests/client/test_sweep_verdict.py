"""A swept rate holds when p99 keeps the bound and nothing is lost or in error; a few early refusals are allowed."""

from __future__ import annotations

from aelstm.client.sweep import sustained, sweep_verdict


def run(rate: float, p99: float, refused: int = 0, sent: int = 10_000, passed: bool = True) -> dict:
    return {"schedule": {"rate": rate}, "passed": passed,
            "measured": {"answered": sent // 16, "items_sent": sent, "items_refused": refused,
                         "latency_ms": {"p99": p99}, "throughput": {"items_per_s": sent / 10}}}


def test_a_rate_holds_with_a_tenth_of_a_percent_refused_and_not_more():
    assert sustained(run(100, 20.0, refused=10), 50.0)
    assert not sustained(run(100, 20.0, refused=11), 50.0)
    assert not sustained(run(100, 60.0), 50.0)
    assert not sustained(run(100, 20.0, passed=False), 50.0)  # lost or in error


def test_the_verdict_is_the_last_rate_before_the_first_that_broke():
    runs = [run(100, 10.0), run(200, 20.0, refused=5), run(300, 80.0), run(400, 20.0)]
    assert sweep_verdict(runs, 50.0)["rate"] == 200
