"""The self-describing model bundle: `model.onnx` + `manifest.json`, written once and checked on every load."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BundleError, DataError
from .policy import Policy, StreamState, Verdict
from .preprocess import DenoiseConfig, MinMaxScaler

if TYPE_CHECKING:
    import numpy as np

# Scaled values (0..1 over the training range) beyond this many training ranges are refused: squared errors of
# such windows would overflow float32 inside the model and the score would be +Inf.
MAX_SCALED = 1e12

SCHEMA_VERSION = 2  # 2: one alarm `policy` in place of version 1's `threshold`
MANIFEST_FILE = "manifest.json"
MODEL_FILE = "model.onnx"
INPUT_NAME = "windows"
OUTPUT_NAMES = ("score", "rec_part", "pred_part")
_REQUIRED = ("schema_version", "model", "features", "window", "preprocessing", "score", "policy", "onnx")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Bundle:
    """A validated bundle on disk; `manifest` is the parsed `manifest.json`."""

    path: Path
    manifest: dict

    @property
    def name(self) -> str:
        return self.manifest["model"]["name"]

    @property
    def version(self) -> str:
        return self.manifest["model"]["version"]

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.manifest["features"])

    @property
    def window(self) -> int:
        return int(self.manifest["window"])

    @cached_property
    def policy(self) -> Policy:
        """The fitted alarm policy every stream (a device, a scored file) starts from."""
        return Policy.from_dict(self.manifest["policy"])

    @cached_property
    def threshold(self) -> float:
        """The threshold before any streamed score (on the policy's alarm-score scale)."""
        return self.policy.initial_threshold

    @cached_property
    def _alone(self) -> StreamState:
        return self.policy.start()

    def judge_alone(self, terms: tuple[float, ...]) -> Verdict:
        """The fitted policy's verdict on one window with no device history (a `window` item); learns nothing."""
        return self._alone.judge(terms)

    @property
    def sampling_period_ms(self) -> float | None:
        """The fleet's sampling period, where training data had timestamps: a device's gaps are judged by it."""
        period = self.manifest.get("sampling", {}).get("period_ms")
        return float(period) if period else None

    @property
    def threshold_method(self) -> str:
        """How the threshold was chosen: the policy's rules, with a fallback its calibration had to take."""
        fallback = self.policy.threshold_rule.threshold.params.get("fallback")
        return self.policy.spec + (f" (fallback: {fallback})" if fallback else "")

    @property
    def denoise(self) -> DenoiseConfig:
        return DenoiseConfig(**self.manifest["preprocessing"]["denoise"])

    @property
    def scaler(self) -> MinMaxScaler:
        import numpy as np

        scaler = self.manifest["preprocessing"]["scaler"]
        return MinMaxScaler(np.asarray(scaler["min"]), np.asarray(scaler["max"]))

    @cached_property
    def scorable_range(self) -> tuple[np.ndarray, np.ndarray]:
        """Per feature, the raw values this model scores with a finite result: MAX_SCALED training ranges around
        its training range (the scaler maps that range to [0, 1]). Computed once: every scored item is checked."""
        import numpy as np

        scaler = self.scaler
        low, high = scaler.minimum.astype(np.float64), scaler.maximum.astype(np.float64)
        return low - MAX_SCALED * scaler.span, high + MAX_SCALED * scaler.span

    @cached_property
    def scorable_range32(self) -> tuple[np.ndarray, np.ndarray]:
        """`scorable_range` as float32, rounded inward: a float32 reading inside it is inside the exact range, so
        one comparison per value accepts the usual window (a reading outside it gets the exact check)."""
        import numpy as np

        low, high = self.scorable_range
        largest = np.finfo(np.float32).max
        low32 = np.clip(low, -largest, largest).astype(np.float32)
        high32 = np.clip(high, -largest, largest).astype(np.float32)
        low32 = np.where(low32 < low, np.nextafter(low32, np.float32(np.inf)), low32)
        high32 = np.where(high32 > high, np.nextafter(high32, np.float32(-np.inf)), high32)
        return low32, high32

    @property
    def model_path(self) -> Path:
        return self.path / self.manifest["onnx"]["file"]


def write_manifest(directory: Path, manifest: dict) -> None:
    """Stamp the ONNX file's hash into the manifest and write it (the model file must already exist)."""
    model = directory / manifest["onnx"]["file"]
    manifest["onnx"]["sha256"] = sha256_file(model)
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def load_bundle(path: str | Path, expect_features: tuple[str, ...] | None = None) -> Bundle:
    """Read and validate a bundle; any mismatch raises `BundleError` naming the bundle and the problem."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"bundle {path}: not a directory")
    manifest_path = path / MANIFEST_FILE
    if not manifest_path.is_file():
        raise BundleError(f"bundle {path}: {MANIFEST_FILE} is missing")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle {path}: {MANIFEST_FILE} is not valid JSON ({exc})") from exc
    missing = [key for key in _REQUIRED if key not in manifest]
    if missing:
        raise BundleError(f"bundle {path}: manifest lacks {missing}")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise BundleError(
            f"bundle {path}: manifest schema version {manifest['schema_version']!r} is not supported "
            f"(this aelstm reads version {SCHEMA_VERSION})"
        )
    bundle = Bundle(path, manifest)
    _check_consistency(bundle)
    if not bundle.model_path.is_file():
        raise BundleError(f"bundle {path}: {bundle.model_path.name} is missing")
    actual = sha256_file(bundle.model_path)
    if actual != manifest["onnx"].get("sha256"):
        raise BundleError(f"bundle {path}: {bundle.model_path.name} hash {actual[:12]}… does not match the manifest")
    if expect_features is not None and tuple(expect_features) != bundle.features:
        raise BundleError(
            f"bundle {path}: features {list(bundle.features)} do not match the expected {list(expect_features)}"
        )
    return bundle


def _check_consistency(bundle: Bundle) -> None:
    m = bundle.manifest
    try:
        n_features = len(m["features"])
        scaler = m["preprocessing"]["scaler"]
        if n_features == 0 or len(scaler["min"]) != n_features or len(scaler["max"]) != n_features:
            raise BundleError(f"bundle {bundle.path}: scaler parameters do not match {n_features} features")
        if int(m["window"]) < 2:
            raise BundleError(f"bundle {bundle.path}: window length {m['window']} is below 2")
        bundle.denoise  # noqa: B018 - validates the denoising settings
        if not bundle.policy.fitted:
            raise BundleError(f"bundle {bundle.path}: its alarm policy {bundle.policy.spec!r} is not fitted")
        if m["preprocessing"]["out_of_range"] not in ("extrapolate", "clip"):
            raise BundleError(
                f"bundle {bundle.path}: unknown out_of_range policy {m['preprocessing']['out_of_range']!r}"
            )
        for key in ("name", "version"):
            str(m["model"][key])
    except (KeyError, TypeError, ValueError, DataError) as exc:
        raise BundleError(f"bundle {bundle.path}: malformed manifest ({type(exc).__name__}: {exc})") from exc
