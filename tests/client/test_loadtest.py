"""The load generator against the fake scorer: counts add up, losses are caught, no coordinated omission,
injected anomalies are found."""

from __future__ import annotations

import numpy as np
import pytest

from aelstm.client.connection import ConnectionOptions
from aelstm.client.loadtest import LoadRun, Schedule, run_report
from aelstm.client.synthetic import inject_anomalies, normal_telemetry
from aelstm.client.workload import build_workload, fleet_names


def small_workload(*, gateways=2, fleets=2, devices=16, batch=4, anomaly_rate=0.02, kinds=("spike",), seed=0):
    rng = np.random.default_rng(seed)
    values = normal_telemetry(devices, 400, 1, rng, np.zeros(1), np.ones(1))
    telemetry = inject_anomalies(values, anomaly_rate, rng, kinds=kinds)
    return build_workload(telemetry, fleets=fleet_names(fleets), gateways=gateways, batch=batch, window=16,
                          pool_messages=400)


async def load(target, schedule, workload=None, deadline_s=2.0, token=None):
    options = ConnectionOptions(target=target, deadline_s=deadline_s, token=token)
    return run_report(await LoadRun(options, workload or small_workload(), schedule).run(), schedule)


def assert_counts_add_up(phase: dict) -> None:
    assert phase["sent"] == phase["answered"] + sum(phase["errors"].values()) + phase["lost"]


async def test_open_loop_counts_add_up_and_nothing_is_lost(fake):
    report = await load(fake.target, Schedule(rate=200, warmup_s=0.3, duration_s=1.0))
    measured, warmup = report["measured"], report["warmup"]
    for phase in (measured, warmup):
        assert_counts_add_up(phase)
        assert phase["lost"] == 0 and not phase["errors"]
    assert measured["sent"] == pytest.approx(200, abs=2)  # 1 s at 200 msgs/s, warm-up excluded
    assert warmup["sent"] == pytest.approx(60, abs=2)
    assert measured["items_answered"] == measured["answered"] * 4
    assert sum(f["sent"] for f in measured["fleets"].values()) == measured["sent"]
    assert set(measured["fleets"]) == {"fleet-0", "fleet-1"}
    assert measured["item_status"] == {"ok": measured["items_answered"]}
    assert report["passed"]


async def test_message_count_mode_sends_exactly_that_many(fake):
    report = await load(fake.target, Schedule(rate=300, warmup_s=0.0, duration_s=None, messages=150))
    assert report["measured"]["sent"] == 150 and report["measured"]["answered"] == 150


async def test_a_dropped_answer_is_reported_lost(fake, behaviour):
    behaviour.drop_request_number = 25
    report = await load(fake.target, Schedule(rate=200, warmup_s=0.0, duration_s=0.5), deadline_s=1.0)
    measured = report["measured"]
    assert measured["lost"] == 1
    assert measured["answered"] == measured["sent"] - 1
    assert_counts_add_up(measured)
    assert not report["passed"]


async def test_a_refused_stream_counts_every_message_as_an_error(fake, behaviour):
    behaviour.token = "right"
    report = await load(fake.target, Schedule(rate=100, warmup_s=0.0, duration_s=0.3), token="wrong")
    measured = report["measured"]
    assert measured["answered"] == 0 and measured["lost"] == 0
    assert sum(measured["errors"].values()) == measured["sent"] > 0
    # A write racing the refusal can make gRPC's client core report INTERNAL for that stream instead.
    assert "UNAUTHENTICATED" in measured["errors"] or set(measured["errors"]) == {"INTERNAL"}


async def test_open_loop_latency_shows_a_slow_servers_queue(fake, behaviour):
    """Service time 20 ms per message (one at a time), arrivals every 10 ms: the queue grows all run long.

    Measured from intended send times, open-loop latency grows far beyond the service time; a closed loop (one in
    flight) against the same server only ever sees the service time: that gap is coordinated omission.
    """
    behaviour.service_time_s = 0.02
    workload = small_workload(gateways=1, fleets=1)
    open_loop = await load(fake.target, Schedule(rate=100, warmup_s=0.1, duration_s=1.0), workload, deadline_s=5)
    closed = await load(fake.target, Schedule(mode="closed", concurrency=1, warmup_s=0.1, duration_s=0.5),
                        workload, deadline_s=5)
    open_ms, closed_ms = open_loop["measured"]["latency_ms"], closed["measured"]["latency_ms"]
    assert open_loop["measured"]["lost"] == 0 and closed["measured"]["lost"] == 0
    assert closed_ms["p50"] < 5 * 20
    assert open_ms["p99"] > 10 * 20
    assert open_ms["p50"] > 5 * closed_ms["p50"]


