"""Per-device sliding windows for `readings` items, kept by the ingress (replicas stay stateless).

Bounded: at most `max_devices` windows; the least recently updated device is forgotten first and simply warms up
again if it comes back.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np


class DeviceWindows:
    """The last `window` readings of each (fleet, device)."""

    def __init__(self, max_devices: int = 100_000) -> None:
        if max_devices < 1:
            raise ValueError(f"max devices must be ≥ 1, got {max_devices}")
        self.max_devices = max_devices
        self._held: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()

    def __len__(self) -> int:
        return len(self._held)

    def append(self, fleet: str, device: str, readings: np.ndarray, window: int) -> tuple[np.ndarray | None, int]:
        """Append `readings [n, features]`; returns (the full window ending at the last reading or None, held).

        A device whose feature count changed (its fleet got a model with other features) starts over.
        """
        key = (fleet, device)
        held = self._held.pop(key, None)
        if held is not None and held.shape[1] == readings.shape[1]:
            readings = np.concatenate([held, readings])
        readings = readings[-window:].copy() if len(readings) > window else readings
        self._held[key] = readings
        while len(self._held) > self.max_devices:
            self._held.popitem(last=False)
        return (readings if len(readings) == window else None), len(readings)
