"""Co-train the joint AE-LSTM on normal windows, calibrate its score and threshold, and write the bundle."""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from aelstm.core.bundle import INPUT_NAME, MODEL_FILE, OUTPUT_NAMES, SCHEMA_VERSION, load_bundle, write_manifest
from aelstm.core.data import Series
from aelstm.core.errors import DataError
from aelstm.core.policy import Policy
from aelstm.core.preprocess import (
    MinMaxScaler,
    evenly_spaced,
    interpolate_gaps,
    prepare_windows,
    sliding_windows,
)
from aelstm.core.progress import ProgressBar

from .config import EARLY_STOPPING_WINDOWS, TrainConfig
from .error_weights import fit_error_weights
from .model import JointAELSTM, ModelConfig

ONNX_OPSET = 17
# Windows per forward pass when the torch model scores: on one CPU thread, passes of 4,096 windows took 18–46 % longer
# per window than passes of 1,024 (the default model, 1 and 38 sensors).
SCORING_BATCH = 1024
EpochCallback = Callable[[dict], None]  # one epoch's record: phase, epoch, rec, pred, val_loss


@dataclass
class FittedModel:
    """A trained, calibrated model with what was learnt along the way."""

    model: JointAELSTM
    config: TrainConfig
    scaler: MinMaxScaler
    policy: Policy
    error_scales: tuple[float, float]
    history: list[dict]
    validation: dict
    seconds: float
    validation_terms: np.ndarray | None = None  # [n, 2] held-out normal (rec_part, pred_part): the policy's fit

    @property
    def validation_scores(self) -> np.ndarray:
        """The held-out normal scores (the sum of the terms), in time order."""
        return self.validation_terms.sum(axis=1)

    @property
    def early_stops(self) -> dict[str, int]:
        """Training phase → the epoch it stopped at, for each phase that stopped before its epoch budget."""
        last = {record["phase"]: record["epoch"] for record in self.history}
        return {phase: epoch for phase, epoch in last.items() if epoch < self.config.epochs}

    def score(self, windows: np.ndarray, batch_size: int = SCORING_BATCH) -> np.ndarray:
        """Scores of raw windows with the torch model (same function as the exported graph)."""
        return self.score_parts(windows, batch_size)[0]

    def score_terms(self, windows: np.ndarray) -> np.ndarray:
        """`[n, 2]`: each window's weighted reconstruction and prediction errors (their sum is the score)."""
        _, rec, pred = self.score_parts(windows)
        return np.stack([rec, pred], axis=1).astype(np.float64)

    def score_parts(self, windows: np.ndarray, batch_size: int = SCORING_BATCH) -> tuple[np.ndarray, ...]:
        prepared = prepare_windows(windows, self.config.denoise)
        outputs = [[], [], []]
        self.model.eval()
        with torch.no_grad():
            for start in range(0, len(prepared), batch_size):
                for sink, part in zip(
                    outputs, self.model(torch.from_numpy(prepared[start : start + batch_size])), strict=True
                ):
                    sink.append(part.numpy())
        return tuple(np.concatenate(parts) for parts in outputs)


