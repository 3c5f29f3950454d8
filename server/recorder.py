"""A bounded sample of the readings the server judged normal, per fleet, in Parquet: what `aelstm retrain` learns
a fleet's current normal behaviour from.

Devices are sampled, not readings: a recorded device keeps every one of its normal readings, in order, so that
retraining gets whole windows. Which devices are recorded is a stable hash of fleet and device, so every ingress of
a cluster records the same ones. An item is recorded only when none of its windows raised an alarm. Rows are
buffered and written by a background task (one file per fleet per flush, written to a temporary name and renamed),
never on the request path; a buffer that outgrows its bound drops rows and counts them. Files older than the
retention are removed.

Layout: `<dir>/<fleet>/<UTC time>-<pid>-<n>.parquet` with columns `device` (string), `timestamp_ms` (int64),
`position` (the reading's place within its item) and one float32 column per model feature.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RECORD_SUFFIX = ".parquet"


@dataclass(frozen=True)
class RecorderSettings:
    """Where and how much to record."""

    directory: Path
    device_fraction: float = 0.1
    flush_s: float = 60.0
    keep_s: float = 7 * 86400.0
    max_buffered_rows: int = 1_000_000  # in all fleets, between two flushes


def is_recorded(fleet: str, device: str, fraction: float) -> bool:
    """The stable device sample: the same answer on every ingress and after every restart."""
    return zlib.crc32(f"{fleet}\x00{device}".encode()) < fraction * 2**32


@dataclass
class _Batch:
    """One fleet's rows since the last flush (their features are those of the model that judged them)."""

    features: tuple[str, ...]
    devices: list[str]
    timestamps: list[int]
    positions: list[int]
    values: list[np.ndarray]
    rows: int = 0


class Recorder:
    """`offer` normal readings from the request path (cheap); `run` flushes and prunes in the background."""

    def __init__(self, settings: RecorderSettings, on_recorded=None, on_dropped=None) -> None:
        self.settings = settings
        self._batches: dict[tuple[str, tuple[str, ...]], _Batch] = {}  # (fleet, features): a new model may differ
        self._buffered = 0
        self._files = 0
        self._on_recorded = on_recorded or (lambda fleet, rows: None)
        self._on_dropped = on_dropped or (lambda fleet, rows: None)

    def offer(self, fleet: str, device: str, timestamp_ms: int, readings: np.ndarray,
              features: tuple[str, ...]) -> None:
        """Keep `readings` `[k, features]` (an item judged normal) if its device is sampled and there is room."""
        if not is_recorded(fleet, device, self.settings.device_fraction):
            return
        rows = len(readings)
        if self._buffered + rows > self.settings.max_buffered_rows:
            self._on_dropped(fleet, rows)
            return
        batch = self._batches.get((fleet, features))
        if batch is None:
            batch = self._batches[fleet, features] = _Batch(features, [], [], [], [])
        batch.devices.extend([device] * rows)
        batch.timestamps.extend([timestamp_ms] * rows)
        batch.positions.extend(range(rows))
        batch.values.append(np.asarray(readings, dtype=np.float32))
        batch.rows += rows
        self._buffered += rows
        self._on_recorded(fleet, rows)

    async def run(self) -> None:
        """Flush every `flush_s` and prune old files, until cancelled (then flush what is left)."""
        try:
            while True:
                await asyncio.sleep(self.settings.flush_s)
                await self.flush()
                await asyncio.to_thread(self.prune)
        except asyncio.CancelledError:
            await self.flush()
            raise

    async def flush(self) -> list[Path]:
        """Write every fleet's buffered rows (off the event loop); returns the files written."""
        batches, self._batches, self._buffered = self._batches, {}, 0
        written = []
        for (fleet, _), batch in batches.items():
            try:
                written.append(await asyncio.to_thread(self._write, fleet, batch))
            except OSError as exc:
                log.error("could not record %d readings of fleet %s: %s", batch.rows, fleet, exc)
                self._on_dropped(fleet, batch.rows)
        return written

    def _write(self, fleet: str, batch: _Batch) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        values = np.concatenate(batch.values)
        columns = {"device": pa.array(batch.devices, pa.string()),
                   "timestamp_ms": pa.array(batch.timestamps, pa.int64()),
                   "position": pa.array(batch.positions, pa.int32())}
        columns.update({name: pa.array(values[:, j]) for j, name in enumerate(batch.features)})
        folder = self.settings.directory / fleet
        folder.mkdir(parents=True, exist_ok=True)
        self._files += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        path = folder / f"{stamp}-{os.getpid()}-{self._files}{RECORD_SUFFIX}"
        partial = path.with_name("." + path.name)
        pq.write_table(pa.table(columns), partial)
        os.replace(partial, path)
        return path

    def prune(self) -> int:
        """Remove recordings older than the retention; returns how many."""
        cutoff = time.time() - self.settings.keep_s
        removed = 0
        for path in self.settings.directory.glob(f"*/*{RECORD_SUFFIX}"):
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed
