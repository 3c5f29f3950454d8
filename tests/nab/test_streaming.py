"""Streaming NAB detectors: scores in [0, 1], causal (no look-ahead), probation never scored, spikes stand out."""

from __future__ import annotations

import numpy as np
import pytest

from aelstm.training.nab.likelihood import LikelihoodConfig, keep_new_highs, surprise, to_unit_score
from aelstm.training.nab.streaming import AELSTMStreamDetector, ZScoreDetector
from aelstm.training.train import TrainConfig


def _series(rows: int = 500, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    return 10 + np.sin(2 * np.pi * t / 50) + 0.05 * rng.normal(size=rows)


def test_surprise_is_causal_and_flags_a_jump() -> None:
    raw = np.abs(np.random.default_rng(1).normal(size=600))
    base = surprise(raw, start=50)
    changed = raw.copy()
    changed[400:] += 20.0
    after = surprise(changed, start=50)
    np.testing.assert_array_equal(base[:400], after[:400])
    assert after[400:405].min() > 5 > base[400:405].max()  # tail probability below 1e-5 at once


def test_surprise_needs_history_and_handles_constant_scores() -> None:
    config = LikelihoodConfig(min_history=20)
    assert not surprise(np.ones(30), start=15, config=config).any()  # too few rows after `start`
    flat = surprise(np.ones(200), start=0, config=config)
    assert np.isfinite(flat).all() and flat.max() < 1  # σ floor: a constant error is never a surprise


def test_keep_new_highs_leaves_one_alarm_per_burst() -> None:
    scores = np.array([0.1, 0.9, 0.8, 0.95, 0.2, 0.0, 0.0, 0.3, 0.0])
    kept = keep_new_highs(scores, refractory=3)
    np.testing.assert_array_equal(kept, [0.1, 0.9, 0.0, 0.95, 0.0, 0.0, 0.0, 0.3, 0.0])
    np.testing.assert_array_equal(keep_new_highs(scores, 0), scores)


def test_unit_score_is_monotone_in_zero_one() -> None:
    values = to_unit_score(np.array([0.0, 1.0, 5.0, 300.0]))
    assert values[0] == 0.0 and values[2] == 0.5 and values[-1] < 1.0
    assert np.all(np.diff(values) > 0)


def test_zscore_detector_scores_every_row_in_range() -> None:
    values = _series()
    scores = ZScoreDetector().score_file(values, probation=75)
    assert scores.shape == values.shape and scores.min() >= 0.0 and scores.max() <= 1.0


@pytest.fixture(scope="module")
def tiny() -> AELSTMStreamDetector:
    return AELSTMStreamDetector(TrainConfig(window=8, hidden=8, latent=2, lstm_layers=1, epochs=3, patience=2))


def test_aelstm_stream_is_causal_and_in_range(tiny: AELSTMStreamDetector) -> None:
    values = _series()
    scores = tiny.score_file(values, probation=150)
    assert scores.shape == values.shape
    assert np.all((scores >= 0.0) & (scores < 1.0))
    assert not scores[:150].any()
    changed = values.copy()
    changed[400] += 8.0  # a spike: what comes before it must not change, and the spike must stand out
    spiked = tiny.score_file(changed, probation=150)
    np.testing.assert_array_equal(scores[:400], spiked[:400])
    assert spiked[400] > np.quantile(scores[150:], 0.99)


@pytest.mark.parametrize(("mode", "parts"), [("ae", 1), ("lstm", 1), ("separate", 2)])
def test_ablations_use_their_own_error_terms(tiny: AELSTMStreamDetector, mode: str, parts: int) -> None:
    from dataclasses import replace

    detector = AELSTMStreamDetector(replace(tiny.config, mode=mode))
    raw = detector.raw_parts(_series(300), probation=150)
    assert len(raw) == parts
    assert all(np.isnan(part[:7]).all() and np.isfinite(part[7:]).all() for part in raw)


def test_online_fine_tuning_changes_only_rows_after_the_first_segment(tiny: AELSTMStreamDetector) -> None:
    import torch

    from aelstm.training.nab.online import OnlineConfig, score_online
    from aelstm.training.train import fit

    torch.manual_seed(0)
    values = _series(400)[:, None]

    def parts(epochs: int) -> tuple[np.ndarray, np.ndarray]:
        fitted = fit(values[:120], tiny.config, progress=False)
        return score_online(fitted, values, 120, OnlineConfig(every=60, epochs=epochs))

    frozen, tuned = parts(0), parts(1)
    window = tiny.config.window
    assert frozen[0].shape == (400 - window + 1,)
    first_update = 180 - (window - 1)  # rows 120..179 are scored before the first update
    for still, moved in zip(frozen, tuned, strict=True):
        np.testing.assert_allclose(still[:first_update], moved[:first_update], rtol=1e-6)
        assert not np.allclose(still[first_update:], moved[first_update:])
