"""Synthetic device telemetry: smooth normal signals with labelled, injected anomalies of five kinds.

Labels are event ids per reading (0 = normal), so a report can say both how many anomalous windows were flagged and
how many injected events were caught at least once, per kind.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aelstm.core.errors import DataError
from aelstm.core.scoring import labelled_events

ANOMALY_KINDS = ("spike", "level_shift", "drift", "stuck", "noise_burst")


@dataclass(frozen=True)
class Telemetry:
    """Readings of many devices, with the injected anomaly events."""

    values: np.ndarray  # [devices, time, features] float32
    events: np.ndarray  # [devices, time] int32: 0 normal, k > 0 the id of the event the reading belongs to
    event_kinds: dict[int, str]  # event id -> kind

    @property
    def devices(self) -> int:
        return self.values.shape[0]

    @property
    def length(self) -> int:
        return self.values.shape[1]


def normal_telemetry(
    devices: int, length: int, features: int, rng: np.random.Generator, centre: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Per device and feature: a slow sine of random period and phase plus a little Gaussian noise."""
    t = np.arange(length, dtype=np.float64)[None, :, None]
    period = rng.uniform(60, 240, size=(devices, 1, features))
    phase = rng.uniform(0, 2 * np.pi, size=(devices, 1, features))
    signal = 0.3 * np.sin(2 * np.pi * t / period + phase) + 0.03 * rng.standard_normal((devices, length, features))
    return (centre + scale * signal).astype(np.float32)


def _inject(series: np.ndarray, kind: str, start: int, stop: int, scale: np.ndarray,
            rng: np.random.Generator) -> None:
    """Alter series[start:stop] ([time, features], in place) by one anomaly of `kind`."""
    span = stop - start
    sign = rng.choice([-1.0, 1.0])
    if kind == "spike":
        series[start:stop] += sign * 1.5 * scale
    elif kind == "level_shift":
        series[start:stop] += sign * 0.8 * scale
    elif kind == "drift":
        series[start:stop] += sign * np.linspace(0.1, 1.0, span)[:, None] * scale
    elif kind == "stuck":
        series[start:stop] = series[start - 1]
    elif kind == "noise_burst":
        series[start:stop] += 0.4 * scale * rng.standard_normal((span, series.shape[1]))
    else:
        raise DataError(f"unknown anomaly kind {kind!r}; choose from {', '.join(ANOMALY_KINDS)}")


def inject_anomalies(
    values: np.ndarray,
    rate: float,
    rng: np.random.Generator,
    *,
    kinds: tuple[str, ...] = ANOMALY_KINDS,
    scale: np.ndarray | float = 1.0,
    quiet_start: int = 32,
    events: np.ndarray | None = None,
    event_kinds: dict[int, str] | None = None,
) -> Telemetry:
    """Inject events so that about `rate` of all readings lie inside one; the first `quiet_start` stay normal.

    Spikes last one reading, the other kinds 8–32 readings. Existing `events` (e.g. a dataset's labels) are kept.
    """
    if not 0 <= rate < 0.5:
        raise DataError(f"anomaly rate must be in [0, 0.5), got {rate}")
    values = np.array(values, dtype=np.float32, copy=True)
    devices, length, _ = values.shape
    events = np.zeros((devices, length), np.int32) if events is None else np.array(events, np.int32, copy=True)
    event_kinds = dict(event_kinds or {})
    scale = np.broadcast_to(np.asarray(scale, np.float32), values.shape[2:])
    next_id = max(event_kinds, default=0) + 1
    if rate == 0:
        return Telemetry(values, events, event_kinds)
    mean_span = np.mean([1 if k == "spike" else 20 for k in kinds])
    mean_gap = mean_span / rate
    for device in range(devices):
        position = quiet_start + int(rng.exponential(mean_gap))
        while True:
            kind = kinds[rng.integers(len(kinds))]
            span = 1 if kind == "spike" else int(rng.integers(8, 33))
            if position + span > length:
                break
            if not events[device, position : position + span].any():
                _inject(values[device], kind, position, position + span, scale, rng)
                events[device, position : position + span] = next_id
                event_kinds[next_id] = kind
                next_id += 1
            position += span + 1 + int(rng.exponential(mean_gap))
    return Telemetry(values, events, event_kinds)


def telemetry_from_series(values: np.ndarray, labels: np.ndarray | None, devices: int,
                          rng: np.random.Generator) -> Telemetry:
    """Recorded readings [time, features] for every device, each starting at its own random offset.

    Labelled runs of the recording become events (kind "labelled"), so detection is reported against them.
    """
    length = len(values)
    events = np.zeros(length, np.int32)
    kinds: dict[int, str] = {}
    if labels is not None:
        for event, (first, last) in enumerate(labelled_events(labels), start=1):
            events[first : last + 1] = event
    offsets = rng.integers(0, length, size=devices)
    per_device = np.stack([np.roll(values, -o, axis=0) for o in offsets]).astype(np.float32)
    per_events = np.stack([np.roll(events, -o) for o in offsets])
    # The same labelled run seen by different devices is a different event.
    ids = np.where(per_events > 0, per_events + np.arange(devices)[:, None] * (events.max() + 1), 0)
    for device in range(devices):
        for event in np.unique(ids[device][ids[device] > 0]):
            kinds[int(event)] = "labelled"
    return Telemetry(per_device, ids.astype(np.int32), kinds)
