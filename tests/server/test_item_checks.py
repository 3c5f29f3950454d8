"""The one-comparison check that accepts the usual item agrees with the exact checks that name a problem: it never
accepts a value the exact range refuses, and whatever it passes on is judged exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aelstm.core.bundle import Bundle
from aelstm.server.items import ItemProblem, check_window, packed_windows, plainly_scorable
from aelstm.server.registry import ModelEntry
from aelstm.v1 import scoring_pb2 as pb

WINDOW = 4
LARGEST = float(np.finfo(np.float32).max)


def entry(low: float, high: float) -> ModelEntry:
    manifest = {"model": {"name": "m", "version": "1"}, "features": ["v"], "window": WINDOW,
                "preprocessing": {"scaler": {"min": [low], "max": [high]}}}
    return ModelEntry("f", "1", Bundle(Path("."), manifest), digest="test")


def window(value: float) -> np.ndarray:
    return np.full((WINDOW, 1), value, np.float32)


# (0, 3): the exact edges are not float32 values and round outward, so the float32 bounds must be moved inward
@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (0.0, 3.0), (-3.7, 12.1), (1e20, 1e25), (-1e30, 1e30)])
def test_values_at_the_edges_of_the_scorable_range_are_judged_exactly(low, high):
    model = entry(low, high)
    exact_low, exact_high = model.bundle.scorable_range
    for edge in (exact_low[0], exact_high[0]):
        near = np.float32(np.clip(edge, -LARGEST, LARGEST))  # a range past float32's: its largest value
        with np.errstate(over="ignore"):  # past float32's largest value: inf
            around = (np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf)))
        for value in around:
            inside = exact_low[0] <= float(value) <= exact_high[0] and np.isfinite(value)
            assert not plainly_scorable(window(value), model) or inside, value  # the fast check never lets one by
            if inside:
                assert check_window(window(value), model) is not None
            else:
                with pytest.raises(ItemProblem, match=r"outside|Inf"):
                    check_window(window(value), model)


def test_gaps_and_infinities_go_to_the_checks_that_name_them():
    model = entry(0.0, 1.0)
    gappy = window(0.5)
    gappy[1, 0] = np.nan
    assert not plainly_scorable(gappy, model)
    assert np.isnan(check_window(gappy, model)).sum() == 1  # fillable: accepted with its gap
    with pytest.raises(ItemProblem, match="only NaN"):
        check_window(window(np.nan), model)
    with pytest.raises(ItemProblem, match="Inf"):
        check_window(window(np.inf), model)
    assert plainly_scorable(window(0.5), model)


def window_item(values: np.ndarray, shape: tuple[int, ...] = (WINDOW, 1)) -> pb.Item:
    return pb.Item(device_id="d", window=pb.Tensor(shape=shape, packed=values.astype("<f4").tobytes()))


def test_a_request_of_plain_windows_is_decoded_and_checked_as_one_array():
    model = entry(0.0, 1.0)
    values = [window(0.1), window(0.5), window(0.9)]
    decoded = packed_windows([window_item(v) for v in values], model)
    assert decoded.shape == (3, WINDOW, 1) and np.array_equal(decoded, np.stack(values))


@pytest.mark.parametrize("odd", ["gap", "outside", "shape", "readings", "values"])
def test_one_item_that_is_not_a_plain_window_sends_the_request_to_the_item_by_item_checks(odd):
    model = entry(0.0, 1.0)
    items = [window_item(window(0.5)) for _ in range(3)]
    plain_values = pb.Tensor(shape=(WINDOW, 1), values=pb.FloatList(values=[0.5] * WINDOW))
    if odd == "gap":
        gappy = window(0.5)
        gappy[0, 0] = np.nan
        items[1] = window_item(gappy)
    elif odd == "outside":
        items[1] = window_item(window(1e30))
    elif odd == "shape":
        items[1] = window_item(window(0.5), shape=(1, WINDOW))
    elif odd == "readings":
        items[1] = pb.Item(device_id="d", readings=plain_values)
    else:  # the same window as plain values, not packed bytes
        items[1] = pb.Item(device_id="d", window=plain_values)
    assert packed_windows(items, model) is None
