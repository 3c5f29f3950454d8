"""Per-device sliding windows for `readings` items."""

from __future__ import annotations

import numpy as np
import pytest

from aelstm.server.devices import DeviceWindows


def rows(*values: float) -> np.ndarray:
    return np.asarray(values, dtype=np.float32).reshape(-1, 1)


def test_a_device_warms_up_then_slides():
    held = DeviceWindows()
    assert held.append("f", "d", rows(1, 2), window=3) == (None, 2)
    window, count = held.append("f", "d", rows(3), window=3)
    assert count == 3 and window.ravel().tolist() == [1, 2, 3]
    window, _ = held.append("f", "d", rows(4, 5), window=3)
    assert window.ravel().tolist() == [3, 4, 5]


def test_devices_and_fleets_are_separate():
    held = DeviceWindows()
    held.append("f", "a", rows(1, 2), window=2)
    assert held.append("f", "b", rows(9), window=2) == (None, 1)
    assert held.append("g", "a", rows(9), window=2) == (None, 1)


def test_least_recently_updated_device_is_evicted():
    held = DeviceWindows(max_devices=2)
    held.append("f", "a", rows(1), window=2)
    held.append("f", "b", rows(1), window=2)
    held.append("f", "a", rows(2), window=2)  # a is now the most recent
    held.append("f", "c", rows(1), window=2)  # evicts b
    assert len(held) == 2
    assert held.append("f", "b", rows(2), window=2) == (None, 1)


def test_a_change_of_features_starts_the_window_over():
    held = DeviceWindows()
    held.append("f", "d", rows(1, 2), window=3)
    assert held.append("f", "d", np.zeros((1, 2), np.float32), window=3)[1] == 1


def test_max_devices_must_be_positive():
    with pytest.raises(ValueError):
        DeviceWindows(max_devices=0)


def test_windows_are_bounded_in_bytes_ids_included():
    held = DeviceWindows(max_bytes=200_000)
    for i in range(100):
        held.append("f", f"{i:03d}" + "x" * 65_536, rows(1), window=4)
    assert held.bytes <= 200_000 and 1 <= len(held) <= 3
    assert held.append("f", "099" + "x" * 65_536, rows(2), window=4)[1] == 2  # the most recent was kept


def test_a_reading_not_after_the_last_timestamp_is_not_appended_again():
    held = DeviceWindows()
    assert held.append("f", "d", rows(1, 2), window=4, timestamp_ms=20) == (None, 2)
    assert held.append("f", "d", rows(1, 2), window=4, timestamp_ms=20) == (None, 2)  # a resend
    assert held.append("f", "d", rows(0), window=4, timestamp_ms=19) == (None, 2)  # older
    assert held.append("f", "d", rows(3), window=4, timestamp_ms=21) == (None, 3)
    assert held.append("f", "d", rows(4), window=4)[1] == 4  # 0: no timestamp, always appended
