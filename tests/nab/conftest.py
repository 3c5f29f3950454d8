"""A tiny NAB-layout corpus with its own development / held-out split, for the runner and selection tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DEVELOPMENT = ("catA/a0.csv", "catB/b0.csv")
HELD_OUT = ("catA/a1.csv", "catB/b1.csv")
SPIKES = (700, 600, 800, None)  # row of a 30σ spike inside a window, per file in DEVELOPMENT + HELD_OUT order


@pytest.fixture
def tiny_nab(tmp_path: Path) -> Path:
    """`<root>/data/<category>/<file>.csv`, `<root>/labels/combined_windows.json`, `<root>/split.json`."""
    root = tmp_path / "nab"
    rng = np.random.default_rng(0)
    windows = {}
    stamps = pd.date_range("2020-01-01", periods=1000, freq="5min")
    for key, spike in zip((*DEVELOPMENT, *HELD_OUT), SPIKES, strict=True):
        values = rng.normal(size=1000)
        path = root / "data" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        if spike is not None:
            values[spike] += 30.0
        pd.DataFrame({"timestamp": stamps.strftime("%Y-%m-%d %H:%M:%S"), "value": values}).to_csv(path, index=False)
        windows[key] = [[str(stamps[spike - 20]), str(stamps[spike + 20])]] if spike is not None else []
    (root / "labels").mkdir()
    (root / "labels" / "combined_windows.json").write_text(json.dumps(windows))
    (root / "split.json").write_text(json.dumps({"development": DEVELOPMENT, "held_out": HELD_OUT}))
    return root
