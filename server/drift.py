"""How far a fleet's recent scores have moved from its model's calibration data: the p99 exceedance ratio.

Over the last `DRIFT_WINDOWS` windows the model scored, the share whose score is above the calibration (held-out
normal) scores' 99th percentile, divided by the 1 % expected there. 1 means the fleet behaves as when it was
calibrated; 5 means high scores come five times as often (a fleet that drifted, or one with many anomalies); below
1 means quieter than calibration. It needs no labels, costs one comparison per window, reads the same for every
model (each against its own p99), and starts again when a new version is served. It is reported once
`MIN_WINDOWS` windows were seen.
"""

from __future__ import annotations

import numpy as np

DRIFT_WINDOWS = 10_000
MIN_WINDOWS = 200
CALIBRATION_TAIL = 0.01  # the share of calibration scores above their p99


class _Ring:
    """The last `size` above-p99 flags of one model, with their running count."""

    def __init__(self, size: int) -> None:
        self.flags = np.zeros(size, dtype=bool)
        self.next = 0
        self.seen = 0
        self.above = 0

    def add(self, above: np.ndarray) -> None:
        size = len(self.flags)
        above = above[-size:]
        slots = (self.next + np.arange(len(above))) % size
        self.above += int(above.sum()) - int(self.flags[slots].sum())
        self.flags[slots] = above
        self.next = (self.next + len(above)) % size
        self.seen = min(size, self.seen + len(above))


class DriftMeter:
    """Per served model (by key): the p99 exceedance ratio of its recent scores."""

    def __init__(self, windows: int = DRIFT_WINDOWS, min_windows: int = MIN_WINDOWS) -> None:
        self.windows, self.min_windows = windows, min_windows
        self._rings: dict[str, _Ring] = {}

    def observe(self, key: str, scores: np.ndarray, calibration_p99: float | None) -> None:
        if calibration_p99 is None or not len(scores):
            return
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = _Ring(self.windows)
        ring.add(np.asarray(scores) > calibration_p99)

    def ratio(self, key: str) -> float | None:
        """The exceedance ratio, or None before `min_windows` were scored."""
        ring = self._rings.get(key)
        if ring is None or ring.seen < self.min_windows:
            return None
        return ring.above / ring.seen / CALIBRATION_TAIL

    def retain(self, keys: set[str]) -> None:
        """Forget models no longer served."""
        for key in set(self._rings) - keys:
            del self._rings[key]
