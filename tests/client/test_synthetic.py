"""Synthetic telemetry, anomaly injection, prebuilt payloads and workloads (no server)."""

from __future__ import annotations

import numpy as np
import pytest

from aelstm.client.payloads import request_body, window_item, with_request_id
from aelstm.client.synthetic import ANOMALY_KINDS, inject_anomalies, normal_telemetry, telemetry_from_series
from aelstm.client.workload import build_workload
from aelstm.core.errors import DataError
from aelstm.v1 import scoring_pb2 as pb


def test_injected_events_cover_about_the_requested_rate_and_every_kind():
    rng = np.random.default_rng(1)
    values = normal_telemetry(50, 2000, 2, rng, np.zeros(2), np.ones(2))
    telemetry = inject_anomalies(values, 0.05, rng, quiet_start=32)
    inside = (telemetry.events > 0).mean()
    assert 0.03 < inside < 0.07
    assert set(telemetry.event_kinds.values()) == set(ANOMALY_KINDS)
    assert not telemetry.events[:, :32].any()
    changed = np.abs(telemetry.values - values).max(axis=2) > 0
    assert not (changed & (telemetry.events == 0)).any()  # only readings inside events are altered
    spikes = [e for e, k in telemetry.event_kinds.items() if k == "spike"]
    assert all((telemetry.events == e).sum() == 1 for e in spikes)


def test_no_anomalies_at_rate_zero_and_bad_rates_refused():
    rng = np.random.default_rng(0)
    values = normal_telemetry(3, 100, 1, rng, np.zeros(1), np.ones(1))
    assert not inject_anomalies(values, 0.0, rng).events.any()
    with pytest.raises(DataError):
        inject_anomalies(values, 0.6, rng)


def test_recorded_labels_become_one_event_per_device_and_run():
    values = np.arange(100, dtype=np.float64)[:, None]
    labels = np.zeros(100, np.int8)
    labels[40:45] = 1
    labels[70:72] = 1
    telemetry = telemetry_from_series(values, labels, 3, np.random.default_rng(0))
    assert telemetry.values.shape == (3, 100, 1)
    assert len(telemetry.event_kinds) == 6 and set(telemetry.event_kinds.values()) == {"labelled"}
    for device in range(3):
        labelled = telemetry.values[device, telemetry.events[device] > 0, 0]
        assert sorted(labelled) == [40, 41, 42, 43, 44, 70, 71]  # labels travel with their readings


def test_request_id_prefix_makes_a_valid_request():
    window = np.arange(8, dtype=np.float32).reshape(4, 2)
    body = request_body("fleet-x", [window_item("dev", window, 123)])
    request = pb.ScoreRequest.FromString(with_request_id("g1:42", body))
    assert request.request_id == "g1:42" and request.fleet_id == "fleet-x"
    item = request.items[0]
    assert list(item.window.shape) == [4, 2] and item.timestamp_ms == 123
    np.testing.assert_array_equal(np.frombuffer(item.window.packed, "<f4").reshape(4, 2), window)


def test_workload_routes_devices_to_gateways_and_labels_each_window_by_its_last_reading():
    rng = np.random.default_rng(0)
    telemetry = inject_anomalies(normal_telemetry(8, 120, 1, rng, np.zeros(1), np.ones(1)), 0.05, rng)
    workload = build_workload(telemetry, fleets=["a", "b"], gateways=2, batch=3, window=10, pool_messages=50)
    assert len(workload.gateways) == 2 and workload.fleets == ["a", "b"]
    for gateway, payloads in enumerate(workload.gateways):
        for payload in payloads:
            request = pb.ScoreRequest.FromString(with_request_id("x", payload.body))
            for i, item in enumerate(request.items):
                device = int(item.device_id.rsplit("-", 1)[1])
                assert device % 2 == gateway and "ab"[device % 2] == payload.fleet_id
                window = np.frombuffer(item.window.packed, "<f4")
                end = int(np.flatnonzero(telemetry.values[device, :, 0] == window[-1])[0])
                np.testing.assert_array_equal(window, telemetry.values[device, end - 9 : end + 1, 0])
                expected = telemetry.events[device, end]
                assert (0 if payload.events is None else payload.events[i]) == expected


def test_readings_workload_sends_each_devices_readings_in_order_and_skips_unjudged_windows():
    rng = np.random.default_rng(0)
    telemetry = inject_anomalies(normal_telemetry(4, 200, 1, rng, np.zeros(1), np.ones(1)), 0.05, rng)
    workload = build_workload(telemetry, fleets=["a"], gateways=1, batch=2, window=10, pool_messages=100,
                              items="readings")
    seen: dict[int, list[float]] = {}
    for payload in workload.gateways[0]:
        request = pb.ScoreRequest.FromString(with_request_id("x", payload.body))
        for i, item in enumerate(request.items):
            device = int(item.device_id.rsplit("-", 1)[1])
            assert list(item.readings.shape) == [1, 1]
            t = len(seen.setdefault(device, []))
            seen[device].append(float(np.frombuffer(item.readings.packed, "<f4")[0]))
            expected = -1 if t < 9 else telemetry.events[device, t]
            assert (0 if payload.events is None else payload.events[i]) == expected
    for device, readings in seen.items():
        np.testing.assert_array_equal(readings, telemetry.values[device, : len(readings), 0])
        assert len(readings) == 50  # 100 messages × 2 items over 4 devices


def test_readings_pool_too_short_for_a_window_is_refused():
    rng = np.random.default_rng(0)
    telemetry = inject_anomalies(normal_telemetry(64, 200, 1, rng, np.zeros(1), np.ones(1)), 0.0, rng)
    with pytest.raises(DataError, match="raise --pool"):
        build_workload(telemetry, fleets=["a"], gateways=1, batch=2, window=32, pool_messages=100, items="readings")


def test_splitting_a_run_over_processes_shares_gateways_rate_and_counts():
    from aelstm.client.loadtest import Schedule
    from aelstm.client.parallel import split

    rng = np.random.default_rng(0)
    telemetry = inject_anomalies(normal_telemetry(10, 100, 1, rng, np.zeros(1), np.ones(1)), 0.0, rng)
    workload = build_workload(telemetry, fleets=["a"], gateways=5, batch=2, window=10, pool_messages=10)
    parts = split(workload, Schedule(rate=1000, concurrency=10, duration_s=None, messages=101), 2)
    assert [len(w.gateways) for w, _ in parts] == [3, 2]
    assert sum(s.rate for _, s in parts) == pytest.approx(1000)
    assert sum(s.messages for _, s in parts) == 101 and sum(s.concurrency for _, s in parts) == 10
    assert len(split(workload, Schedule(rate=1000), 8)) == 5  # never more processes than gateways
