"""The paper's preprocessing: linear interpolation of gaps, wavelet denoising, min–max scaling.

`prepare_windows` is the one function that turns raw windows into model input, at training and at serving time
alike; min–max scaling itself lives inside the exported graph (its parameters are in the manifest), so the ONNX
model takes windows in raw units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pywt

from .errors import DataError

OUT_OF_RANGE_POLICIES = ("extrapolate", "clip")


@dataclass(frozen=True)
class DenoiseConfig:
    """Wavelet shrinkage per window and feature (VisuShrink: universal threshold, soft or hard)."""

    enabled: bool = True
    wavelet: str = "db4"
    level: int = 1
    mode: str = "soft"

    def __post_init__(self) -> None:
        if self.wavelet not in pywt.wavelist(kind="discrete"):
            raise DataError(f"unknown discrete wavelet {self.wavelet!r}; see pywt.wavelist(kind='discrete')")
        if self.level < 1:
            raise DataError(f"wavelet level must be ≥ 1, got {self.level}")
        if self.mode not in ("soft", "hard"):
            raise DataError(f"wavelet threshold mode must be 'soft' or 'hard', got {self.mode!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class MinMaxScaler:
    """Per-feature min–max scaling fitted on training readings only."""

    minimum: np.ndarray
    maximum: np.ndarray

    @classmethod
    def fit(cls, readings: np.ndarray) -> MinMaxScaler:
        flat = readings.reshape(-1, readings.shape[-1])
        return cls(np.nanmin(flat, axis=0), np.nanmax(flat, axis=0))

    @property
    def span(self) -> np.ndarray:
        """max − min, with constant features given span 1 so they scale to 0 instead of dividing by zero."""
        span = self.maximum - self.minimum
        return np.where(span > 0, span, 1.0)

    def transform(self, values: np.ndarray) -> np.ndarray:
        return (values - self.minimum) / self.span


def interpolate_gaps(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """Fill NaN readings by linear interpolation along time; leading/trailing gaps take the nearest reading."""
    values = np.asarray(values, dtype=np.float64)
    if not np.isnan(values).any():
        return values
    moved = np.moveaxis(values, axis, -1)
    flat = moved.reshape(-1, moved.shape[-1]).copy()
    positions = np.arange(flat.shape[1])
    for row in flat:
        missing = np.isnan(row)
        if missing.all():
            raise DataError("a feature has no readings at all in this window/series: cannot interpolate")
        if missing.any():
            row[missing] = np.interp(positions[missing], positions[~missing], row[~missing])
    return np.moveaxis(flat.reshape(moved.shape), -1, axis)


def wavelet_denoise(windows: np.ndarray, config: DenoiseConfig) -> np.ndarray:
    """Denoise each window and feature of `[batch, window, features]` independently (vectorised over batch).

    Only the window itself is used, so serving a window gives exactly the values it had in training.
    """
    if not config.enabled:
        return windows
    length = windows.shape[1]
    level = min(config.level, pywt.dwt_max_level(length, config.wavelet))
    if level < 1:
        return windows
    coeffs = pywt.wavedec(windows, config.wavelet, level=level, axis=1, mode="periodization")
    finest = coeffs[-1]
    sigma = np.median(np.abs(finest), axis=1, keepdims=True) / 0.6745
    threshold = sigma * np.sqrt(2.0 * np.log(length))
    shrunk = [coeffs[0]]
    for detail in coeffs[1:]:
        if config.mode == "soft":
            shrunk.append(np.sign(detail) * np.maximum(np.abs(detail) - threshold, 0.0))
        else:
            shrunk.append(np.where(np.abs(detail) > threshold, detail, 0.0))
    return pywt.waverec(shrunk, config.wavelet, axis=1, mode="periodization")[:, :length]


def prepare_windows(windows: np.ndarray, denoise: DenoiseConfig) -> np.ndarray:
    """Raw windows `[batch, window, features]` → model input (gaps filled, denoised), float32.

    NaN marks a missing reading and is interpolated; ±Inf is rejected because it is never a real reading.
    """
    windows = np.asarray(windows, dtype=np.float64)
    if windows.ndim != 3:
        raise DataError(f"windows must be [batch, window, features], got shape {windows.shape}")
    if np.isinf(windows).any():
        raise DataError("windows contain ±Inf readings")
    filled = interpolate_gaps(windows, axis=1)
    return wavelet_denoise(filled, denoise).astype(np.float32)


def sliding_windows(values: np.ndarray, length: int, stride: int = 1) -> np.ndarray:
    """`[time, features]` → `[n, length, features]` windows (a view); window i ends at row i·stride + length − 1."""
    if length < 2:
        raise DataError(f"window length must be ≥ 2, got {length}")
    if stride < 1:
        raise DataError(f"stride must be ≥ 1, got {stride}")
    if len(values) < length:
        raise DataError(f"series has {len(values)} readings, fewer than the window length {length}")
    view = np.lib.stride_tricks.sliding_window_view(values, length, axis=0)  # [n, features, length]
    return np.swapaxes(view, 1, 2)[::stride]


def evenly_spaced(rows, at_most: int | None):
    """At most `at_most` of `rows` (a numpy array or torch tensor), spread evenly over them, without randomness;
    all of them when `at_most` is None or not fewer. Bounds what a long recording costs a fit."""
    if at_most is None or len(rows) <= at_most:
        return rows
    return rows[np.linspace(0, len(rows) - 1, at_most).round().astype(np.int64)]
