"""The post-rules an alarm policy (`core.policy`) is made of, and their registry.

Each rule has settings (its dataclass fields, written as `kind:key=value,…`) and, once fitted on normal validation
values, a fitted initial state; `start()` gives one stream's state, whose `judge` never mutates and whose `learn`
does. The first rule of a policy reads a window's error terms and gives one value; the last is a threshold.

- `sum` (terms → score): the model's score, the sum of its (weighted) terms: A(t) = α·rec + β·pred.
- `likelihood` (terms → [0, 1)): each term, normalised by its validation mean, against the stream's own past:
  −log10 of its Gaussian tail probability (Numenta's anomaly likelihood), the largest over terms less log10 of
  their count (Bonferroni), mapped s / (s + scale).
- `refractory` (value → value): keeps a value only if it beats every one of the previous `n` (one alarm per episode).
- `fixed`, `quantile`, `pot`, `spot` (value → verdict): a fixed level `value`; the `q` quantile of the validation
  values; peaks over threshold (a GPD tail fit, the level exceeded with probability `risk`); SPOT (`depth` 0) or
  drift-aware DSPOT, the POT level refitted per stream as it goes (`core.spot`).
- `confirm` (verdict → verdict, after the threshold): an alarm is raised only while at least `k` of the last `n`
  threshold verdicts alarmed, so a lone spike over the threshold stays quiet (alerting's "for" duration, as k of n).
- `hold` (verdict → verdict, after the threshold): an alarm stays raised for the next `n` windows, so a long
  anomaly whose score dips below the threshold now and then stays flagged over its length.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field, fields, replace
from typing import Any, ClassVar

import numpy as np
from scipy.special import log_ndtr

from .calibrate import Threshold, pot_threshold, quantile_threshold, spot_threshold
from .errors import DataError
from .spot import SpotConfig, SpotState, StreamingThreshold

LN10 = math.log(10.0)


@dataclass(frozen=True)
class Verdict:
    """What a policy says of one window: the value it judged (`alarm_score`), the threshold in force, alarm."""

    alarm_score: float
    threshold: float
    alarm: bool


class RuleState(ABC):
    """One stream's state of one rule."""

    @abstractmethod
    def judge(self, value: Any) -> Any:
        """What the rule makes of `value` now; never changes the state."""

    def learn(self, value: Any) -> None:  # noqa: B027 - most rules learn nothing
        """Learn from `value` (the same input `judge` got)."""

    @property
    def nbytes(self) -> int:
        return 64

    def to_dict(self) -> dict:
        return {}

    def restore(self, data: dict) -> None:  # noqa: B027 - a stateless rule has nothing to take over
        """Take over what `to_dict` exported from a state of the same rule."""


@dataclass(frozen=True)
class PostRule(ABC):
    """Settings are the dataclass fields; `fitted_state` is what fitting on validation values learnt."""

    kind: ClassVar[str]
    reads_terms: ClassVar[bool] = False  # the policy's first rule reads a window's error terms
    reads_verdict: ClassVar[bool] = False  # a rule after the threshold: verdict → verdict
    fitted_state: dict | None = field(default=None, kw_only=True)

    @property
    def fitted(self) -> bool:
        return self.fitted_state is not None

    @property
    def settings(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "fitted_state"}

    @property
    def spec(self) -> str:
        settings = ",".join(f"{key}={_format(value)}" for key, value in self.settings.items())
        return f"{self.kind}:{settings}" if settings else self.kind

    def fit(self, values: np.ndarray) -> tuple[PostRule, np.ndarray]:
        """(this rule fitted on validation `values` in time order, what it makes of them for the next rule). By
        default the fitted state is what a stream has learnt after streaming through them."""
        state = self._empty()
        outputs = []
        for value in _rows(values, self.reads_terms):
            outputs.append(state.judge(value))
            state.learn(value)
        return replace(self, fitted_state=state.to_dict()), np.asarray(outputs, dtype=np.float64)

    def start(self) -> RuleState:
        state = self._empty()
        state.restore(self.fitted_state or {})
        return state

    @abstractmethod
    def _empty(self) -> RuleState:
        """A state that has learnt nothing."""

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.settings, "fitted_state": self.fitted_state}

    @classmethod
    def from_dict(cls, data: dict) -> PostRule:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"kind"})
        if unknown:
            takes = sorted(known - {"fitted_state"})
            raise DataError(f"rule {cls.kind!r} has no setting(s) {unknown}; it takes {takes}")
        return cls(**{key: value for key, value in data.items() if key != "kind"})


