"""The alarm policy: one serializable sequence of post-rules that turns a model's error terms into alarms.

A model scores a window as error terms (the AE-LSTM's weighted reconstruction and prediction errors; a baseline's
single score). The policy turns each stream's terms into a verdict, in time order:

    terms ─► rule ─► … ─► threshold rule ─► Verdict(alarm score, threshold in force, alarm) [─► confirm] [─► hold]

for example `sum | spot:depth=512` (the score A(t) = α·rec + β·pred against a drift-aware SPOT threshold) or
`likelihood | refractory:n=100 | fixed:value=0.5` (each term's anomaly likelihood against the device's own past,
only new highs, a fixed level). Rules are fitted in order on normal validation terms by `aelstm train`, written to
the manifest as one object and rebuilt from it (`Policy.from_dict`) wherever a score becomes an alarm: `aelstm
score`, the ingress per device, `Detector.flags`, the evaluation harness and the NAB benchmark.

Judging is kept apart from learning (river's `score_one` / `learn_one`): `StreamState.judge` never changes
anything, `StreamState.learn` does. `StreamState.step` judges, then learns unless the policy says alarms do not
teach (`alarms_teach=False`): then a stream's alarms never move its baseline or tail, so a long anomaly stays
flagged, at the price that a real shift of normal behaviour keeps alarming until the model is retrained. A `hold`
after the threshold keeps an alarm raised for its next `n` windows, so the dips of a long anomaly's score stay
flagged (and, when alarms do not teach, teach nothing either); a `confirm` before it raises an alarm only when `k` of
the threshold's last `n` verdicts alarmed, so lone spikes stay quiet (when alarms do not teach, a window over the
threshold teaches nothing, confirmed or not: a long anomaly's first windows never raise the level it must cross).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from .errors import DataError
from .rules import RULES, Fixed, PostRule, RuleState, Sum, ThresholdRule, Verdict, parse_rule

__all__ = ["DEFAULT_POLICY", "MULTIVARIATE_POLICY", "Policy", "StreamState", "Verdict", "default_policy"]

# The shipped policy: the score against a drift-aware DSPOT threshold, then no new alarm for 128 windows after one,
# chosen on NAB's development half by the alarms a served model raises (`python -m benchmarks.nab.served`).
DEFAULT_POLICY = "sum | spot:risk=0.001,depth=512 | suppress:n=128"
# The shipped policy for several sensors: a static POT level whose alarms stand only while 12 of the last 16 windows
# exceeded it, chosen on SKAB's development runs (`python -m benchmarks.quality.select`), whose anomalies last
# hundreds of readings.
MULTIVARIATE_POLICY = "sum | pot:risk=0.01 | confirm:k=12,n=16"


def default_policy(n_features: int) -> str:
    """The shipped policy for data of this shape: each was chosen on development data of that shape."""
    return DEFAULT_POLICY if n_features == 1 else MULTIVARIATE_POLICY


VERDICT_RULE_ORDER = ("confirm", "hold", "suppress")  # the rules after the threshold, in the order they may come


@dataclass(frozen=True)
class Policy:
    """Post-rules, fitted or not; the last is a threshold rule. `alarms_teach`: whether a stream learns from the
    scores it alarms on."""

    rules: tuple[PostRule, ...]
    alarms_teach: bool = True

    def __post_init__(self) -> None:
        if not self.rules or not self.rules[0].reads_terms:
            raise DataError("an alarm policy starts with a rule that reads error terms (sum or likelihood)")
        thresholds = [i for i, rule in enumerate(self.rules) if isinstance(rule, ThresholdRule)]
        if not thresholds:
            raise DataError("an alarm policy must end with a threshold rule (fixed, quantile, pot or spot), "
                            "optionally followed by confirm, hold and suppress rules")
        if len(thresholds) > 1:
            raise DataError("an alarm policy has exactly one threshold rule")
        before, after = self.rules[: thresholds[0]], self.rules[thresholds[0] + 1 :]
        if any(rule.reads_verdict for rule in before):
            raise DataError("confirm, hold and suppress rules come after the threshold rule (they read its alarms)")
        kinds = [rule.kind for rule in after]
        if kinds != [kind for kind in VERDICT_RULE_ORDER if kind in kinds]:
            raise DataError("after its threshold rule an alarm policy may have, in this order, at most one each of: "
                            + ", ".join(VERDICT_RULE_ORDER))

    @classmethod
    def parse(cls, spec: str, alarms_teach: bool = True) -> Policy:
        """`kind[:key=value,…] | kind …` (see `core.rules`), e.g. `likelihood | refractory:n=100 | fixed:value=0.5`."""
        parts = [part.strip() for part in spec.split("|")]
        if not all(parts):
            raise DataError(f"alarm policy {spec!r} has an empty rule; rules are separated by '|'")
        return cls(tuple(parse_rule(part) for part in parts), alarms_teach)

    @classmethod
    def fixed(cls, value: float, method: str) -> Policy:
        """A fitted `sum | fixed` policy at `value`, chosen without normal scores (a classifier's own boundary)."""
        threshold = {"value": float(value), "method": method, "params": {}}
        return cls((Sum(fitted_state={}), Fixed(value=float(value), fitted_state=threshold)))

    @property
    def spec(self) -> str:
        """The settings alone, as `parse` reads them (fitted state left out)."""
        return " | ".join(rule.spec for rule in self.rules)

    @property
    def label(self) -> str:
        return self.spec + ("" if self.alarms_teach else " (alarms do not teach)")

    @cached_property
    def threshold_index(self) -> int:
        """Where the threshold rule stands (asked on every judged window: found once)."""
        return next(i for i, rule in enumerate(self.rules) if isinstance(rule, ThresholdRule))

    @property
    def threshold_rule(self) -> ThresholdRule:
        return self.rules[self.threshold_index]  # type: ignore[return-value]

    @property
    def fitted(self) -> bool:
        return all(rule.fitted for rule in self.rules)

    def fit(self, terms: np.ndarray) -> Policy:
        """This policy fitted on normal validation terms `[time, k]` (or scores `[time]`), in time order: each
        rule learns from what the rules before it made of them."""
        values = _as_terms(terms)
        values = values[np.isfinite(values).all(axis=1)]
        if len(values) < 2:
            raise DataError("need at least 2 finite normal scores to fit an alarm policy")
        fitted = []
        for rule in self.rules:
            rule, values = rule.fit(values)
            fitted.append(rule)
        return Policy(tuple(fitted), self.alarms_teach)

    def start(self) -> StreamState:
        """A new stream (a device, a series) judged from the fitted state."""
        if not self.fitted:
            raise DataError(f"alarm policy {self.spec!r} is not fitted: fit it on normal scores first")
        return StreamState(self, [rule.start() for rule in self.rules])

    @property
    def initial_threshold(self) -> float:
        """The threshold before any streamed score (what a static calibration would ship)."""
        return self.start().states[self.threshold_index].judge(math.nan).threshold

    def run(self, terms: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(alarms, alarm scores, thresholds in force) over one stream in time order, from a fresh state; rows
        with a non-finite term (no full window yet) never alarm and teach nothing."""
        values = _as_terms(terms)
        state = self.start()
        verdicts = [state.step(row) for row in values]
        return (np.array([v.alarm for v in verdicts], dtype=bool), np.array([v.alarm_score for v in verdicts]),
                np.array([v.threshold for v in verdicts]))

    def flags(self, terms: np.ndarray) -> np.ndarray:
        """Alarms over one stream in time order."""
        return self.run(terms)[0]

    @cached_property
    def calibration(self) -> str:
        """A digest of the rules, settings and fitted calibration: a stream's state carries over only to a policy
        with the same (a re-deploy, a rollback to the same content, another ingress serving the same version). A
        retrained model scores on its own scale, so a state learnt on the old one's scores would misjudge it: its
        devices start from its own calibration (on NAB's development half, carrying over lost 41 standard points
        retraining every 1,000 readings, `benchmarks/results/nab/learning.md`)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"alarms_teach": self.alarms_teach, "rules": [rule.to_dict() for rule in self.rules]}

    @classmethod
    def from_dict(cls, data: dict) -> Policy:
        try:
            rules = tuple(RULES[rule["kind"]].from_dict(rule) for rule in data["rules"])
            return cls(rules, bool(data.get("alarms_teach", True)))
        except KeyError as exc:
            raise DataError(f"malformed alarm policy: unknown or missing {exc}") from exc
        except (TypeError, ValueError) as exc:
            raise DataError(f"malformed alarm policy: {exc}") from exc


@dataclass
class StreamState:
    """One stream's state under a policy: `judge` (pure), `learn` (mutating), `step` (both)."""

    policy: Policy
    states: list[RuleState] = field(default_factory=list)

    def judge(self, terms) -> Verdict:
        """The verdict on one window's terms; changes nothing."""
        return self._judged(_row(terms))[1]

    def _judged(self, terms: tuple[float, ...]) -> tuple[list, Verdict]:
        """(what each rule read, the final verdict)."""
        value, inputs = terms, []
        for state in self.states:
            inputs.append(value)
            value = state.judge(value)
        return inputs, value

    def learn(self, terms) -> None:
        """Learn from one window's terms (every rule from what the rules before it made of them)."""
        inputs, _ = self._judged(_row(terms))
        self._learn(inputs)

    def _learn(self, inputs: list, teach: bool = True) -> None:
        cut = self.policy.threshold_index
        if teach:
            for state, given in zip(self.states[: cut + 1], inputs[: cut + 1], strict=True):
                state.learn(given)
        for state, given in zip(self.states[cut + 1 :], inputs[cut + 1 :], strict=True):  # every window, taught or not
            state.learn(given)

    def step(self, terms) -> Verdict:
        """Judge, then learn, unless alarms do not teach and the window went over the threshold (confirmed yet or
        not) or is held."""
        inputs, verdict = self._judged(_row(terms))
        after = inputs[self.policy.threshold_index + 1 :]  # the threshold's own verdict leads, when rules follow it
        over = after[0] if after else verdict
        self._learn(inputs, teach=self.policy.alarms_teach or not (verdict.alarm or over.alarm))
        return verdict

    @property
    def nbytes(self) -> int:
        return sum(state.nbytes for state in self.states) + 64

    def to_dict(self) -> dict:
        """What this stream has learnt, to carry it to another process or model version (`restore`)."""
        return {"spec": self.policy.spec, "calibration": self.policy.calibration,
                "states": [state.to_dict() for state in self.states]}

    def restore(self, data: dict) -> bool:
        """Take over an exported state when it was learnt under the same calibrated policy (`Policy.calibration`);
        False (nothing changed) when it was not."""
        if data.get("calibration") != self.policy.calibration or len(data.get("states", ())) != len(self.states):
            return False
        for state, exported in zip(self.states, data["states"], strict=True):
            state.restore(exported)
        return True


def _as_terms(terms: np.ndarray) -> np.ndarray:
    values = np.asarray(terms, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[1] < 1:
        raise DataError(f"alarm policy input must be scores [time] or terms [time, k], got shape {values.shape}")
    return values


def _row(terms) -> tuple[float, ...]:
    if isinstance(terms, tuple):
        return terms
    if isinstance(terms, float | int):
        return (float(terms),)
    return tuple(float(t) for t in np.asarray(terms, dtype=np.float64).ravel())
