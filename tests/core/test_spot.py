"""SPOT/DSPOT streaming thresholds: calibrated level, drift tolerance, bounded state, one code path everywhere."""

import json
import math

import numpy as np
import pytest

from aelstm.core.calibrate import spot_threshold
from aelstm.core.errors import DataError
from aelstm.core.spot import SpotConfig, StreamingThreshold, gpd_moments, tail_level


def run(threshold: StreamingThreshold, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alarms, thresholds in force) of one stream from a fresh state, judged then learnt score by score."""
    state = threshold.start()
    judged = [state.step(float(score)) for score in scores]
    return np.array([alarm for _, alarm in judged]), np.array([limit for limit, _ in judged])


def test_moments_recover_an_exponential_tail():
    excesses = np.random.default_rng(0).exponential(2.0, size=50_000)
    shape, scale = gpd_moments(excesses.size, excesses.sum(), (excesses**2).sum())
    assert shape == pytest.approx(0.0, abs=0.02)
    assert scale == pytest.approx(2.0, rel=0.03)
    # P(X > z) = 0.02·exp(−(z − t)/σ) = 1e-4  ⇒  z = t + σ·ln(200)
    assert tail_level(1.0, 0.0, 2.0, 1e-4, 1000, 20) == pytest.approx(1.0 + 2.0 * math.log(200))


def test_stationary_scores_alarm_at_about_the_risk():
    rng = np.random.default_rng(1)
    threshold = StreamingThreshold.calibrate(rng.exponential(size=5_000), SpotConfig(risk=1e-3))
    alarms, limits = run(threshold, rng.exponential(size=50_000))
    assert alarms.mean() < 3e-3
    assert limits[0] == pytest.approx(threshold.value)


@pytest.mark.parametrize("depth", [50, 200])
def test_a_settled_shift_stops_alarming_within_the_bound_and_a_spike_still_stands_out(depth):
    rng = np.random.default_rng(2)
    threshold = StreamingThreshold.calibrate(rng.exponential(size=5_000), SpotConfig(depth=depth))
    shift = 6.0
    scores = np.r_[rng.exponential(size=1_000), shift + rng.exponential(size=4_000)]
    spike_at = 4_500
    scores[spike_at] += 20.0
    alarms, _ = run(threshold, scores)
    bound = math.ceil(shift / (threshold.value - threshold.level_prior)) * depth + depth
    assert alarms[1_000:1_010].any()  # the shift itself is news
    assert alarms[1_000 + bound : spike_at].sum() <= 5  # back to the risk rate (≈ 3 expected)
    assert alarms[spike_at]


def test_plain_spot_judges_levels_not_changes():
    rng = np.random.default_rng(3)
    calibration = rng.exponential(size=5_000)
    scores = np.r_[rng.exponential(size=500), 12.0 + rng.exponential(size=1_000)]
    spot_alarms, _ = run(StreamingThreshold.calibrate(calibration, SpotConfig(depth=0)), scores)
    dspot_alarms, _ = run(StreamingThreshold.calibrate(calibration, SpotConfig(depth=50)), scores)
    assert spot_alarms[500:].sum() > 2 * dspot_alarms[500:].sum()


def test_state_stays_bounded():
    rng = np.random.default_rng(4)
    threshold = StreamingThreshold.calibrate(rng.exponential(size=2_000), SpotConfig(depth=100, max_peaks=64))
    state = threshold.start()
    size = state.nbytes
    for score in rng.pareto(2.0, size=20_000):
        state.step(float(score))
    assert state.nbytes == size
    assert state.peaks.count == 64
    assert state.exceeded > 64


def test_nan_is_neither_judged_nor_learnt():
    threshold = StreamingThreshold.calibrate(np.random.default_rng(5).exponential(size=1_000), SpotConfig(depth=10))
    state = threshold.start()
    before = (state.seen, state.threshold())
    limit, alarm = state.step(float("nan"))
    assert not alarm and limit == before[1]
    assert (state.seen, state.threshold()) == before


def test_round_trip_through_json_gives_the_same_alarms():
    rng = np.random.default_rng(6)
    calibrated = spot_threshold(rng.exponential(size=3_000), SpotConfig(depth=30))
    restored = StreamingThreshold.from_dict(json.loads(json.dumps(calibrated.to_dict()["streaming"])))
    scores = rng.exponential(size=5_000) * np.linspace(1, 3, 5_000)
    np.testing.assert_array_equal(run(restored, scores)[0], run(calibrated.streaming, scores)[0])
    with pytest.raises(DataError, match="malformed streaming threshold"):
        StreamingThreshold.from_dict({"config": {}})


def test_short_validation_lowers_the_initial_quantile_and_tiny_falls_back():
    scores = np.random.default_rng(7).exponential(size=80)  # e.g. 20 % of 400 training rows
    threshold = spot_threshold(scores, SpotConfig(depth=20))
    assert threshold.method == "dspot"
    assert threshold.params["initial_q"] == pytest.approx(1 - 10 / 80)
    assert threshold.streaming.exceeded >= 10
    assert spot_threshold(scores[:12]).method.startswith("quantile (spot fallback")


@pytest.mark.parametrize("bad", [{"risk": 0.5}, {"initial_q": 1.0}, {"depth": -1}, {"max_peaks": 3}])
def test_bad_settings_are_refused(bad):
    with pytest.raises(DataError):
        SpotConfig(**bad)