class _SumState(RuleState):
    def judge(self, terms: tuple[float, ...]) -> float:
        return math.fsum(terms)


@dataclass(frozen=True)
class Sum(PostRule):
    kind: ClassVar[str] = "sum"
    reads_terms: ClassVar[bool] = True

    def fit(self, values: np.ndarray) -> tuple[PostRule, np.ndarray]:
        return replace(self, fitted_state={}), np.asarray(values, dtype=np.float64).sum(axis=1)

    def _empty(self) -> RuleState:
        return _SumState()


class _Reference:
    """Mean and spread of the values seen (Welford), or of the last `long` of them (a ring of running sums)."""

    __slots__ = ("count", "long", "m2", "mean", "ring", "squares", "total")

    def __init__(self, long: int | None) -> None:
        self.long = long
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.ring: deque[float] | None = deque(maxlen=long) if long else None
        self.total = self.squares = 0.0

    def add(self, value: float) -> None:
        if self.ring is None:
            self.count += 1
            delta = value - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (value - self.mean)
            return
        if len(self.ring) == self.ring.maxlen:
            dropped = self.ring[0]
            self.total -= dropped
            self.squares -= dropped * dropped
        self.ring.append(value)
        self.total += value
        self.squares += value * value
        self.count = len(self.ring)

    def stats(self) -> tuple[float, float]:
        """(mean, standard deviation) of the reference."""
        if self.ring is None:
            return self.mean, math.sqrt(max(self.m2 / self.count, 0.0)) if self.count else 0.0
        mean = self.total / self.count
        return mean, math.sqrt(max(self.squares / self.count - mean * mean, 0.0))

    def to_dict(self) -> dict:
        if self.ring is None:
            return {"count": self.count, "mean": self.mean, "m2": self.m2}
        return {"values": list(self.ring)}

    def restore(self, data: dict) -> None:
        if self.ring is None:
            self.count, self.mean, self.m2 = int(data["count"]), float(data["mean"]), float(data["m2"])
            return
        self.ring.clear()
        self.total = self.squares = 0.0
        for value in data["values"]:
            self.add(float(value))


class _LikelihoodState(RuleState):
    def __init__(self, rule: Likelihood, n_terms: int, scales: list[float]) -> None:
        self.rule = rule
        self.scales = scales
        self.recent = [deque(maxlen=max(rule.short - 1, 0) or None) for _ in range(n_terms)]
        self.references = [_Reference(rule.long) for _ in range(n_terms)]
        self.bonferroni = math.log10(n_terms) if n_terms else 0.0

    def _smoothed(self, k: int, value: float) -> float:
        if self.rule.short <= 1:
            return value
        recent = self.recent[k]
        return (math.fsum(recent) + value) / (len(recent) + 1)

    def judge(self, terms: tuple[float, ...]) -> float:
        if len(terms) != len(self.references):
            raise DataError(f"likelihood rule was fitted on {len(self.references)} terms, got {len(terms)}")
        best = 0.0
        for k, term in enumerate(terms):
            if math.isnan(term):
                return math.nan
            reference = self.references[k]
            if reference.count < self.rule.min_history:
                continue
            mean, std = reference.stats()
            z = (self._smoothed(k, term / self.scales[k]) - mean) / max(std, self.rule.min_std)
            best = max(best, -float(log_ndtr(-z)) / LN10)
        combined = max(best - self.bonferroni, 0.0)
        return combined / (combined + self.rule.scale)

    def learn(self, terms: tuple[float, ...]) -> None:
        if any(math.isnan(term) for term in terms):
            return
        for k, term in enumerate(terms):
            value = term / self.scales[k]
            self.references[k].add(self._smoothed(k, value))
            if self.rule.short > 1:
                self.recent[k].append(value)

    @property
    def nbytes(self) -> int:
        ring = (self.rule.long or 3) + self.rule.short
        return 64 + len(self.references) * 8 * (ring + 8)

    def to_dict(self) -> dict:
        return {"scales": self.scales, "recent": [list(r) for r in self.recent],
                "references": [r.to_dict() for r in self.references]}

    def restore(self, data: dict) -> None:
        for recent, values in zip(self.recent, data["recent"], strict=True):
            recent.clear()
            recent.extend(float(v) for v in values)
        for reference, exported in zip(self.references, data["references"], strict=True):
            reference.restore(exported)


