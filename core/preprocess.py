"""The paper's preprocessing: linear interpolation of gaps, wavelet denoising, min–max scaling.

`prepare_windows` is the one function that turns raw windows into model input, at training and at serving time
alike; min–max scaling itself lives inside the exported graph (its parameters are in the manifest), so the ONNX
model takes windows in raw units.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

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


@lru_cache(maxsize=32)
def wavelet_transform(length: int, wavelet: str, level: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]] | None:
    """pywt's multilevel DWT of windows of `length` (periodization), at `level` or the deepest level a window of
    `length` allows, as matrices: `forward` `[length, m]` maps a window to its coefficients `[cA, cD_level, ...,
    cD_1]` (`forward.T @ window`), `inverse` `[m, length]` maps them back, and `sizes` are the parts' lengths; None
    when the window is too short to split. The transform is linear, so applying pywt to the unit vectors gives it
    exactly; one matrix product then replaces pywt's per-call work (a fixed 0.2–0.3 ms, most of a one-window
    call)."""
    level = min(level, pywt.dwt_max_level(length, wavelet))
    if level < 1:
        return None
    coeffs = pywt.wavedec(np.eye(length), wavelet, level=level, axis=1, mode="periodization")
    sizes = tuple(part.shape[1] for part in coeffs)
    parts = np.split(np.eye(sum(sizes)), np.cumsum(sizes)[:-1], axis=1)
    inverse = np.ascontiguousarray(pywt.waverec(parts, wavelet, axis=1, mode="periodization")[:, :length])
    forward = np.concatenate(coeffs, axis=1)
    for matrix in (forward, inverse):
        matrix.setflags(write=False)  # shared by every caller through the cache
    return forward, inverse, sizes


def wavelet_denoise(windows: np.ndarray, config: DenoiseConfig) -> np.ndarray:
    """Denoise each window and feature of `[batch, window, features]` independently (vectorised over batch):
    VisuShrink on pywt's transform (`wavelet_transform`), the noise level from the finest details' median.

    Only the window itself is used, so serving a window gives the values it had in training (to the last bit of
    float64 rounding, which the matrix product's blocking may change with the batch size).
    """
    if not config.enabled:
        return windows
    length = windows.shape[1]
    transform = wavelet_transform(length, config.wavelet, config.level)
    if transform is None:
        return windows
    forward, inverse, sizes = transform
    coeffs = forward.T @ windows  # [batch, coefficients, features]: one small product per window
    finest = np.sort(np.abs(coeffs[:, -sizes[-1]:]), axis=1)
    middle = sizes[-1] // 2
    median = finest[:, middle] if sizes[-1] % 2 else (finest[:, middle - 1] + finest[:, middle]) / 2
    threshold = (median / 0.6745 * np.sqrt(2.0 * np.log(length)))[:, None]
    details = coeffs[:, sizes[0]:]  # a view: shrunk in place
    if config.mode == "soft":
        details -= np.clip(details, -threshold, threshold)
    else:
        details[np.abs(details) <= threshold] = 0.0
    return inverse.T @ coeffs


def prepare_windows(windows: np.ndarray, denoise: DenoiseConfig) -> np.ndarray:
    """Raw windows `[batch, window, features]` → model input (gaps filled, denoised), float32.

    NaN marks a missing reading and is interpolated; ±Inf is rejected because it is never a real reading.
    """
    windows = np.asarray(windows, dtype=np.float64)
    if windows.ndim != 3:
        raise DataError(f"windows must be [batch, window, features], got shape {windows.shape}")
    if not np.isfinite(windows).all():  # one pass over complete windows, the usual case
        if np.isinf(windows).any():
            raise DataError("windows contain ±Inf readings")
        windows = interpolate_gaps(windows, axis=1)
    return wavelet_denoise(windows, denoise).astype(np.float32)


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
