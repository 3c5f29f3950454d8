"""Loaders that turn the supported datasets (NAB, SKAB, TON_IoT, N-BaIoT, generic CSV) into one `Series`.

Empty cells are missing readings (gaps, interpolated later). Any other text in a numeric column ("hot", "N/A", "NaN")
is a surprise that would otherwise pass as a gap: it is refused (`non_numeric="refuse"`, naming the column, the count
and the first cell), or read as missing with a `NonNumericWarning` that counts it (`non_numeric="missing"`).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

NON_NUMERIC_POLICIES = ("refuse", "missing")


class NonNumericWarning(UserWarning):
    """Text cells of numeric columns were read as missing values (`non_numeric="missing"`)."""


class ColumnNotice(UserWarning):
    """A generic CSV's columns were read other than as plain features: labels found by name, or numeric columns
    left out of the default features (see `load_csv`)."""


# Generic CSV: columns that hold numbers but must not become features by default.
LABEL_NAMES = ("label", "anomaly", "is_anomaly", "attack")
INDEX_NAMES = ("index", "idx", "id", "row", "unnamed: 0", "time", "timestamp", "ts")


@dataclass(frozen=True)
class Series:
    """A multivariate time series: readings in time order, optional timestamps and 0/1 labels."""

    name: str
    values: np.ndarray  # [T, F] float64, NaN marks a missing reading
    feature_names: tuple[str, ...]
    timestamps: np.ndarray | None = None  # [T] datetime64[ns]
    labels: np.ndarray | None = None  # [T] int8, 1 = anomalous

    def __post_init__(self) -> None:
        if self.values.ndim != 2:
            raise DataError(f"{self.name}: values must be 2-D [time, features], got shape {self.values.shape}")
        if self.values.shape[1] != len(self.feature_names):
            raise DataError(
                f"{self.name}: {self.values.shape[1]} value columns but {len(self.feature_names)} feature names"
            )
        for extra, label in ((self.timestamps, "timestamps"), (self.labels, "labels")):
            if extra is not None and len(extra) != len(self.values):
                raise DataError(f"{self.name}: {len(extra)} {label} for {len(self.values)} readings")

    def __len__(self) -> int:
        return len(self.values)

    def slice(self, start: int, stop: int) -> Series:
        """Rows [start, stop) as a new series (labels and timestamps follow)."""
        return Series(
            name=self.name,
            values=self.values[start:stop],
            feature_names=self.feature_names,
            timestamps=None if self.timestamps is None else self.timestamps[start:stop],
            labels=None if self.labels is None else self.labels[start:stop],
        )


def _read_csv(path: str | Path, **kwargs) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:  # only empty cells are missing: text such as "N/A" stays text, for _numeric to count
        frame = pd.read_csv(path, keep_default_na=False, na_values=[""], **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot parse {path}: {exc}".splitlines()[0]) from exc
    if frame.empty:
        raise DataError(f"{path} has no rows")
    return frame


def _text_cells(column: pd.Series, parsed: pd.Series) -> pd.Series:
    """Cells that hold something other than a number or nothing (whitespace counts as nothing)."""
    if pd.api.types.is_numeric_dtype(column):
        return pd.Series(False, index=column.index)
    return parsed.isna() & (column.astype(str).str.strip() != "") & column.notna()


def _holds_numbers(column: pd.Series) -> bool:
    """Some cell is a number: a numeric column, perhaps with stray text for _numeric to report, not to drop."""
    return pd.api.types.is_numeric_dtype(column) or pd.to_numeric(column, errors="coerce").notna().any()


def _numeric(frame: pd.DataFrame, columns: Sequence[str], source: Path | str, non_numeric: str) -> np.ndarray:
    """The columns as float64, NaN for empty cells; text cells refused or read as missing (see the module doc)."""
    if non_numeric not in NON_NUMERIC_POLICIES:
        raise DataError(f"non_numeric must be one of {NON_NUMERIC_POLICIES}, got {non_numeric!r}")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{source}: missing column(s) {missing} of the features {list(columns)}; "
                        f"available: {list(frame.columns)}")
    parsed = frame[list(columns)].apply(pd.to_numeric, errors="coerce")
    bad = [c for c in columns if parsed[c].isna().all()]
    if bad:
        raise DataError(f"{source}: column(s) {bad} have no numeric values")
    found = []
    for column in columns:
        text = _text_cells(frame[column], parsed[column])
        if text.any():
            first = text.idxmax()  # the index counts the file's rows below the header from 0
            found.append(f"column {column!r} has {int(text.sum())} non-numeric cell(s), first in data row {first + 1}: "
                         f"{frame[column].loc[first]!r}")
    if found and non_numeric == "refuse":
        raise DataError(f"{source}: {'; '.join(found)}; fix the file, or read them as missing values "
                        "(--non-numeric missing)")
    if found:
        warnings.warn(f"{source}: read as missing values: {'; '.join(found)}", NonNumericWarning, stacklevel=3)
    return parsed.to_numpy(dtype=np.float64)


def _timestamps(frame: pd.DataFrame, column: str, source: Path | str, **kwargs) -> np.ndarray:
    try:
        return pd.to_datetime(frame[column], **kwargs).to_numpy(dtype="datetime64[ns]")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{source}: column {column!r} is not a timestamp: {exc}".splitlines()[0]) from exc


def _is_zero_one(column: pd.Series) -> bool:
    values = pd.to_numeric(column, errors="coerce")
    return bool(values.notna().all() and values.isin([0, 1]).all())


def _is_row_index(name: str, column: pd.Series) -> bool:
    """Integers that rise every row and count the rows (0..n−1 or 1..n), or rise every row under an index or clock
    name: min–max-scaled, such a column puts every later reading outside the training range."""
    if not pd.api.types.is_integer_dtype(column) or len(column) < 2:
        return False
    steps = np.diff(column.to_numpy())
    if not (steps > 0).all():
        return False
    return (column.iloc[0] in (0, 1) and (steps == 1).all()) or name.lower() in INDEX_NAMES


def load_csv(
    path: str | Path,
    *,
    time_column: str | None = None,
    label_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    delimiter: str = ",",
    non_numeric: str = "refuse",
) -> Series:
    """Any CSV. Without `label_column`, the first column named like a label (`LABEL_NAMES`, any case) that holds
    only 0/1 is the label column. Features default to every other column that holds numbers (a numeric column with
    stray text is checked, not silently dropped), except the time column, label-named columns and row-index columns
    (`_is_row_index`); what was left out, and where labels came from, is one `ColumnNotice`. `feature_columns`
    overrides the default."""
    frame = _read_csv(path, sep=delimiter)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame_series(frame, Path(path).stem, path, time_column=time_column, label_column=label_column,
                        feature_columns=feature_columns, non_numeric=non_numeric)


def frame_series(
    frame: pd.DataFrame,
    name: str,
    path: str | Path,
    *,
    time_column: str | None = None,
    label_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    non_numeric: str = "refuse",
) -> Series:
    """A table already read (a whole CSV, or one fleet's rows of it) as a series, with `load_csv`'s column rules;
    `path` names where it came from in errors."""
    for name, column in (("time", time_column), ("label", label_column)):
        if column is not None and column not in frame.columns:
            raise DataError(f"{path}: {name} column {column!r} not found; available: {list(frame.columns)}")
    chosen = set(feature_columns or ())
    label_like = [c for c in frame.columns if c.lower() in LABEL_NAMES and c not in chosen | {time_column}]
    notes = []
    if label_column is None:
        label_column = next((c for c in label_like if _is_zero_one(frame[c])), None)
        if label_column is not None:
            notes.append(f"labels from column {label_column!r}")
    if feature_columns is None:
        numeric = [c for c in frame.columns if c not in {time_column, label_column} and _holds_numbers(frame[c])]
        left_out = [c for c in numeric if c in label_like or _is_row_index(c, frame[c])]
        feature_columns = [c for c in numeric if c not in left_out]
        if left_out:
            notes.append(f"not used as features: {', '.join(map(repr, left_out))} (label-named or row-index "
                         "columns; name them in --features to use them)")
        if not feature_columns:
            raise DataError(f"{path}: no numeric feature columns found; name them with --features")
    if notes:
        warnings.warn(f"{Path(path).name}: {'; '.join(notes)}", ColumnNotice, stacklevel=3)
    values = _numeric(frame, feature_columns, path, non_numeric)
    labels = None
    if label_column is not None:
        raw = pd.to_numeric(frame[label_column], errors="coerce")
        if raw.isna().any():
            raise DataError(f"{path}: label column {label_column!r} must be numeric 0/1")
        labels = (raw.to_numpy() > 0).astype(np.int8)
    timestamps = _timestamps(frame, time_column, path) if time_column else None
    return Series(name, values, tuple(feature_columns), timestamps, labels)


def load_csv_by_key(
    path: str | Path,
    key_column: str,
    *,
    time_column: str | None = None,
    label_column: str | None = None,
    feature_columns: Sequence[str] | None = None,
    delimiter: str = ",",
    non_numeric: str = "refuse",
) -> dict[str, Series]:
    """One CSV holding many fleets (or devices): key value → its rows as a series, in file order, the key column
    itself never a feature. Every group gets the same feature columns, so one group's text cells cannot silently
    give it a different model input than the others."""
    frame = _read_csv(path, sep=delimiter)
    frame.columns = [str(c).strip() for c in frame.columns]
    if key_column not in frame.columns:
        raise DataError(f"{path}: key column {key_column!r} not found; available: {list(frame.columns)}")
    keys = frame.pop(key_column).astype(str).str.strip()
    if (keys == "").any():
        raise DataError(f"{path}: {int((keys == '').sum())} row(s) have an empty {key_column!r}")
    whole = frame_series(frame, Path(path).stem, path, time_column=time_column, label_column=label_column,
                         feature_columns=feature_columns, non_numeric=non_numeric)
    return {key: Series(key, whole.values[rows], whole.feature_names,
                        None if whole.timestamps is None else whole.timestamps[rows],
                        None if whole.labels is None else whole.labels[rows])
            for key, rows in keys.groupby(keys, sort=True).indices.items()}


def nab_windows_key(path: Path) -> str:
    """NAB labels are keyed `<category>/<file name>`."""
    return f"{path.parent.name}/{path.name}"


def load_nab(path: str | Path, windows_file: str | Path | None = None, non_numeric: str = "refuse") -> Series:
    """A NAB `timestamp,value` file; labels are 1 inside its anomaly windows (both ends inclusive).

    `windows_file` defaults to `../../labels/combined_windows.json` relative to the data file, as NAB lays it out.
    """
    path = Path(path)
    series = load_csv(path, time_column="timestamp", feature_columns=["value"], non_numeric=non_numeric)
    windows_file = (
        Path(windows_file) if windows_file else path.parent.parent.parent / "labels" / "combined_windows.json"
    )
    if not windows_file.is_file():
        return series
    windows = json.loads(windows_file.read_text()).get(nab_windows_key(path))
    if windows is None:
        raise DataError(f"{windows_file} has no windows for {nab_windows_key(path)}")
    labels = np.zeros(len(series), dtype=np.int8)
    for start, end in windows:
        inside = (series.timestamps >= np.datetime64(pd.Timestamp(start))) & (
            series.timestamps <= np.datetime64(pd.Timestamp(end))
        )
        labels[inside] = 1
    return Series(series.name, series.values, series.feature_names, series.timestamps, labels)


SKAB_FEATURES = (
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
)


def load_skab(path: str | Path, non_numeric: str = "refuse") -> Series:
    """A SKAB run: `;`-separated, 8 sensors, `anomaly` label (absent in the anomaly-free run)."""
    path = Path(path)
    frame = _read_csv(path, sep=";")
    values = _numeric(frame, SKAB_FEATURES, path, non_numeric)
    labels = frame["anomaly"].to_numpy().astype(np.int8) if "anomaly" in frame.columns else None
    timestamps = _timestamps(frame, "datetime", path)
    return Series(f"{path.parent.name}/{path.stem}", values, SKAB_FEATURES, timestamps, labels)


# String columns of TON_IoT carry formatting that leaks the label (see the dataset's SOURCE.md): they are mapped to
# numbers after stripping whitespace, so normal and attack rows are encoded the same way.
_TON_IOT_CATEGORIES = {
    "temp_condition": {"low": 0.0, "high": 1.0},
    "door_state": {"closed": 0.0, "open": 1.0},
    "sphone_signal": {"false": 0.0, "true": 1.0, "0": 0.0, "1": 1.0},
    "light_status": {"off": 0.0, "on": 1.0},
}
_TON_IOT_NON_FEATURES = {"ts", "date", "time", "label", "type"}


def load_ton_iot(path: str | Path, non_numeric: str = "refuse") -> Series:
    """A TON_IoT `Train_Test_IoT_*` file, sorted by `ts`, string sensors normalised, no time-derived features."""
    path = Path(path)
    frame = _read_csv(path, encoding="utf-8-sig", skipinitialspace=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    if "label" not in frame.columns:
        raise DataError(f"{path}: not a TON_IoT Train_Test file (no `label` column)")
    if "ts" in frame.columns:
        frame = frame.sort_values("ts", kind="stable")  # the index keeps the file's row numbers for messages
    features = [c for c in frame.columns if c not in _TON_IOT_NON_FEATURES]
    for column in features:
        mapping = _TON_IOT_CATEGORIES.get(column)
        if mapping is not None:
            text = frame[column].astype(str).str.strip().str.lower()
            unknown = sorted(set(text) - set(mapping))
            if unknown:
                raise DataError(f"{path}: column {column!r} has unexpected values {unknown[:5]}")
            frame[column] = text.map(mapping)
    values = _numeric(frame, features, path, non_numeric)
    timestamps = pd.to_datetime(frame["ts"], unit="s").to_numpy("datetime64[ns]") if "ts" in frame else None
    labels = frame["label"].to_numpy().astype(np.int8)
    return Series(path.stem.removeprefix("Train_Test_IoT_"), values, tuple(features), timestamps, labels)


def load_nbaiot(path: str | Path, non_numeric: str = "refuse") -> Series:
    """An N-BaIoT traffic file (115 statistics per row); the class is the file: `benign_traffic` is normal."""
    path = Path(path)
    frame = _read_csv(path)
    features = [str(c) for c in frame.columns if str(c) not in {"label", "class", "Unnamed: 0"}]
    if len(features) != 115:
        raise DataError(f"{path}: expected 115 N-BaIoT feature columns, found {len(features)}")
    values = _numeric(frame, features, path, non_numeric)
    labels = np.full(len(frame), 0 if path.stem.startswith("benign") else 1, dtype=np.int8)
    return Series(path.stem, values, tuple(features), None, labels)


LOADERS = {"nab": load_nab, "skab": load_skab, "ton_iot": load_ton_iot, "nbaiot": load_nbaiot, "csv": load_csv}
