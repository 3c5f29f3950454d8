"""Per-row scoring results of one series (from `score` or `replay`) as a table, and its summary against labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aelstm.training.data import Series
from aelstm.training.scoring import pointwise_report
from aelstm.v1 import scoring_pb2 as pb

_STATUS = {pb.ITEM_STATUS_OK: "ok", pb.ITEM_STATUS_WARMING_UP: "warming_up", pb.ITEM_STATUS_ERROR: "error",
           pb.ITEM_STATUS_UNSPECIFIED: "unspecified"}


def timestamps_ms(series: Series) -> np.ndarray:
    """Unix epoch milliseconds of each reading (0 when the series has no timestamps)."""
    if series.timestamps is None:
        return np.zeros(len(series), np.int64)
    return series.timestamps.astype("datetime64[ms]").astype(np.int64)


def results_table(series: Series, rows: np.ndarray, results: list[pb.ItemResult | None]) -> pd.DataFrame:
    """One line per scored row: status, score parts, threshold, flag, label (when known), error."""
    table = pd.DataFrame({"row": rows})
    if series.timestamps is not None:
        table["timestamp"] = series.timestamps[rows]
    table["status"] = [_STATUS.get(r.status, str(r.status)) if r is not None else "lost" for r in results]
    for column in ("score", "rec_part", "pred_part", "threshold"):
        table[column] = [getattr(r, column) if r is not None and r.status == pb.ITEM_STATUS_OK else np.nan
                         for r in results]
    table["is_anomaly"] = [bool(r is not None and r.status == pb.ITEM_STATUS_OK and r.is_anomaly) for r in results]
    if series.labels is not None:
        table["label"] = series.labels[rows]
    table["model_version"] = [r.model_version if r is not None else "" for r in results]
    table["error"] = [r.error.message if r is not None and r.status == pb.ITEM_STATUS_ERROR else "" for r in results]
    return table


def summary(table: pd.DataFrame) -> str:
    """Counts by status, flags, and (with labels) point-wise figures over the scored rows."""
    counts = table["status"].value_counts().to_dict()
    line = f"{len(table)} rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    line += f"; flagged {int(table['is_anomaly'].sum())}"
    scored = table[table["status"] == "ok"]
    if "label" in table and len(scored):
        line += "\n" + pointwise_report(scored)
    return line
