"""Per-device sliding windows for `readings` items, kept by the ingress (replicas stay stateless).

Bounded by count and by bytes: at most `max_devices` windows and `max_bytes` in all (readings plus the ids that key
them); the least recently updated device is forgotten first and simply warms up again if it comes back.

Idempotent by timestamp: an item whose `timestamp_ms` (the time of its last reading) is not after the device's last
one is not appended again, so a request resent after a backend failure scores the same window instead of
appending its readings twice. `timestamp_ms` 0 means "no timestamp": such readings are always appended.

A device's streaming-threshold state (`alarm_of`) lives in its entry, so the same bounds cover it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from aelstm.core.spot import StreamingThreshold

from .alarms import DeviceAlarm

# Bookkeeping per device besides its readings and ids (the key tuple, the dict slot, the array header).
ENTRY_OVERHEAD_BYTES = 256


@dataclass
class _Held:
    readings: np.ndarray
    last_timestamp_ms: int
    size: int
    fresh: bool = True  # the latest append added readings (False: a resend)
    alarm: DeviceAlarm | None = None


class DeviceWindows:
    """The last `window` readings of each (fleet, device)."""

    def __init__(self, max_devices: int = 100_000, max_bytes: int = 256 * 1024 * 1024) -> None:
        if max_devices < 1:
            raise ValueError(f"max devices must be ≥ 1, got {max_devices}")
        if max_bytes < 1:
            raise ValueError(f"max bytes must be ≥ 1, got {max_bytes}")
        self.max_devices = max_devices
        self.max_bytes = max_bytes
        self.bytes = 0
        self._held: OrderedDict[tuple[str, str], _Held] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def append(self, fleet: str, device: str, readings: np.ndarray, window: int,
               timestamp_ms: int = 0) -> tuple[np.ndarray | None, int]:
        """Append `readings [n, features]`; returns (the full window ending at the last reading or None, held).

        A device whose feature count changed (its fleet got a model with other features) starts over. Readings
        whose `timestamp_ms` is not after the device's last timestamp are not appended (a resend): the result is
        that of the window already held.
        """
        key = (fleet, device)
        held = self._held.pop(key, None)
        if held is not None:
            self.bytes -= held.size
        last, fresh, alarm = 0, True, None
        if held is not None and held.readings.shape[1] == readings.shape[1]:
            last, alarm = held.last_timestamp_ms, held.alarm
            if timestamp_ms and last and timestamp_ms <= last:
                readings, fresh = held.readings, False  # already appended: a resend after a failure
            else:
                readings = np.concatenate([held.readings, readings])
        readings = readings[-window:].copy()  # a copy: never a view of the request's bytes
        entry = _Held(readings, max(last, timestamp_ms), 0, fresh, alarm)
        self._held[key] = entry
        self._resize(entry, fleet, device)
        return (readings if len(readings) == window else None), len(readings)

    def alarm_of(self, fleet: str, device: str, model_key: str,
                 threshold: StreamingThreshold) -> tuple[DeviceAlarm, bool]:
        """(the device's threshold state for the model, whether its latest readings are new); call right after
        an `append` that returned a full window. A device scored by another model before starts over."""
        entry = self._held.get((fleet, device))
        if entry is None:  # over the byte budget alone: judged from a fresh state, kept nowhere
            return DeviceAlarm(model_key, threshold), True
        if entry.alarm is None or entry.alarm.key != model_key:
            entry.alarm = DeviceAlarm(model_key, threshold)
            self._resize(entry, fleet, device)
        return entry.alarm, entry.fresh

    def _resize(self, entry: _Held, fleet: str, device: str) -> None:
        """Count `entry`'s bytes, then forget the least recently updated devices while over the bounds."""
        self.bytes -= entry.size
        entry.size = (entry.readings.nbytes + len(fleet.encode()) + len(device.encode()) + ENTRY_OVERHEAD_BYTES
                      + (entry.alarm.nbytes if entry.alarm is not None else 0))
        self.bytes += entry.size
        while len(self._held) > 1 and (len(self._held) > self.max_devices or self.bytes > self.max_bytes):
            _, evicted = self._held.popitem(last=False)
            self.bytes -= evicted.size
        if self.bytes > self.max_bytes:  # one device alone is over the budget: keep nothing
            self._held.clear()
            self.bytes = 0
