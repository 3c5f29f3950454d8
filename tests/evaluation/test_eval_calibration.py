"""The alarm policy in the detector contract: alarms come from `predict` (a streaming policy runs over the series in
time order), the runner keeps exactly those alarms, policy-only variants never refit, and the AE-LSTM's policy is
its fitted model's own or one fitted on the same validation terms."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aelstm.core.policy import Policy
from aelstm.core.progress import ProgressBar
from aelstm.training.detectors.base import Detector
from aelstm.training.evaluation.lineup import Settings, build
from aelstm.training.evaluation.protocols import Case, Protocol
from aelstm.training.evaluation.runner import run_cases
from aelstm.training.evaluation.selection import F1_SLACK, choose, chosen_policy, policies

POT = Policy.parse("sum | pot:risk=0.001")
DSPOT = Policy.parse("sum | spot:risk=0.001,depth=50")


class Level(Detector):
    """Scores a reading by its own first feature; the last 40 % of the normal rows are the validation terms."""

    name = "level"

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self.fits = 0

    def fit(self, normal: np.ndarray, reference: np.ndarray | None = None) -> Level:
        self.fits += 1
        self.validation_terms_ = normal[int(0.6 * len(normal)) :, :1]
        return self.calibrate()

    def score(self, values: np.ndarray) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)[:, 0].copy()


def drifting_case() -> Case:
    """Exponential noise; from row 1,000 the level settles 8 units higher for good (drift, labelled normal)."""
    rng = np.random.default_rng(3)
    values = rng.exponential(1.0, size=(3000, 1))
    values[1000:] += 8.0
    return Case("drift", values[:800], values, np.zeros(3000, np.int8), 800, ("x",))


def test_predict_runs_the_streaming_policy_and_tolerates_drift():
    case = drifting_case()
    static = Level(POT).fit(case.normal)
    streaming = Level(DSPOT).fit(case.normal)
    assert streaming.threshold_ == streaming.policy_.initial_threshold
    scores = streaming.score(case.values)
    alarms = streaming.predict(case.values)
    assert np.array_equal(alarms, streaming.policy_.flags(scores))
    assert not np.array_equal(alarms, scores > streaming.threshold_)  # the level moves along the series
    late = slice(2000, None)
    assert static.predict(case.values)[late].mean() > 0.5  # a static level alarms on the drift for ever
    assert alarms[late].mean() < 0.01  # the drift baseline has absorbed it


def test_runner_keeps_the_alarms_of_predict_and_fits_once_for_every_policy():
    case = drifting_case()
    protocol = Protocol("synthetic", [case, case], "two copies of one drifting case")
    grid = [POT, DSPOT, Policy.parse("sum | spot:risk=0.01,depth=200")]
    detector = Level(POT)
    with ProgressBar("test", 2, "fits", enabled=False) as bar:
        results = run_cases(protocol, "level", detector, grid, bar)
    assert detector.fits == len(protocol.cases)  # policy-only variants reuse each fit's scores
    for result, policy in zip(results, grid, strict=True):
        assert result.policy == policy and len(result.fit_seconds) == 2
        expected = Level(policy).fit(case.normal).predict(case.values)[case.test_from :]
        assert all(np.array_equal(c.flags, expected) for c in result.cases)


def test_the_grid_and_selection_files_name_policies():
    assert {policy.threshold_rule.kind for policy in policies()} == {"pot", "spot"}
    assert chosen_policy({"policy": "sum | pot:risk=0.01"}).spec == chosen_policy(
        {"calibrator": {"method": "pot", "risk": 0.01, "depth": 0}}).spec
    kept = chosen_policy({"policy": "sum | spot:risk=0.01,depth=32 | hold:n=32", "alarms_teach": False})
    assert kept.spec.endswith("hold:n=32") and not kept.alarms_teach
    endings = {(tuple(r.kind for r in p.rules[p.threshold_index + 1:]), p.alarms_teach) for p in policies()}
    assert endings >= {((), False), (("hold",), True), (("confirm",), False), (("confirm", "hold"), False)}


def test_aelstm_policy_is_its_fitted_one_or_fitted_on_the_same_validation_terms():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    t = np.arange(500)
    normal = np.stack([np.sin(t / 20), np.cos(t / 30)], axis=1) + 0.05 * rng.normal(size=(500, 2))
    spot = Policy.parse("sum | spot:risk=0.01,depth=16")
    detector = build("ae-lstm", Settings(window=8, epochs=2, policy=spot)).fit(normal)
    assert detector.fitted_.config.policy == spot.spec
    assert detector.policy_ is detector.fitted_.policy  # trained with the run's policy: no second fit
    refit = spot.fit(detector.validation_terms_)
    assert json.dumps(refit.to_dict()) == json.dumps(detector.policy_.to_dict())  # the same windows
    assert len(detector.validation_terms_) == detector.fitted_.validation["windows"]
    assert detector.validation_terms_.shape[1] == 2  # reconstruction and prediction terms
    pot = detector.calibrated(POT)
    assert pot.threshold_rule.kind == "pot" and pot.fitted


def test_selection_rule_takes_the_fewest_false_alarms_among_the_best_f1():
    def row(detector, risk, f1, fpr, aelstm=None):
        return {"detector": detector, "aelstm": aelstm or {}, "f1": f1, "fpr": fpr, "policy": f"sum | pot:risk={risk}",
                "alarms_teach": True}

    rows = [row("ae-lstm", 1e-2, 0.80, 0.5, {"patch": 1}), row("pca", 1e-2, 0.80, 0.4),
            row("ae-lstm", 1e-3, 0.795, 0.3, {"patch": 1}), row("pca", 1e-3, 0.795, 0.2),
            row("ae-lstm", 1e-2, 0.82, 0.5, {"patch": 4}), row("ae-lstm", 1e-3, 0.60, 0.1, {"patch": 4}),
            row("ae-lstm", 1e-4, 0.30, 0.0, {"patch": 1}), row("pca", 1e-4, 0.30, 0.0)]
    chosen = choose(rows)  # best mean F1 0.81 (patch 4, risk 1e-2); patch 1 at risk 1e-3 is within the slack
    assert chosen["policy"] == "sum | pot:risk=0.001" and chosen["aelstm"] == {"patch": 1}
    assert chosen["mean_f1"] == pytest.approx(0.795) and 0.81 - chosen["mean_f1"] <= F1_SLACK