async def test_closed_loop_keeps_the_concurrency(fake, behaviour):
    behaviour.service_time_s = 0.01  # per stream, sequential: 2 gateways answer ~200 msgs/s together at most
    report = await load(fake.target, Schedule(mode="closed", concurrency=4, warmup_s=0.1, duration_s=0.5))
    measured = report["measured"]
    assert measured["lost"] == 0 and measured["answered"] == measured["sent"] > 0
    assert measured["throughput"]["msgs_per_s"] < 260


async def test_injected_spikes_are_found_and_normal_windows_mostly_pass(fake):
    report = await load(fake.target, Schedule(rate=300, warmup_s=0.0, duration_s=1.0))
    detection = report["measured"]["detection"]
    assert detection["events"]["seen"] >= 5
    assert detection["events"]["recall"] >= 0.75  # the fake's |z| rule misses a spike when another is in its window
    assert detection["windows"]["precision"] >= 0.5
    assert set(detection["events"]["by_kind"]) == {"spike"}


async def test_progress_snapshots_cover_warm_up_and_measuring(fake):
    snapshots = []
    options = ConnectionOptions(target=fake.target, deadline_s=2.0)
    schedule = Schedule(rate=100, warmup_s=0.3, duration_s=0.6)
    run = LoadRun(options, small_workload(), schedule, on_progress=snapshots.append, progress_every_s=0.1)
    report = run_report(await run.run(), schedule)
    assert {s.phase for s in snapshots} == {"warm-up", "measuring"}
    assert snapshots[-1].answered <= report["measured"]["answered"] + report["warmup"]["answered"]
    assert max(s.msgs_per_s for s in snapshots) > 0


async def test_answers_later_than_the_deadline_are_errors_not_lost(fake, behaviour):
    behaviour.service_time_s = 0.05
    report = await load(fake.target, Schedule(rate=20, warmup_s=0.0, duration_s=0.3), deadline_s=0.02)
    measured = report["measured"]
    assert measured["lost"] == 0 and measured["answered"] == 0
    assert measured["errors"] == {"DEADLINE_EXCEEDED": measured["sent"]}
    assert not report["passed"]


async def test_readings_mode_warms_up_then_scores_and_finds_spikes(fake):
    rng = np.random.default_rng(3)
    telemetry = inject_anomalies(normal_telemetry(8, 400, 1, rng, np.zeros(1), np.ones(1)), 0.02, rng,
                                 kinds=("spike",))
    workload = build_workload(telemetry, fleets=fleet_names(1), gateways=2, batch=4, window=16,
                              pool_messages=400, items="readings")
    report = await load(fake.target, Schedule(rate=400, warmup_s=0.0, duration_s=1.0), workload)
    measured = report["measured"]
    assert measured["lost"] == 0 and not measured["errors"] and not measured["item_errors"]  # WARMING_UP is fine
    assert report["passed"]
    assert measured["item_status"]["warming_up"] == 8 * 15  # each device's first window-1 readings
    assert measured["item_status"]["ok"] == measured["items_answered"] - 8 * 15
    assert measured["detection"]["events"]["seen"] >= 3
    assert measured["detection"]["events"]["recall"] >= 0.75


async def test_unary_calls_carry_the_same_schedule_and_count_alike(fake, behaviour):
    report = await load(fake.target, Schedule(rate=200, warmup_s=0.3, duration_s=1.0, rpc="unary"))
    measured, warmup = report["measured"], report["warmup"]
    for phase in (measured, warmup):
        assert_counts_add_up(phase)
        assert phase["lost"] == 0 and not phase["errors"]
    assert measured["sent"] == pytest.approx(200, abs=2) and warmup["sent"] == pytest.approx(60, abs=2)
    assert behaviour.score_calls == measured["sent"] + warmup["sent"] and behaviour.requests_seen == 0
    assert measured["item_status"] == {"ok": measured["items_answered"]} == {"ok": measured["answered"] * 4}
    assert measured["detection"]["events"]["seen"] >= 1
    assert report["schedule"]["rpc"] == "unary" and report["passed"]


async def test_a_refused_unary_call_is_an_error_of_its_own_message(fake, behaviour):
    behaviour.token = "right"
    report = await load(fake.target, Schedule(rate=100, warmup_s=0.0, duration_s=0.3, rpc="unary"), token="wrong")
    measured = report["measured"]
    assert measured["answered"] == 0 and measured["lost"] == 0
    assert measured["errors"] == {"UNAUTHENTICATED": measured["sent"]} and measured["sent"] > 0