@dataclass(frozen=True)
class Likelihood(PostRule):
    """`short`: values averaged into the current one; `long`: most past values in the reference (None: all);
    `min_history`: reference values needed before any is judged; `min_std`: floor on the reference spread (terms
    are normalised to mean 1 on validation); `scale`: −log10 tail that maps to 0.5."""

    kind: ClassVar[str] = "likelihood"
    reads_terms: ClassVar[bool] = True
    short: int = 1
    long: int | None = None
    min_history: int = 20
    min_std: float = 0.01
    scale: float = 5.0

    def __post_init__(self) -> None:
        if self.short < 1 or (self.long is not None and self.long < 2) or self.min_history < 2:
            raise DataError("likelihood needs short ≥ 1, long ≥ 2 (or none) and min_history ≥ 2")
        if self.min_std <= 0 or self.scale <= 0:
            raise DataError("likelihood needs min_std > 0 and scale > 0")

    def fit(self, values: np.ndarray) -> tuple[PostRule, np.ndarray]:
        values = np.asarray(values, dtype=np.float64)
        scales = [max(float(np.mean(values[:, k])), 1e-12) for k in range(values.shape[1])]
        state = _LikelihoodState(self, values.shape[1], scales)
        outputs = []
        for row in _rows(values, True):
            outputs.append(state.judge(row))
            state.learn(row)
        return replace(self, fitted_state=state.to_dict()), np.asarray(outputs)

    def start(self) -> RuleState:
        data = self.fitted_state or {}
        state = _LikelihoodState(self, len(data.get("scales", ())), list(data.get("scales", ())))
        if data:
            state.restore(data)
        return state

    def _empty(self) -> RuleState:
        raise NotImplementedError  # a likelihood state needs its fitted term scales: see `start`


class _RefractoryState(RuleState):
    def __init__(self, n: int) -> None:
        self.previous: deque[float] = deque(maxlen=n)

    def judge(self, value: float) -> float:
        if math.isnan(value) or not self.previous:
            return value
        return value if value > max(self.previous) else 0.0

    def learn(self, value: float) -> None:
        if not math.isnan(value):
            self.previous.append(value)

    @property
    def nbytes(self) -> int:
        return 64 + 8 * (self.previous.maxlen or 0)

    def to_dict(self) -> dict:
        return {"previous": list(self.previous)}

    def restore(self, data: dict) -> None:
        self.previous.clear()
        self.previous.extend(float(v) for v in data.get("previous", ()))


@dataclass(frozen=True)
class Refractory(PostRule):
    """`n`: a value is kept only if it beats every one of the previous `n` (0 otherwise)."""

    kind: ClassVar[str] = "refractory"
    n: int = 100

    def __post_init__(self) -> None:
        if self.n < 1:
            raise DataError(f"refractory needs n ≥ 1, got {self.n}")

    def _empty(self) -> RuleState:
        return _RefractoryState(self.n)


class _FixedState(RuleState):
    def __init__(self, value: float) -> None:
        self.value = value

    def judge(self, value: float) -> Verdict:
        return Verdict(value, self.value, (not math.isnan(value)) and value > self.value)


class _SpotRuleState(RuleState):
    def __init__(self, state: SpotState) -> None:
        self.state = state

    def judge(self, value: float) -> Verdict:
        threshold, alarm = self.state.judge(value)
        return Verdict(value, threshold, alarm)

    def learn(self, value: float) -> None:
        self.state.learn(value)

    @property
    def nbytes(self) -> int:
        return self.state.nbytes

    def to_dict(self) -> dict:
        return self.state.to_dict()

    def restore(self, data: dict) -> None:
        if data:
            self.state.restore(data)


