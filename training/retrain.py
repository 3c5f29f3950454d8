"""Retraining from what the server recorded: each fleet's readings judged normal since its served version was
published, trained with that version's own configuration, then gated and published like any fleet's model.

Run by `aelstm retrain`, and by `aelstm serve --retrain-every-s` as a separate process (`python -m
aelstm.training.retrain`) so that training never runs on the ingress's event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from aelstm.core.data import Series

from .config import TrainConfig
from .fleet_training import FleetOutcome
from .fleets import FleetData

RECORD_GLOB = "*.parquet"  # the recorder's files; names start with their UTC write time


@dataclass(frozen=True)
class RetrainPlan:
    """What a retraining run covers: fleets with enough new normal readings, and the configuration of each."""

    fleets: list[FleetData]
    configs: dict[str, TrainConfig]
    skipped: list[FleetOutcome]


def written_at(path: Path) -> datetime | None:
    """A recording's write time, from its name (`20261204T101500123456Z-…`); None for another file."""
    try:
        return datetime.strptime(path.name.split("-", 1)[0], "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def recorded_series(folder: Path, fleet: str, features: tuple[str, ...], since: datetime | None) -> Series | None:
    """The fleet's recorded readings written after `since`, one device after another, each in time order (files of
    a model with other features are left out); None when there are none."""
    import pyarrow.parquet as pq

    frames = []
    for path in sorted(folder.glob(RECORD_GLOB)):
        stamp = written_at(path)
        if stamp is None or (since is not None and stamp < since):
            continue
        table = pq.read_table(path)
        if set(features) <= set(table.column_names):
            frames.append(table.select(["device", "timestamp_ms", "position", *features]).to_pandas())
    if not frames:
        return None
    import pandas as pd

    rows = pd.concat(frames, ignore_index=True).sort_values(["device", "timestamp_ms", "position"], kind="stable")
    return Series(fleet, rows[list(features)].to_numpy(dtype=np.float64), features)


def plan_retraining(recorded: Path, registry: Path, fleets: list[str] | None, min_rows: int) -> RetrainPlan:
    """For every fleet served from `registry` (or those named), what was recorded since its served version."""
    from aelstm.server.registry import RegistryScanner, pinned_version

    served = RegistryScanner(registry).scan().fleets
    chosen = sorted(served) if fleets is None else fleets
    plan = RetrainPlan([], {}, [])
    for fleet in chosen:
        entry = served.get(fleet)
        if entry is None:
            plan.skipped.append(FleetOutcome(fleet, "skipped", f"fleet {fleet} has no served model in {registry}"))
            continue
        held = pinned_version(registry, fleet)
        if held is not None:
            plan.skipped.append(FleetOutcome(fleet, "skipped", f"fleet {fleet} is pinned to version {held}"))
            continue
        manifest = entry.bundle.manifest
        published = manifest.get("registry", {}).get("published_at")
        since = datetime.fromisoformat(published) if published else None
        series = recorded_series(recorded / fleet, fleet, entry.bundle.features, since)
        rows = 0 if series is None else len(series)
        if rows < min_rows:
            plan.skipped.append(FleetOutcome(fleet, "skipped", f"{rows} readings recorded since version "
                                             f"{entry.version} was published, fewer than {min_rows}", rows=rows))
            continue
        plan.fleets.append(FleetData(fleet, str(recorded / fleet), series))
        plan.configs[fleet] = TrainConfig.from_dict(manifest["training"]["config"])
    return plan


if __name__ == "__main__":  # how the server's retraining loop runs it: `python -m aelstm.training.retrain ...`
    import sys

    from aelstm.core.cli_options import OneLineErrorGroup

    from .cli import retrain

    OneLineErrorGroup(commands={"retrain": retrain})(["retrain", *sys.argv[1:]])
