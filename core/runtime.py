"""Score windows with a bundle's ONNX graph through onnxruntime (no torch): the one scoring path for the CLI,
the evaluation harness and every serving backend."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np

from .bundle import INPUT_NAME, OUTPUT_NAMES, Bundle
from .errors import AelstmError, DataError
from .preprocess import prepare_windows

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


@dataclass(frozen=True)
class Scores:
    """Scores of a batch of windows, `score = rec_part + pred_part`: scores only. Whether a score is an anomaly is
    the alarm policy's call, made where a device's history is (the ingress, `aelstm score`), never here."""

    score: np.ndarray
    rec_part: np.ndarray
    pred_part: np.ndarray
    compute_s: float = 0.0  # preprocessing + onnxruntime time of the run that produced them (serving breakdown)


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError as exc:
        raise AelstmError(
            "onnxruntime is not installed: pip install 'aelstm[cpu]' (or 'aelstm[gpu]' on a CUDA machine)"
        ) from exc
    return onnxruntime


def choose_providers(device: str = "auto") -> list[str]:
    """`auto` prefers CUDA when the installed onnxruntime offers it; `cuda` insists; `cpu` never uses a GPU."""
    available = _onnxruntime().get_available_providers()
    if device == "cpu":
        return [CPU]
    if device == "cuda":
        if CUDA not in available:
            raise AelstmError(f"--device cuda needs onnxruntime-gpu with CUDA; available providers: {available}")
        return [CUDA, CPU]
    if device == "auto":
        return [CUDA, CPU] if CUDA in available else [CPU]
    raise AelstmError(f"device must be auto, cuda or cpu, got {device!r}")


class BundleScorer:
    """An onnxruntime session over one bundle. `provider` is what really runs (onnxruntime silently falls back
    to CPU when CUDA cannot start, so it is read back from the session, not assumed)."""

    def __init__(self, bundle: Bundle, device: str = "auto", intra_op_threads: int = 1) -> None:
        ort = _onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Replicas share cores: spinning threads would steal them from each other.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        requested = choose_providers(device)
        self.session = ort.InferenceSession(str(bundle.model_path), options, providers=requested)
        self.provider = self.session.get_providers()[0]
        if requested[0] != self.provider:
            log.warning("model %s: asked for %s but onnxruntime runs %s", bundle.name, requested[0], self.provider)
        self.bundle = bundle
        self._denoise = bundle.denoise
        self._shape = (bundle.window, len(bundle.features))

    def check_windows(self, windows: np.ndarray) -> np.ndarray:
        """Validate shape and values; returns the windows as float64 `[batch, window, features]`."""
        windows = np.asarray(windows, dtype=np.float64)
        if windows.ndim == 2:
            windows = windows[None]
        if windows.ndim != 3 or windows.shape[1:] != self._shape:
            raise DataError(
                f"model {self.bundle.name} expects windows of shape [window={self._shape[0]}, "
                f"features={self._shape[1]}], got {list(windows.shape[1:] if windows.ndim == 3 else windows.shape)}"
            )
        return windows

    def score(self, windows: np.ndarray) -> Scores:
        """Score `[batch, window, features]` raw windows (NaN = missing reading, interpolated)."""
        started = time.perf_counter()
        inputs = prepare_windows(self.check_windows(windows), self._denoise)
        score, rec, pred = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: inputs})
        return Scores(score, rec, pred, time.perf_counter() - started)