def _losses(model: JointAELSTM, batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rec, pred = model.step_errors(batch)
    return rec.mean(), pred.mean()


def _fit_phase(
    model: JointAELSTM,
    params: list[torch.nn.Parameter],
    weights: tuple[float, float],
    train: torch.Tensor,
    val: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    label: str,
    progress: bool,
    on_epoch: EpochCallback | None,
) -> list[dict]:
    """Adam on `weights[0]·L_rec + weights[1]·L_pred` with early stopping on the validation loss (best restored).

    Training stops after `patience` epochs that do not lower the loss by `min_delta` (a fraction) below its value at
    the last such improvement: an absolute margin of 1e-7 was met by nearly every epoch of a slowly converging model,
    which then never stopped. The weights kept are those of the lowest loss seen, improvement that counts or not."""
    # The fused kernel updates every parameter in one call: on one CPU thread the per-parameter loop cost 8 % of a
    # training step of the default model.
    optimiser = torch.optim.Adam(params, lr=config.learning_rate, fused=True)
    best_loss, best_state, history = float("inf"), copy.deepcopy(model.state_dict()), []
    mark, stale = float("inf"), 0  # the loss at the last improvement by min_delta, and epochs since
    with ProgressBar(label, config.epochs, "epochs", enabled=progress) as bar:
        for epoch in range(config.epochs):
            model.train()
            order = torch.randperm(len(train), generator=generator)[: config.epoch_windows]
            sums = np.zeros(2)
            for start in range(0, len(order), config.batch_size):
                rec, pred = _losses(model, train[order[start : start + config.batch_size]])
                loss = weights[0] * rec + weights[1] * pred
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                sums += [rec.item(), pred.item()]
            batches = -(-len(order) // config.batch_size)
            model.eval()
            with torch.no_grad():
                val_rec, val_pred = (x.item() for x in _losses(model, val))
            val_loss = weights[0] * val_rec + weights[1] * val_pred
            record = {"phase": label, "epoch": epoch + 1, "rec": sums[0] / batches, "pred": sums[1] / batches,
                      "val_loss": val_loss}
            history.append(record)
            if on_epoch is not None:
                on_epoch(record)
            bar.advance(note=f"rec {record['rec']:.4g} pred {record['pred']:.4g} val {val_loss:.4g}")
            if val_loss < best_loss:
                best_loss, best_state = val_loss, copy.deepcopy(model.state_dict())
            if val_loss < mark * (1.0 - config.min_delta):
                mark, stale = val_loss, 0
            else:
                stale += 1
                if stale >= config.patience:
                    break
    model.load_state_dict(best_state)
    return history


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run with `threads` intra-op torch threads, then restore the previous setting.

    The default model is small: on a busy machine two threads were ~10× slower than one (spinning threads
    contending for cores), so training uses one thread unless asked otherwise."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def fit(
    normal: np.ndarray,
    config: TrainConfig = TrainConfig(),
    progress: bool = True,
    threads: int = 1,
    *,
    init: FittedModel | None = None,
    reference: np.ndarray | None = None,
    on_epoch: EpochCallback | None = None,
) -> FittedModel:
    """Train on normal readings `[time, features]` (gaps allowed) with `threads` torch threads; the last
    `validation_fraction` of the time range is held out for early stopping and threshold calibration.

    `init` fine-tunes instead of starting from random weights: a copy of its model (same architecture and mode as
    `config`) trains `config.epochs` more epochs on `normal`, with a new scaler, score scales and threshold; `init`
    itself is left as it was. `reference` is a further normal recording (e.g. a long anomaly-free run): the
    scaler also covers the range of its first part and the threshold is calibrated on its held-out part together
    with `normal`'s, so a short `normal` need not carry all of the normal variation alone. It is not trained on here
    (pre-train on it with a plain `fit` and pass that as `init`). `on_epoch` sees each epoch's record as it ends
    (progress of a fit that runs elsewhere, e.g. in a Ray task)."""
    with torch_threads(threads):
        return _fit(normal, config, progress, init, reference, on_epoch)


def _split(values: np.ndarray, config: TrainConfig, what: str) -> int:
    """Index of the first held-out reading; a clear error when either part is shorter than a window."""
    split = int(len(values) * (1.0 - config.validation_fraction))
    if split < config.window + 1 or len(values) - split < config.window:
        raise DataError(
            f"{len(values)} {what} readings are too few for window {config.window} with a "
            f"{config.validation_fraction:.0%} validation split (need ≥ {2 * config.window + 1} readings per part)"
        )
    return split


def _initial_model(n_features: int, config: TrainConfig, init: FittedModel | None) -> JointAELSTM:
    """Fresh random weights, or a copy of `init`'s when its architecture and training mode match `config`."""
    lstm_input = "reading" if config.mode == "lstm" else "latent"
    wanted = ModelConfig(
        n_features, config.window, config.hidden, config.latent, config.lstm_layers, lstm_input, config.patch,
        config.score_steps, config.error_score
    )
    if init is None:
        return JointAELSTM(wanted)
    if init.model.config != wanted or init.config.mode != config.mode:
        raise DataError(
            f"cannot fine-tune a {init.config.mode} model of {init.model.config} as a {config.mode} model of {wanted}"
        )
    return copy.deepcopy(init.model)


def _fit(
    normal: np.ndarray,
    config: TrainConfig,
    progress: bool,
    init: FittedModel | None,
    reference: np.ndarray | None,
    on_epoch: EpochCallback | None,
) -> FittedModel:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    values = interpolate_gaps(np.asarray(normal, dtype=np.float64))
    config = config.for_features(values.shape[1])
    split = _split(values, config, "normal")
    train_windows = prepare_windows(sliding_windows(values[:split], config.window, config.stride), config.denoise)
    val_windows = prepare_windows(sliding_windows(values[split:], config.window, 1), config.denoise)
    calibration = [sliding_windows(values[split:], config.window, 1)]
    scaler = MinMaxScaler.fit(train_windows)
    if reference is not None:
        extra = interpolate_gaps(np.asarray(reference, dtype=np.float64))
        if extra.ndim != 2 or extra.shape[1] != values.shape[1]:
            raise DataError(f"reference readings of shape {extra.shape} do not match {values.shape[1]} features")
        extra_split = _split(extra, config, "reference")
        covered = prepare_windows(sliding_windows(extra[:extra_split], config.window, config.window), config.denoise)
        scaler = MinMaxScaler.fit(np.concatenate([train_windows.reshape(-1, values.shape[1]),
                                                  covered.reshape(-1, values.shape[1])]))
        calibration.append(sliding_windows(extra[extra_split:], config.window, 1))

    model = _initial_model(values.shape[1], config, init)
    model.set_scaling(scaler.minimum, scaler.span, clip=config.out_of_range == "clip")
    train_t, val_t = torch.from_numpy(train_windows), torch.from_numpy(val_windows)
    judged = evenly_spaced(val_t, EARLY_STOPPING_WINDOWS)
    phase = lambda params, weights, label: _fit_phase(  # noqa: E731 - binds the shared arguments
        model, list(params), weights, train_t, judged, config, generator, label, progress, on_epoch
    )
    temporal = [*model.lstm.parameters(), *model.head.parameters()]
    spatial = [*model.encoder.parameters(), *model.decoder.parameters()]
    if config.mode == "separate":
        history = phase(spatial, (1.0, 0.0), "autoencoder") + phase(temporal, (0.0, 1.0), "lstm")
    else:
        weights = {"ae": (1.0, 0.0), "lstm": (0.0, 1.0)}.get(config.mode, (config.alpha, config.beta))
        history = phase(model.parameters(), weights, config.mode)

    model.eval()
    with torch.no_grad():
        model.set_error_weights(*fit_error_weights(model, val_t))
        rec, pred = model.last_errors(evenly_spaced(train_t, config.epoch_windows))
    scales = (max(rec.mean().item(), 1e-12), max(pred.mean().item(), 1e-12))
    model.set_score_weights(*config.score_weights, *scales)
    fitted = FittedModel(model, config, scaler, config.alarm_policy, scales, history, {}, 0.0)
    fitted.validation_terms = np.concatenate([fitted.score_terms(windows) for windows in calibration])
    if not np.isfinite(fitted.validation_terms).all():
        raise DataError("training diverged: the validation scores are not finite (try a lower --lr, or check the "
                        "data for extreme values)")
    val_scores = fitted.validation_scores
    fitted.policy = config.alarm_policy.fit(fitted.validation_terms)
    fitted.validation = {
        "windows": len(val_scores),
        "loss": min(r["val_loss"] for r in history if r["phase"] == history[-1]["phase"]) if history else None,
        "score_median": float(np.median(val_scores)),
        "score_p99": float(np.quantile(val_scores, 0.99)),
        "score_max": float(val_scores.max()),
        "flagged_fraction": float(fitted.policy.flags(fitted.validation_terms).mean()),
    }
    fitted.seconds = time.perf_counter() - started
    return fitted


def export_onnx(model: JointAELSTM, path: Path) -> None:
    """One graph: raw windows `[batch, window, features]` → score, rec_part, pred_part `[batch]`."""
    example = torch.zeros(2, model.config.window, model.config.n_features)
    import warnings

    with warnings.catch_warnings():
        # The TorchScript exporter exports this LSTM exactly and ~40× faster than the dynamo one; its
        # deprecation notice is not actionable for users.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model.eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}},
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def fingerprint(values: np.ndarray) -> str:
    """SHA-256 of the training readings (float64, C order, with their shape)."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    return hashlib.sha256(str(values.shape).encode() + values.tobytes()).hexdigest()


def _package_version() -> str:
    try:
        return metadata.version("aelstm")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def write_bundle(
    fitted: FittedModel,
    out_dir: str | Path,
    *,
    feature_names: tuple[str, ...],
    name: str,
    version: str,
    source: dict,
    sampling_period_ms: float | None = None,
):
    """Export the ONNX graph and its manifest into `out_dir`, then load it back (validation included)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(feature_names) != fitted.model.config.n_features:
        raise DataError(f"{len(feature_names)} feature names for a model of {fitted.model.config.n_features} features")
    export_onnx(fitted.model, out_dir / MODEL_FILE)
    alpha, beta = fitted.config.score_weights
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "model": {"name": name, "version": version, "created_at": datetime.now(UTC).isoformat(timespec="seconds")},
        "package_version": _package_version(),
        "features": list(feature_names),
        "window": fitted.config.window,
        "preprocessing": {
            "interpolation": "linear",
            "denoise": fitted.config.denoise.to_dict(),
            "scaler": {"kind": "minmax", "min": fitted.scaler.minimum.tolist(), "max": fitted.scaler.maximum.tolist()},
            "out_of_range": fitted.config.out_of_range,
        },
        "architecture": fitted.model.config.to_dict(),
        "score": {
            "formula": "alpha * rec / rec_scale + beta * pred / pred_scale, at the window's last step",
            "error_score": fitted.model.config.error_score,
            "alpha": alpha,
            "beta": beta,
            "rec_scale": fitted.error_scales[0],
            "pred_scale": fitted.error_scales[1],
        },
        "policy": fitted.policy.to_dict(),
        "sampling": {"period_ms": sampling_period_ms},
        "training": {
            **source,
            "config": fitted.config.to_dict(),
            "epochs_run": len(fitted.history),
            "stopped_early": bool(fitted.early_stops),
            "stopped_at": fitted.early_stops,
            "final_epoch": fitted.history[-1] if fitted.history else None,
            "seconds": round(fitted.seconds, 2),
            "torch_version": torch.__version__,
        },
        "validation": fitted.validation,
        "onnx": {"file": MODEL_FILE, "opset": ONNX_OPSET, "input": INPUT_NAME, "outputs": list(OUTPUT_NAMES)},
    }
    write_manifest(out_dir, manifest)
    return load_bundle(out_dir)