@dataclass(frozen=True)
class ThresholdRule(PostRule):
    """The policy's last rule: values become verdicts. Fitted state: the calibrated `Threshold`."""

    def fit(self, values: np.ndarray) -> tuple[PostRule, np.ndarray]:
        scores = _scalars(values)
        threshold = self._calibrate(scores[np.isfinite(scores)])
        return replace(self, fitted_state=threshold.to_dict()), scores

    @abstractmethod
    def _calibrate(self, scores: np.ndarray) -> Threshold: ...

    @property
    def threshold(self) -> Threshold:
        data = self.fitted_state or {}
        streaming = data.get("streaming")
        return Threshold(float(data["value"]), str(data["method"]), dict(data.get("params") or {}),
                         None if streaming is None else StreamingThreshold.from_dict(streaming))

    def start(self) -> RuleState:
        threshold = self.threshold
        if threshold.streaming is None:
            return _FixedState(threshold.value)
        return _SpotRuleState(threshold.streaming.start())

    def _empty(self) -> RuleState:
        raise NotImplementedError  # a threshold state is its calibration: see `start`


@dataclass(frozen=True)
class Fixed(ThresholdRule):
    kind: ClassVar[str] = "fixed"
    value: float = 0.5

    def _calibrate(self, scores: np.ndarray) -> Threshold:
        return Threshold(float(self.value), "fixed", {"value": self.value})


@dataclass(frozen=True)
class Quantile(ThresholdRule):
    kind: ClassVar[str] = "quantile"
    q: float = 0.995

    def _calibrate(self, scores: np.ndarray) -> Threshold:
        return quantile_threshold(scores, self.q)


@dataclass(frozen=True)
class Pot(ThresholdRule):
    kind: ClassVar[str] = "pot"
    risk: float = 1e-3
    initial_q: float = 0.98

    def _calibrate(self, scores: np.ndarray) -> Threshold:
        return pot_threshold(scores, self.risk, self.initial_q)


@dataclass(frozen=True)
class Spot(ThresholdRule):
    """`depth` 0: SPOT; > 0: DSPOT against the mean of the stream's last `depth` values."""

    kind: ClassVar[str] = "spot"
    risk: float = 1e-4
    depth: int = 512
    initial_q: float = 0.98
    max_peaks: int = 256

    def __post_init__(self) -> None:
        SpotConfig(self.risk, self.initial_q, self.depth, self.max_peaks)  # validates

    def _calibrate(self, scores: np.ndarray) -> Threshold:
        return spot_threshold(scores, SpotConfig(self.risk, self.initial_q, self.depth, self.max_peaks))


@dataclass(frozen=True)
class VerdictRule(PostRule):
    """A rule after the threshold (verdict → verdict): it learns from the verdicts it is given, nothing from fitting."""

    reads_verdict: ClassVar[bool] = True

    def fit(self, values: np.ndarray) -> tuple[PostRule, np.ndarray]:
        return replace(self, fitted_state={}), values


class _ConfirmState(RuleState):
    def __init__(self, k: int, n: int) -> None:
        self.k = k
        self.recent: deque[bool] = deque(maxlen=n - 1)  # the previous n − 1 verdicts' alarms (n = 1: none)

    def judge(self, verdict: Verdict) -> Verdict:
        if math.isnan(verdict.alarm_score):
            return verdict
        confirmed = sum(self.recent) + verdict.alarm >= self.k
        return verdict if confirmed == verdict.alarm else Verdict(verdict.alarm_score, verdict.threshold, confirmed)

    def learn(self, verdict: Verdict) -> None:
        """Remember the verdict it was given (a window not yet scorable counts for nothing)."""
        if self.recent.maxlen and not math.isnan(verdict.alarm_score):
            self.recent.append(verdict.alarm)

    @property
    def nbytes(self) -> int:
        return 64 + (self.recent.maxlen or 0)

    def to_dict(self) -> dict:
        return {"recent": [int(alarm) for alarm in self.recent]}

    def restore(self, data: dict) -> None:
        self.recent.clear()
        self.recent.extend(bool(alarm) for alarm in data.get("recent", ()))


@dataclass(frozen=True)
class Confirm(VerdictRule):
    """`k` of the last `n` verdicts (this one included) must have alarmed for an alarm to be raised."""

    kind: ClassVar[str] = "confirm"
    k: int = 6
    n: int = 8

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise DataError(f"confirm needs 1 ≤ k ≤ n, got k={self.k}, n={self.n}")

    def _empty(self) -> RuleState:
        return _ConfirmState(self.k, self.n)


