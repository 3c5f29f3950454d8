import numpy as np
import pytest

from aelstm.core.calibrate import pot_threshold, quantile_threshold
from aelstm.core.errors import DataError


def test_quantile_threshold_flags_the_expected_share():
    scores = np.random.default_rng(0).exponential(size=20000)
    threshold = quantile_threshold(scores, 0.99)
    assert (scores > threshold.value).mean() == pytest.approx(0.01, abs=0.002)


def test_pot_extrapolates_an_exponential_tail():
    # Exponential(1): P(X > z) = e^-z, so the 1e-4 risk level is z = ln(1e4) ≈ 9.21, beyond most samples.
    scores = np.random.default_rng(1).exponential(size=20000)
    threshold = pot_threshold(scores, risk=1e-4)
    assert threshold.method == "pot"
    assert threshold.value == pytest.approx(np.log(1e4), rel=0.15)
    assert threshold.params["peaks"] > 100


def test_pot_falls_back_when_too_few_peaks():
    threshold = pot_threshold(np.arange(15.0), risk=1e-3)
    assert "fallback" in threshold.params
    assert threshold.method.startswith("quantile (pot fallback: too few scores")  # the method really used


def test_calibration_needs_finite_scores():
    with pytest.raises(DataError, match="finite"):
        quantile_threshold(np.array([np.nan, 1.0]))