async def test_a_unary_call_past_its_deadline_is_deadline_exceeded(fake, behaviour):
    behaviour.service_time_s = 0.05
    report = await load(fake.target, Schedule(rate=20, warmup_s=0.0, duration_s=0.3, rpc="unary"), deadline_s=0.02)
    measured = report["measured"]
    assert measured["lost"] == 0 and measured["answered"] == 0
    assert measured["errors"] == {"DEADLINE_EXCEEDED": measured["sent"]}


async def test_unary_closed_loop_keeps_the_concurrency(fake, behaviour):
    behaviour.service_time_s = 0.02  # concurrent calls: 4 in flight answer ~200 msgs/s at most
    report = await load(fake.target, Schedule(mode="closed", concurrency=4, warmup_s=0.1, duration_s=0.5,
                                              rpc="unary"))
    measured = report["measured"]
    assert measured["lost"] == 0 and measured["answered"] == measured["sent"] > 20
    assert measured["throughput"]["msgs_per_s"] < 230


async def test_the_servers_own_time_is_reported_apart_from_the_latency(fake, behaviour):
    behaviour.service_time_s = 0.02  # the fake waits before it starts its clock: outside its server_time_us
    report = await load(fake.target, Schedule(rate=50, warmup_s=0.0, duration_s=0.5))
    measured = report["measured"]
    assert measured["latency_ms"]["p50"] >= 20
    assert 0 < measured["server_latency_ms"]["p50"] < 5


async def test_refusals_are_counted_apart_from_errors_and_timed_apart(fake, behaviour):
    behaviour.refuse_every = 4
    behaviour.service_time_s = 0.002
    report = await load(fake.target, Schedule(rate=200, warmup_s=0.0, duration_s=1.0))
    measured = report["measured"]
    assert_counts_add_up(measured)
    assert measured["refused"] == pytest.approx(measured["answered"] / 4, abs=1) and measured["refused"] > 0
    assert measured["items_refused"] == 4 * measured["refused"]
    assert measured["items_answered"] == 4 * (measured["answered"] - measured["refused"])
    assert not measured["item_errors"] and measured["lost"] == 0
    assert measured["refused_latency_ms"]["p50"] > 0  # timed, but apart from the admitted messages
    assert report["passed"]  # refusing is the server keeping its promise; a sweep still counts the rate as missed
    timeline = measured["timeline"]
    assert sum(s["items_refused"] for s in timeline) == measured["items_refused"]
    assert sum(s["items_scored"] for s in timeline) == measured["items_answered"]


async def test_closed_loop_waits_out_the_retry_hint(fake, behaviour):
    behaviour.refuse_every = 1
    behaviour.retry_after_ms = 250
    report = await load(fake.target, Schedule(mode="closed", concurrency=1, warmup_s=0.0, duration_s=1.0),
                        small_workload(gateways=1))
    measured = report["measured"]
    assert measured["refused"] == measured["sent"]
    assert 3 <= measured["sent"] <= 5  # one message per 250 ms hint in 1 s, not as fast as the fake answers


@pytest.mark.parametrize("rpc", ["stream", "unary"])
async def test_items_answered_unavailable_are_sent_again_and_the_retries_counted(fake, behaviour, rpc):
    """A deploy outlasting the server's grace answers a few messages with item-level UNAVAILABLE: sent again after
    a backoff, they are scored, and the run passes."""
    behaviour.unavailable_answers = 5
    report = await load(fake.target, Schedule(rate=50, warmup_s=0.0, duration_s=1.0, rpc=rpc),
                        small_workload(gateways=1))
    measured = report["measured"]
    assert_counts_add_up(measured)
    assert measured["item_retries"] == 5 and not measured["item_errors"] and measured["lost"] == 0
    assert measured["items_answered"] == measured["items_sent"]
    assert measured["latency_ms"]["max"] >= 100  # the first resend waits 0.1-0.2 s, counted in its latency
    assert report["passed"]


async def test_item_retries_are_bounded_and_then_the_items_are_errors(fake, behaviour):
    behaviour.unavailable_answers = 10**9  # the backend never comes back
    report = await load(fake.target, Schedule(rate=20, warmup_s=0.0, duration_s=0.5), small_workload(gateways=1))
    measured = report["measured"]
    assert measured["item_retries"] == 3 * measured["sent"]  # ItemRetry's 3 resends each, well inside the deadline
    assert measured["item_errors"] == {"UNAVAILABLE": measured["items_sent"]}
    assert not report["passed"]