class _SinceAlarmState(RuleState):
    """A count of the windows judged since an alarm (None: none yet), for rules that act for `n` windows after one."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.since: int | None = None

    def _within(self) -> bool:
        return self.since is not None and self.since < self.n

    def to_dict(self) -> dict:
        return {"since": self.since}

    def restore(self, data: dict) -> None:
        since = data.get("since")
        self.since = None if since is None else int(since)


class _HoldState(_SinceAlarmState):
    def judge(self, verdict: Verdict) -> Verdict:
        if verdict.alarm or not self._within() or math.isnan(verdict.alarm_score):
            return verdict
        return Verdict(verdict.alarm_score, verdict.threshold, True)

    def learn(self, verdict: Verdict) -> None:
        """Count from the alarms it was given (not the held ones: a hold never extends itself)."""
        if verdict.alarm:
            self.since = 0
        elif self.since is not None and not math.isnan(verdict.alarm_score):
            self.since += 1


@dataclass(frozen=True)
class _SinceAlarmRule(VerdictRule):
    """A rule that acts for `n` windows after an alarm (its state: `state`)."""

    state: ClassVar[type[_SinceAlarmState]]
    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise DataError(f"{self.kind} needs n ≥ 1 windows, got {self.n}")

    def _empty(self) -> RuleState:
        return self.state(self.n)


@dataclass(frozen=True)
class Hold(_SinceAlarmRule):
    """`n`: an alarm it is given is held for the next `n` windows."""

    kind: ClassVar[str] = "hold"
    state: ClassVar[type[_SinceAlarmState]] = _HoldState
    n: int = 32


class _SuppressState(_SinceAlarmState):
    def judge(self, verdict: Verdict) -> Verdict:
        if verdict.alarm and self._within():
            return Verdict(verdict.alarm_score, verdict.threshold, False)
        return verdict

    def learn(self, verdict: Verdict) -> None:
        """Count from the alarms it let through (a suppressed one never extends the quiet)."""
        if math.isnan(verdict.alarm_score):
            return
        if verdict.alarm and not self._within():
            self.since = 0
        elif self.since is not None:
            self.since += 1


@dataclass(frozen=True)
class Suppress(_SinceAlarmRule):
    """`n`: after an alarm it lets through, the next `n` windows raise none (Merlion's alarm suppression): a device
    that stays over its threshold pages once per `n` windows, not on every window."""

    kind: ClassVar[str] = "suppress"
    state: ClassVar[type[_SinceAlarmState]] = _SuppressState
    n: int = 100


RULES: dict[str, type[PostRule]] = {
    rule.kind: rule for rule in (Sum, Likelihood, Refractory, Fixed, Quantile, Pot, Spot, Confirm, Hold, Suppress)
}


def parse_rule(text: str) -> PostRule:
    """`kind` or `kind:key=value,key=value` (values: numbers, `none`/`all` for no limit)."""
    kind, _, settings = text.partition(":")
    kind = kind.strip()
    if kind not in RULES:
        raise DataError(f"unknown alarm rule {kind!r}; choose from {sorted(RULES)}")
    values: dict[str, Any] = {}
    for pair in filter(None, (p.strip() for p in settings.split(","))):
        key, eq, raw = pair.partition("=")
        if not eq:
            raise DataError(f"alarm rule {text!r}: setting {pair!r} is not key=value")
        values[key.strip()] = _parse_value(raw.strip())
    try:
        return RULES[kind].from_dict(values)
    except TypeError as exc:
        raise DataError(f"alarm rule {text!r}: {exc}") from exc


def _parse_value(raw: str) -> Any:
    if raw.lower() in ("none", "all"):
        return None
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            continue
    raise DataError(f"setting value {raw!r} is not a number (or none)")


def _format(value: Any) -> str:
    return "none" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _rows(values: np.ndarray, terms: bool):
    """Per-row inputs as a stream sees them: tuples of terms, or floats."""
    array = np.asarray(values, dtype=np.float64)
    if terms:
        return [tuple(row) for row in array.reshape(len(array), -1).tolist()]
    return _scalars(array).tolist()


def _scalars(values: np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise DataError("this rule reads one value per window: put `sum` or `likelihood` before it")
    return array
