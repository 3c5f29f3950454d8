"""The NAB score: window-weighted detections, three cost profiles, a corpus-wide threshold, normalisation.

The threshold sweep is exact and fast. For a threshold T, a window's contribution is the weight of its earliest
row scoring ≥ T; that earliest row only changes at the window's running-maximum records, so each window yields a
handful of (score, Δraw) events, and every row outside windows yields one. Sorting all events by score and taking a
cumulative sum gives the corpus raw score at every candidate threshold at once; thresholds between event scores
score the same as the next event above them, so with ties going to the higher threshold the optimum is always an
event score (or 1.1, no detections).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from aelstm.core.errors import DataError

from .corpus import NabFile

NO_DETECTION_THRESHOLD = 1.1


@dataclass(frozen=True)
class Profile:
    """Costs of one NAB profile: reward of a true positive, costs of a missed window and a false positive."""

    name: str
    tp: float
    fn: float
    fp: float


PROFILES = (
    Profile("standard", tp=1.0, fn=1.0, fp=0.11),
    Profile("reward_low_FP_rate", tp=1.0, fn=1.0, fp=0.22),
    Profile("reward_low_FN_rate", tp=1.0, fn=2.0, fp=0.11),
)


def scaled_sigmoid(x: np.ndarray) -> np.ndarray:
    """σ(x) = 2/(1+e^(5x)) − 1, and −1 beyond x > 3 (far from a window a false positive costs fully)."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(over="ignore"):
        value = 2.0 / (1.0 + np.exp(5.0 * x)) - 1.0
    return np.where(x > 3.0, -1.0, value)


@dataclass(frozen=True)
class FileLayout:
    """Where each scored row (after the probationary period) stands relative to the file's windows.

    `unit` is the profile-free weight: inside a window σ(pos)/σ(−1) (× tpW gives the reward), outside a window
    −1 or σ(distance to the preceding window) (× fpW gives the cost).
    """

    probation: int
    windows: tuple[tuple[int, int], ...]  # inclusive rows, counted from the first scored row
    inside: np.ndarray  # [scored rows] bool
    unit: np.ndarray  # [scored rows] float64

    @classmethod
    def build(cls, rows: int, windows: Sequence[tuple[int, int]], probation: int) -> FileLayout:
        scored = rows - probation
        if scored < 0:
            raise DataError(f"probationary period {probation} is longer than the file ({rows} rows)")
        index = np.arange(scored, dtype=np.float64)
        inside = np.zeros(scored, dtype=bool)
        unit = np.full(scored, -1.0)  # before the first window a false positive costs fpW
        shifted = []
        for first, last in sorted(windows):
            first, last = first - probation, last - probation
            if first < 0 or last >= scored or last < first or (shifted and first <= shifted[-1][1]):
                raise DataError(f"window rows {(first + probation, last + probation)} are invalid for this file")
            width = last - first + 1
            inside[first : last + 1] = True
            position = -(last - index[first : last + 1] + 1) / width
            unit[first : last + 1] = scaled_sigmoid(position) / scaled_sigmoid(-1.0)
            after = index[last + 1 :]
            with np.errstate(divide="ignore"):
                position = np.abs(after - last) / (width - 1) if width > 1 else np.full(len(after), np.inf)
            unit[last + 1 :] = scaled_sigmoid(position)  # later windows overwrite their own rows and beyond
            shifted.append((first, last))
        return cls(probation, tuple(shifted), inside, unit)

    @classmethod
    def of(cls, nab: NabFile) -> FileLayout:
        return cls.build(len(nab.values), nab.windows, nab.probation)


def _checked(scores: np.ndarray, layout: FileLayout) -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (layout.probation + len(layout.unit),):
        raise DataError(f"{len(scores)} scores for a file of {layout.probation + len(layout.unit)} rows")
    scored = scores[layout.probation :]
    if not np.isfinite(scored).all():
        raise DataError("anomaly scores after the probationary period must be finite")
    return scored


def file_events(scores: np.ndarray, layout: FileLayout, profile: Profile) -> tuple[np.ndarray, np.ndarray]:
    """(score, Δraw) events of one file: lowering the threshold to `score` adds `Δraw` to the raw score."""
    scored = _checked(scores, layout)
    event_scores = [scored[~layout.inside]]
    deltas = [profile.fp * layout.unit[~layout.inside]]
    for first, last in layout.windows:
        window = scored[first : last + 1]
        records = np.flatnonzero(np.r_[True, window[1:] > np.maximum.accumulate(window)[:-1]])
        weights = profile.tp * layout.unit[first + records]
        # The highest record turns the missed window (−fnW) into a hit; each earlier record moves the hit earlier.
        event_scores.append(window[records])
        deltas.append(np.r_[weights[:-1] - weights[1:], weights[-1] + profile.fn])
    return np.concatenate(event_scores), np.concatenate(deltas)


