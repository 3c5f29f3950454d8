"""Thresholds as calibrators in the detector contract: alarms come from `predict` (a streaming threshold runs over
the series in time order), the runner keeps exactly those alarms, threshold-only variants never refit, and the
AE-LSTM's calibration is its fitted model's own threshold or one from the same validation scores."""

from __future__ import annotations

import numpy as np
import pytest

from aelstm.core.progress import ProgressBar
from aelstm.training.detectors.base import Calibrator, Detector
from aelstm.training.evaluation.lineup import Settings, build
from aelstm.training.evaluation.protocols import Case, Protocol
from aelstm.training.evaluation.runner import run_cases
from aelstm.training.evaluation.selection import F1_SLACK, calibrators, choose


class Level(Detector):
    """Scores a reading by its own first feature; the last 40 % of the normal rows are the validation scores."""

    name = "level"

    def __init__(self, calibrator: Calibrator) -> None:
        self.calibrator = calibrator
        self.fits = 0

    def fit(self, normal: np.ndarray, reference: np.ndarray | None = None) -> Level:
        self.fits += 1
        self.validation_scores_ = normal[int(0.6 * len(normal)) :, 0]
        return self.calibrate()

    def score(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)[:, 0].copy()


def drifting_case() -> Case:
    """Exponential noise; from row 1,000 the level settles 8 units higher for good (drift, labelled normal)."""
    rng = np.random.default_rng(3)
    values = rng.exponential(1.0, size=(3000, 1))
    values[1000:] += 8.0
    return Case("drift", values[:800], values, np.zeros(3000, np.int8), 800, ("x",))


def test_predict_runs_the_streaming_threshold_and_tolerates_drift():
    case = drifting_case()
    static = Level(Calibrator("pot", 1e-3, 0)).fit(case.normal)
    streaming = Level(Calibrator("spot", 1e-3, depth=50)).fit(case.normal)
    assert streaming.calibration_.streaming is not None and streaming.threshold_ == streaming.calibration_.value
    scores = streaming.score(case.values)
    alarms = streaming.predict(case.values)
    assert np.array_equal(alarms, streaming.calibration_.streaming.run(scores)[0])
    assert not np.array_equal(alarms, scores > streaming.threshold_)  # the level moves along the series
    late = slice(2000, None)
    assert static.predict(case.values)[late].mean() > 0.5  # a static level alarms on the drift for ever
    assert alarms[late].mean() < 0.01  # the drift baseline has absorbed it


def test_runner_keeps_the_alarms_of_predict_and_fits_once_for_every_calibrator():
    case = drifting_case()
    protocol = Protocol("synthetic", [case, case], "two copies of one drifting case")
    grid = [Calibrator("pot", 1e-3, 0), Calibrator("spot", 1e-3, 50), Calibrator("spot", 1e-2, 200)]
    detector = Level(Calibrator())
    with ProgressBar("test", 2, "fits", enabled=False) as bar:
        results = run_cases(protocol, "level", detector, grid, bar)
    assert detector.fits == len(protocol.cases)  # threshold-only variants reuse each fit's scores
    for result, calibrator in zip(results, grid, strict=True):
        assert result.calibrator == calibrator and len(result.fit_seconds) == 2
        expected = Level(calibrator).fit(case.normal).predict(case.values)[case.test_from :]
        assert all(np.array_equal(c.flags, expected) for c in result.cases)


def test_a_drift_depth_needs_the_streaming_threshold():
    with pytest.raises(Exception, match="drift depth"):
        Calibrator("pot", 1e-3, depth=10)
    assert {c.method for c in calibrators()} == {"pot", "spot"}


def test_aelstm_calibration_is_its_fitted_threshold_or_from_the_same_validation_scores():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    t = np.arange(500)
    normal = np.stack([np.sin(t / 20), np.cos(t / 30)], axis=1) + 0.05 * rng.normal(size=(500, 2))
    spot = Calibrator("spot", 1e-2, depth=16)
    detector = build("ae-lstm", Settings(window=8, epochs=2, calibrator=spot)).fit(normal)
    assert detector.fitted_.config.threshold_method == "spot" and detector.fitted_.config.drift_depth == 16
    assert detector.calibration_ is detector.fitted_.threshold  # trained with the run's settings: no second fit
    assert spot(detector.validation_scores_).value == pytest.approx(detector.threshold_)  # the same windows
    assert len(detector.validation_scores_) == detector.fitted_.validation["windows"]
    pot = detector.calibrated(Calibrator("pot", 1e-3, 0))
    assert pot.method == "pot" and pot.streaming is None


def test_selection_rule_takes_the_fewest_false_alarms_among_the_best_f1():
    def row(detector, risk, f1, fpr, aelstm=None):
        return {"detector": detector, "aelstm": aelstm or {}, "f1": f1, "fpr": fpr,
                "calibrator": {"method": "pot", "risk": risk, "depth": 0}}

    rows = [row("ae-lstm", 1e-2, 0.80, 0.5, {"patch": 1}), row("pca", 1e-2, 0.80, 0.4),
            row("ae-lstm", 1e-3, 0.795, 0.3, {"patch": 1}), row("pca", 1e-3, 0.795, 0.2),
            row("ae-lstm", 1e-2, 0.82, 0.5, {"patch": 4}), row("ae-lstm", 1e-3, 0.60, 0.1, {"patch": 4}),
            row("ae-lstm", 1e-4, 0.30, 0.0, {"patch": 1}), row("pca", 1e-4, 0.30, 0.0)]
    chosen = choose(rows)  # best mean F1 0.81 (patch 4, risk 1e-2); patch 1 at risk 1e-3 is within the slack
    assert chosen["calibrator"]["risk"] == 1e-3 and chosen["aelstm"] == {"patch": 1}
    assert chosen["mean_f1"] == pytest.approx(0.795) and 0.81 - chosen["mean_f1"] <= F1_SLACK
