"""The NAB corpus as the score sees it: per file its readings, anomaly windows as row ranges, probation length."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from aelstm.core.data import load_csv
from aelstm.core.errors import DataError

PROBATION_FRACTION = 0.15
PROBATION_CAP = 750


def probation_length(rows: int) -> int:
    """Rows a detector may learn from and that are never scored: min(floor(0.15·n), 750)."""
    return min(int(np.floor(PROBATION_FRACTION * rows)), PROBATION_CAP)


@dataclass(frozen=True)
class NabFile:
    """One NAB data file; `windows` are inclusive row ranges `(first, last)` in time order."""

    key: str  # "<category>/<name>.csv", as combined_windows.json names it
    values: np.ndarray  # [T] float64
    timestamps: np.ndarray  # [T] datetime64[ns]
    windows: tuple[tuple[int, int], ...]

    @property
    def category(self) -> str:
        return self.key.split("/")[0]

    @property
    def stem(self) -> str:
        return Path(self.key).stem

    @property
    def probation(self) -> int:
        return probation_length(len(self.values))

    @property
    def labels(self) -> np.ndarray:
        """1 inside a window (both ends inclusive), else 0."""
        labels = np.zeros(len(self.values), dtype=np.int8)
        for first, last in self.windows:
            labels[first : last + 1] = 1
        return labels


def window_rows(timestamps: np.ndarray, windows: list[list[str]], key: str) -> tuple[tuple[int, int], ...]:
    """Timestamp windows → inclusive row ranges of the rows whose timestamp lies inside (bounds inclusive).

    Matching by value, not by position, keeps files with a clock step back (one NAB file has one) exact; a window
    whose rows are not contiguous or that holds no row is an error.
    """
    ranges = []
    for start, end in windows:
        rows = np.flatnonzero(
            (timestamps >= np.datetime64(pd.Timestamp(start))) & (timestamps <= np.datetime64(pd.Timestamp(end)))
        )
        if len(rows) == 0 or rows[-1] - rows[0] + 1 != len(rows):
            raise DataError(f"{key}: window [{start}, {end}] holds no rows or rows that are not contiguous")
        ranges.append((int(rows[0]), int(rows[-1])))
    return tuple(sorted(ranges))


def load_nab_file(path: Path, windows: dict[str, list[list[str]]]) -> NabFile:
    key = f"{path.parent.name}/{path.name}"
    if key not in windows:
        raise DataError(f"the windows file has no entry for {key}")
    series = load_csv(path, time_column="timestamp", feature_columns=["value"])
    if np.isnan(series.values).any():
        raise DataError(f"{key}: NAB files have no missing values, this one does")
    nab = NabFile(key, series.values[:, 0], series.timestamps, window_rows(series.timestamps, windows[key], key))
    if nab.windows and nab.windows[0][0] < nab.probation:
        raise DataError(f"{key}: a window starts inside the probationary period")
    return nab


def load_corpus(root: str | Path, only: list[str] | None = None) -> list[NabFile]:
    """Every `data/<category>/<name>.csv` under a NAB root (sorted by key), optionally only the given keys."""
    root = Path(root)
    windows_file = root / "labels" / "combined_windows.json"
    if not windows_file.is_file():
        raise DataError(f"no NAB labels at {windows_file}")
    windows = json.loads(windows_file.read_text())
    paths = sorted((root / "data").glob("*/*.csv"))
    if only is not None:
        unknown = sorted(set(only) - {f"{p.parent.name}/{p.name}" for p in paths})
        if unknown:
            raise DataError(f"not in the NAB corpus at {root}: {unknown}")
        paths = [p for p in paths if f"{p.parent.name}/{p.name}" in only]
    if not paths:
        raise DataError(f"no NAB data files under {root / 'data'}")
    return [load_nab_file(path, windows) for path in paths]