def file_counts(scores: np.ndarray, layout: FileLayout, profile: Profile, threshold: float) -> dict:
    """Raw score, hit/missed windows and false positives of one file at `threshold`, straight from the definition."""
    detected = _checked(scores, layout) >= threshold
    raw, hits = 0.0, 0
    for first, last in layout.windows:
        rows = np.flatnonzero(detected[first : last + 1])
        if len(rows):
            raw += profile.tp * layout.unit[first + rows[0]]
            hits += 1
        else:
            raw -= profile.fn
    false_positives = detected & ~layout.inside
    raw += profile.fp * layout.unit[false_positives].sum()
    return {"raw": raw, "tp": hits, "fn": len(layout.windows) - hits, "fp": int(false_positives.sum())}


@dataclass(frozen=True)
class ProfileResult:
    """One profile at one threshold: raw and normalised score and the detection counts behind them."""

    profile: str
    threshold: float
    raw: float
    score: float
    tp: int
    fn: int
    fp: int

    def to_dict(self) -> dict:
        return asdict(self)


class NabScorer:
    """Scores a whole corpus of per-row anomaly scores (one array per file, in the corpus order)."""

    def __init__(self, layouts: Sequence[FileLayout]) -> None:
        self.layouts = list(layouts)
        self.windows = sum(len(layout.windows) for layout in self.layouts)

    @classmethod
    def of(cls, corpus: Sequence[NabFile]) -> NabScorer:
        return cls([FileLayout.of(nab) for nab in corpus])

    def _check(self, scores: Sequence[np.ndarray]) -> None:
        if len(scores) != len(self.layouts):
            raise DataError(f"{len(scores)} score arrays for a corpus of {len(self.layouts)} files")

    def normalise(self, raw: float, profile: Profile) -> float:
        """100 · (raw − null) / (perfect − null): 0 never fires, 100 hits every window on its first row."""
        null, perfect = -profile.fn * self.windows, profile.tp * self.windows
        return 100.0 * (raw - null) / (perfect - null)

    def sweep(self, scores: Sequence[np.ndarray], profile: Profile) -> tuple[np.ndarray, np.ndarray]:
        """Candidate thresholds (1.1 then every event score, descending) and the corpus raw score at each."""
        self._check(scores)
        events = [file_events(s, layout, profile) for s, layout in zip(scores, self.layouts, strict=True)]
        event_scores = np.concatenate([e[0] for e in events])
        deltas = np.concatenate([e[1] for e in events])
        thresholds, inverse = np.unique(-event_scores, return_inverse=True)  # descending scores
        raw = -profile.fn * self.windows + np.cumsum(np.bincount(inverse, weights=deltas, minlength=len(thresholds)))
        return np.r_[NO_DETECTION_THRESHOLD, -thresholds], np.r_[-profile.fn * self.windows, raw]

    def at(self, scores: Sequence[np.ndarray], profile: Profile, threshold: float) -> ProfileResult:
        """The profile's result at a fixed threshold (for example the detector's own production threshold)."""
        self._check(scores)
        counts = [file_counts(s, layout, profile, threshold) for s, layout in zip(scores, self.layouts, strict=True)]
        raw = float(sum(c["raw"] for c in counts))
        return ProfileResult(
            profile.name,
            float(threshold),
            raw,
            self.normalise(raw, profile),
            *(int(sum(c[k] for c in counts)) for k in ("tp", "fn", "fp")),
        )

    def optimised(self, scores: Sequence[np.ndarray], profile: Profile) -> ProfileResult:
        """The result at the corpus-wide threshold that maximises the raw score (ties → the higher threshold)."""
        thresholds, raw = self.sweep(scores, profile)
        best = int(np.argmax(raw))  # first maximum = highest threshold among ties
        return self.at(scores, profile, thresholds[best])

    def report(self, scores: Sequence[np.ndarray], thresholds: Mapping[str, float]) -> dict:
        """All three profiles at the given per-profile thresholds (chosen elsewhere, for example on other files) and,
        scoreboard-style, at the thresholds that are optimal for these very files."""
        return {
            "at_threshold": {p.name: self.at(scores, p, thresholds[p.name]).to_dict() for p in PROFILES},
            "optimised": {p.name: self.optimised(scores, p).to_dict() for p in PROFILES},
        }
