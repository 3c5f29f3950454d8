"""Per-row scoring results of one series (from `score` or `replay`) as a table, and its summary against labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from aelstm.core.data import Series
from aelstm.core.scoring import pointwise_report
from aelstm.v1 import scoring_pb2 as pb

from .itemstatus import by_code, error_code_name, status_name


def timestamps_ms(series: Series) -> np.ndarray:
    """Unix epoch milliseconds of each reading (0 when the series has no timestamps)."""
    if series.timestamps is None:
        return np.zeros(len(series), np.int64)
    return series.timestamps.astype("datetime64[ms]").astype(np.int64)


def results_table(series: Series, rows: np.ndarray, results: list[pb.ItemResult | None]) -> pd.DataFrame:
    """One line per scored row: status, score parts, threshold, flag, label (when known), error code and message."""
    table = pd.DataFrame({"row": rows})
    if series.timestamps is not None:
        table["timestamp"] = series.timestamps[rows]
    table["status"] = [status_name(r.status) if r is not None else "lost" for r in results]
    for column in ("score", "rec_part", "pred_part", "threshold"):
        table[column] = [getattr(r, column) if r is not None and r.status == pb.ITEM_STATUS_OK else np.nan
                         for r in results]
    table["is_anomaly"] = [bool(r is not None and r.status == pb.ITEM_STATUS_OK and r.is_anomaly) for r in results]
    if series.labels is not None:
        table["label"] = series.labels[rows]
    table["model_version"] = [r.model_version if r is not None else "" for r in results]
    failed = [r is not None and r.status == pb.ITEM_STATUS_ERROR for r in results]
    table["error_code"] = [error_code_name(r.error.code) if bad else "" for r, bad in zip(results, failed, strict=True)]
    table["error"] = [r.error.message if bad else "" for r, bad in zip(results, failed, strict=True)]
    return table


def failed_answers(table: pd.DataFrame) -> str | None:
    """Why the answers are no success, if they are not: rows answered with an item error (by code), or never
    answered. WARMING_UP is an answer."""
    errors = table.loc[table["status"] == "error", "error_code"].value_counts().to_dict()
    lost = int((table["status"] == "lost").sum())
    found = []
    if errors:
        found.append(f"{sum(errors.values())} of {len(table)} row(s) answered with an item error ({by_code(errors)})")
    if lost:
        found.append(f"{lost} message(s) got no answer within the deadline")
    return "; ".join(found) or None


def summary(table: pd.DataFrame) -> str:
    """Counts by status, flags, latency (when measured) and (with labels) point-wise figures over scored rows."""
    counts = table["status"].value_counts().to_dict()
    line = f"{len(table)} rows: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    line += f"; flagged {int(table['is_anomaly'].sum())}"
    if "latency_ms" in table and table["latency_ms"].notna().any():
        p50, p90, p99 = np.nanpercentile(table["latency_ms"], [50, 90, 99])
        line += f"\nlatency per message: p50 {p50:.2f} ms, p90 {p90:.2f} ms, p99 {p99:.2f} ms, "
        line += f"max {np.nanmax(table['latency_ms']):.2f} ms"
    scored = table[table["status"] == "ok"]
    if "label" in table and len(scored):
        line += "\n" + pointwise_report(scored)
    return line


def flag_episodes(table: pd.DataFrame, gap: int) -> pd.DataFrame:
    """Flagged rows grouped into episodes: flags at most `gap` rows apart belong to one episode. With labels,
    `labelled` says whether the episode overlaps a labelled anomaly."""
    flagged = table[table["is_anomaly"]]
    columns = ["first_row", "last_row", "flags", "peak_score", *(["labelled"] if "label" in table else [])]
    if flagged.empty:
        return pd.DataFrame(columns=columns)
    episode = (flagged["row"].diff() > gap).cumsum()
    grouped = flagged.groupby(episode)
    episodes = pd.DataFrame({
        "first_row": grouped["row"].min(), "last_row": grouped["row"].max(),
        "flags": grouped.size(), "peak_score": grouped["score"].max(),
    })
    if "timestamp" in table:
        episodes.insert(0, "start", grouped["timestamp"].min())
        episodes.insert(1, "end", grouped["timestamp"].max())
    if "label" in table:
        labels = table.set_index("row")["label"]
        episodes["labelled"] = [bool(labels.loc[a:b].any()) for a, b in zip(episodes.first_row, episodes.last_row,
                                                                             strict=True)]
    return episodes.reset_index(drop=True)
