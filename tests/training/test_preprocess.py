import numpy as np
import pytest
import pywt

from aelstm.core.errors import DataError
from aelstm.core.preprocess import (
    DenoiseConfig,
    MinMaxScaler,
    interpolate_gaps,
    prepare_windows,
    sliding_windows,
    wavelet_denoise,
)


def test_interpolation_is_linear_inside_and_nearest_at_the_edges():
    values = np.array([[np.nan], [1.0], [np.nan], [3.0], [np.nan]])
    assert interpolate_gaps(values).ravel().tolist() == [1.0, 1.0, 2.0, 3.0, 3.0]


def test_interpolation_refuses_an_empty_feature():
    with pytest.raises(DataError, match="no readings"):
        interpolate_gaps(np.full((4, 1), np.nan))


def test_wavelet_denoising_removes_noise_but_keeps_the_signal():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 4 * np.pi, 64)
    clean = np.sin(t)[None, :, None]
    noisy = clean + rng.normal(0, 0.3, clean.shape)
    denoised = wavelet_denoise(noisy, DenoiseConfig(level=2))
    assert denoised.shape == noisy.shape
    assert np.mean((denoised - clean) ** 2) < 0.6 * np.mean((noisy - clean) ** 2)


def test_denoising_can_be_turned_off():
    x = np.random.default_rng(1).normal(size=(2, 16, 3))
    assert np.array_equal(wavelet_denoise(x, DenoiseConfig(enabled=False)), x)


def test_each_window_is_denoised_on_its_own():
    rng = np.random.default_rng(2)
    windows = rng.normal(size=(5, 32, 2))
    batch = prepare_windows(windows, DenoiseConfig())
    single = prepare_windows(windows[3:4], DenoiseConfig())
    np.testing.assert_allclose(batch[3:4], single, rtol=1e-6)
    changed = windows.copy()
    changed[[0, 1, 2, 4]] += 100.0
    np.testing.assert_allclose(prepare_windows(changed, DenoiseConfig())[3:4], single, rtol=1e-6)


def pywt_denoise(windows: np.ndarray, config: DenoiseConfig) -> np.ndarray:
    """VisuShrink written directly with pywt's multilevel transform: what `wavelet_denoise` must compute."""
    length = windows.shape[1]
    level = min(config.level, pywt.dwt_max_level(length, config.wavelet))
    if level < 1:
        return windows
    coeffs = pywt.wavedec(windows, config.wavelet, level=level, axis=1, mode="periodization")
    sigma = np.median(np.abs(coeffs[-1]), axis=1, keepdims=True) / 0.6745
    threshold = sigma * np.sqrt(2.0 * np.log(length))
    if config.mode == "soft":
        shrunk = [np.sign(d) * np.maximum(np.abs(d) - threshold, 0.0) for d in coeffs[1:]]
    else:
        shrunk = [np.where(np.abs(d) > threshold, d, 0.0) for d in coeffs[1:]]
    return pywt.waverec([coeffs[0], *shrunk], config.wavelet, axis=1, mode="periodization")[:, :length]


@pytest.mark.parametrize(("length", "wavelet", "level", "mode"), [
    (32, "db4", 1, "soft"), (31, "db4", 1, "soft"), (33, "db4", 2, "hard"), (64, "sym5", 3, "soft"),
    (17, "haar", 4, "hard"), (6, "db4", 1, "soft"),  # db4 cannot split 6 readings: left as they are
])
def test_wavelet_denoising_is_pywts_visushrink(length, wavelet, level, mode):
    config = DenoiseConfig(wavelet=wavelet, level=level, mode=mode)
    windows = np.random.default_rng(length).normal(size=(40, length, 3)) * np.array([0.01, 1.0, 300.0])
    denoised = wavelet_denoise(windows, config)
    assert denoised.shape == windows.shape and denoised.flags.c_contiguous
    np.testing.assert_allclose(denoised, pywt_denoise(windows, config), rtol=1e-12, atol=1e-12 * 300)


def test_prepare_rejects_inf_and_bad_shapes():
    with pytest.raises(DataError, match="Inf"):
        prepare_windows(np.full((1, 8, 1), np.inf), DenoiseConfig())
    with pytest.raises(DataError, match=r"\[batch, window, features\]"):
        prepare_windows(np.zeros((8, 1)), DenoiseConfig())


def test_bad_denoise_settings_are_named():
    with pytest.raises(DataError, match="wavelet"):
        DenoiseConfig(wavelet="nope")


def test_minmax_scaler_maps_training_range_to_unit_interval_and_handles_constants():
    readings = np.array([[0.0, 5.0], [10.0, 5.0]])
    scaler = MinMaxScaler.fit(readings)
    np.testing.assert_allclose(scaler.transform(readings), [[0.0, 0.0], [1.0, 0.0]])


def test_sliding_windows_end_where_documented():
    values = np.arange(10.0)[:, None]
    windows = sliding_windows(values, 4, 3)
    assert windows.shape == (3, 4, 1)
    assert windows[:, -1, 0].tolist() == [3.0, 6.0, 9.0]
    with pytest.raises(DataError, match="fewer than the window"):
        sliding_windows(values[:3], 4)
