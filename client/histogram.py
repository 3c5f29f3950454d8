"""Latency histogram with HDR precision (3 significant digits from 1 µs to 10 min)."""

from __future__ import annotations

import numpy as np
from hdrh.histogram import HdrHistogram

PERCENTILES = (50.0, 90.0, 99.0, 99.9)
_LOWEST_US, _HIGHEST_US, _DIGITS = 1, 600_000_000, 3


class LatencyHistogram:
    """Records latencies in microseconds; reports milliseconds."""

    def __init__(self) -> None:
        self._h = HdrHistogram(_LOWEST_US, _HIGHEST_US, _DIGITS)
        self._sum_us = 0.0

    def record_many_us(self, latencies_us: np.ndarray) -> None:
        """Bulk record: one histogram update per distinct microsecond value (the hot path only appends to arrays)."""
        values = np.clip(np.asarray(latencies_us, dtype=np.float64), _LOWEST_US, _HIGHEST_US).astype(np.int64)
        self._sum_us += float(values.sum())
        for value, count in zip(*np.unique(values, return_counts=True), strict=True):
            self._h.record_value(int(value), int(count))

    @property
    def count(self) -> int:
        return self._h.get_total_count()

    def percentile_ms(self, percentile: float) -> float:
        return self._h.get_value_at_percentile(percentile) / 1000 if self.count else 0.0

    def summary_ms(self) -> dict[str, float]:
        """p50/p90/p99/p99.9, mean and max in milliseconds (zeros when empty)."""
        figures = {f"p{p:g}": self.percentile_ms(p) for p in PERCENTILES}
        figures["mean"] = self._sum_us / self.count / 1000 if self.count else 0.0
        figures["max"] = self._h.get_max_value() / 1000 if self.count else 0.0
        return figures