def train_series(
    series: Series,
    out_dir: str | Path,
    config: TrainConfig = TrainConfig(),
    *,
    rows: int,
    name: str | None = None,
    version: str = "1",
    progress: bool = True,
    threads: int = 1,
    on_epoch: EpochCallback | None = None,
):
    """Train on `series[:rows]` and write a bundle: the whole `aelstm train` job."""
    normal = series.values[:rows]
    fitted = fit(normal, config, progress=progress, threads=threads, on_epoch=on_epoch)
    source = {"data": series.name, "rows": rows, "data_fingerprint": fingerprint(normal), "seed": config.seed}
    period = sampling_period_ms(series.timestamps[:rows]) if series.timestamps is not None else None
    bundle = write_bundle(fitted, out_dir, feature_names=series.feature_names, name=name or series.name,
                          version=version, source=source, sampling_period_ms=period)
    return fitted, bundle


def sampling_period_ms(timestamps: np.ndarray) -> float | None:
    """The median time between readings, in ms (None without two distinct timestamps): how the server tells a gap
    in a device's readings."""
    steps = np.diff(np.asarray(timestamps, dtype="datetime64[ns]").astype(np.int64)) / 1e6
    steps = steps[steps > 0]
    return float(np.median(steps)) if steps.size else None


__all__ = ["FittedModel", "TrainConfig", "fit", "replace", "train_series", "write_bundle"]
