"""Which fleets a training job covers, and each one's normal readings.

A fleet is a CSV file (named by its stem), a folder of CSV files (named by the folder; its files are one recording,
joined in name order), or the rows of one CSV that share a key column's value. A fleet whose data cannot be read is
kept with its reason, so that one bad file is reported without stopping the others.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aelstm.core.data import ColumnNotice, Series, load_csv_by_key
from aelstm.core.errors import AelstmError, DataError

ReadSeries = Callable[[Path], Series]  # one file as a series, with the job's data options


@dataclass(frozen=True)
class FleetData:
    """One fleet's readings (or why there are none)."""

    name: str
    source: str  # where its readings came from, for messages
    series: Series | None
    error: str | None = None


def discover_fleets(data: Path, read: ReadSeries, *, key_column: str | None = None,
                    key_options: dict | None = None) -> list[FleetData]:
    """The fleets in `data` (a folder, a file, or a file split by `key_column`), sorted by name."""
    if key_column is not None:
        if not data.is_file():
            raise DataError(f"--fleet-column needs one CSV file, and {data} is not a file")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ColumnNotice)
            groups = load_csv_by_key(data, key_column, **(key_options or {}))
        return [_checked(FleetData(key, f"{data.name}[{key_column}={key}]", series)) for key, series in groups.items()]
    if data.is_file():
        return [_read(data.stem, data, [data], read)]
    if not data.is_dir():
        raise DataError(f"fleet data not found: {data}")
    fleets = [_read(path.stem, path, [path], read) for path in sorted(data.glob("*.csv")) if path.is_file()]
    for folder in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(folder.glob("*.csv"))
        if files:
            fleets.append(_read(folder.name, folder, files, read))
    if not fleets:
        raise DataError(f"{data} holds no CSV files and no folders of them: nothing to train")
    names = [f.name for f in fleets]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise DataError(f"{data}: fleet name(s) {clashes} are both a file and a folder; rename one of them")
    return sorted(fleets, key=lambda f: f.name)


def _read(name: str, where: Path, files: list[Path], read: ReadSeries) -> FleetData:
    try:
        parts = [read(path) for path in files]
        first = parts[0]
        for path, part in zip(files[1:], parts[1:], strict=True):
            if part.feature_names != first.feature_names:
                raise DataError(f"{path.name} has features {list(part.feature_names)}, "
                                f"{files[0].name} has {list(first.feature_names)}")
        series = parts[0] if len(parts) == 1 else _joined(name, parts)
    except AelstmError as exc:
        return FleetData(name, str(where), None, str(exc))
    return _checked(FleetData(name, str(where), series))


def _joined(name: str, parts: list[Series]) -> Series:
    """Several recordings of one fleet, one after the other."""
    def joined(field: str):
        values = [getattr(p, field) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    return Series(name, np.concatenate([p.values for p in parts]), parts[0].feature_names,
                  joined("timestamps"), joined("labels"))


def _checked(fleet: FleetData) -> FleetData:
    """A fleet whose name cannot be a registry folder is an error of its own, not of the whole job."""
    from aelstm.server.registry import check_fleet_name

    try:
        check_fleet_name(fleet.name)
    except AelstmError as exc:
        return FleetData(fleet.name, fleet.source, None, str(exc))
    return fleet
