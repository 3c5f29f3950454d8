"""Per-file results in the layout the public NAB tools read, with scores exactly as those tools will read them.

NAB's own scorer parses the CSVs with a fast float parser that turns a 17-digit value such as 0.9999999999999999
into 1.0; scoring the unrounded values here then disagrees with the official figure (the rolling z-score's
reward-low-FP score: 11.78 here, 10.73 officially). Writing SCORE_DECIMALS decimals and scoring the values those
digits denote makes both sides score the same numbers: distinct written values differ by ≥ 10^-15, several units in
the last place near 1, so any parser keeps their order and ties.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .corpus import NabFile

SCORE_DECIMALS = 15


def _text(scores: np.ndarray) -> np.ndarray:
    return np.char.mod(f"%.{SCORE_DECIMALS}f", np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0))


def as_written(scores: np.ndarray) -> np.ndarray:
    """The scores clipped to [0, 1] and rounded to what the CSV holds: score these, not the raw floats."""
    return _text(scores).astype(np.float64)


def write_results(out: Path, detector: str, nab: NabFile, scores: np.ndarray) -> Path:
    """`<out>/<detector>/<category>/<detector>_<file>.csv` with columns timestamp,value,anomaly_score,label."""
    path = out / detector / nab.category / f"{detector}_{nab.stem}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(
        {
            "timestamp": pd.to_datetime(nab.timestamps).strftime("%Y-%m-%d %H:%M:%S"),
            "value": nab.values,
            "anomaly_score": _text(scores),
            "label": nab.labels,
        }
    )
    frame.to_csv(path, index=False)
    return path
