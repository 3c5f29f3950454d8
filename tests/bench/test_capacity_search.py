"""The overload benchmark's capacity search: fixed-rate runs go up while they hold and down while they fail, and
the capacity is the highest rate that held (a stand-in for `aelstm-client loadtest` holds up to a set rate)."""

import pytest

from benchmarks.performance import overload
from benchmarks.performance.limits import Phase, Workload

PLAN = overload.Plan(sweep=Phase(1.0, 3.0, 3.0), confirm_s=30.0, light_s=10.0, before_s=10.0, burst_s=60.0,
                     after_s=15.0)


@pytest.fixture
def holds_up_to(monkeypatch):
    """Make every fixed-rate run hold exactly when its rate is at most the given limit; returns the setter."""
    def runs_until(limit: float) -> None:
        def loadtest(target, args):
            rate = float(args[args.index("--rate") + 1])
            return {"rate": rate, "held": rate <= limit}, f"--rate {rate:g}"

        monkeypatch.setattr(overload, "loadtest", loadtest)

    monkeypatch.setattr(overload, "brief", lambda report, command: {
        "rate": report["rate"], "items_per_s": 16 * report["rate"], "p99_ms": 10.0, "items_refused": 0, "lost": 0,
        "sustained": report["held"]})
    monkeypatch.setattr(overload, "say", lambda *_: None)
    return runs_until


@pytest.mark.parametrize(("limit", "tried", "capacity"), [
    (125.0, [100.0, 110.0, 121.0, 133.1], 121.0),  # the sweep's candidate held: climb until a run fails
    (100.0, [100.0, 110.0], 100.0),
    (85.0, [100.0, 90.0, 81.0], 81.0),  # it failed: come down until a run holds
    (1e9, [100.0, 110.0, 121.0, 133.1, 146.4], 146.4),  # at most CONFIRM_TRIES runs
    (10.0, [100.0, 90.0, 81.0, 72.9, 65.6], None),
])
def test_capacity_is_the_highest_rate_a_fixed_rate_run_holds(holds_up_to, limit, tried, capacity):
    holds_up_to(limit)
    runs = overload.confirm("127.0.0.1:1", Workload(16), PLAN, 100.0)
    assert [run["rate"] for run in runs] == tried
    best = overload.highest_held(runs)
    assert (best and best["rate"]) == capacity
    assert overload.reference({"confirmations": runs})["rate"] == (capacity or tried[-1])
