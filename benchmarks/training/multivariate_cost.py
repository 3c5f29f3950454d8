"""What a multivariate device costs to train and to serve: the default `aelstm train` model against windowed PCA
and isolation forest on one device of 24,000 readings × 38 sensors, and the scoring ceiling of its ONNX graph
against the default model of one sensor.

    python -m benchmarks.training.multivariate_cost     # writes benchmarks/results/training/multivariate_cost.*

The device is synthetic (no such recording is in the repository): 38 sensors mixing five cycles of different
periods and a slow drift, each with its own noise, so that training time, not detection, is measured. Fit times
are wall seconds on one thread, PCA and isolation forest fitted `--repeats` times (median), each AE-LSTM once
(also without the default's cap on windows per epoch, to show what the cap saves);
the ceiling is onnxruntime alone,
one thread, on calls of 256 windows.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from aelstm.core.runtime import BundleScorer
from aelstm.training.config import EARLY_STOPPING_WINDOWS
from aelstm.training.detectors.baselines import IsolationForestDetector, PCADetector
from aelstm.training.train import TrainConfig, fit, write_bundle

from ..harness import REPO, uptime, write_report
from ..performance.run import now, short_revision

OUT = REPO / "benchmarks" / "results" / "training"
EVERY_WINDOW = "ae-lstm, 38 sensors, every window each epoch"
ROWS, SENSORS, CYCLES = 24_000, 38, 5


def device(rows: int = ROWS, sensors: int = SENSORS, seed: int = 0) -> np.ndarray:
    """`[rows, sensors]`: five cycles and a drift, mixed per sensor, plus noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(rows)
    periods = rng.uniform(20, 2_000, CYCLES)
    factors = np.stack([np.sin(2 * np.pi * t / p + rng.uniform(0, 6.3)) for p in periods] + [t / rows], axis=1)
    mixing = rng.normal(size=(CYCLES + 1, sensors))
    return factors @ mixing + rng.uniform(0.02, 0.3, sensors) * rng.normal(size=(rows, sensors))


def timed(job) -> float:
    began = time.perf_counter()
    job()
    return time.perf_counter() - began


def ceiling(bundle_path: Path, values: np.ndarray, window: int, seconds: float = 3.0) -> float:
    """Windows/s of onnxruntime alone, one thread, calls of 256 windows."""
    from aelstm.core.bundle import load_bundle
    from aelstm.core.preprocess import sliding_windows

    scorer = BundleScorer(load_bundle(bundle_path), device="cpu")
    batch = sliding_windows(values[: 256 + window - 1], window, 1).astype(np.float32)
    scorer.score(batch)
    done, began = 0, time.perf_counter()
    while time.perf_counter() - began < seconds:
        scorer.score(batch)
        done += len(batch)
    return done / (time.perf_counter() - began)


def measure(repeats: int, work: Path) -> dict:
    values = device()
    config = TrainConfig()
    result: dict = {"rows": ROWS, "sensors": SENSORS, "config": config.to_dict(),
                    "training_windows": int(ROWS * (1 - config.validation_fraction)) - config.window + 1}
    fits = {"pca": [], "isolation-forest": []}
    for _ in range(repeats):
        fits["pca"].append(timed(lambda: PCADetector(config.window).fit(values)))
        fits["isolation-forest"].append(timed(lambda: IsolationForestDetector(config.window).fit(values)))
    print(f"pca {fits['pca']}, isolation forest {fits['isolation-forest']}", flush=True)
    fitted = {}
    jobs = (("ae-lstm, 38 sensors", values, config), ("ae-lstm, 1 sensor", values[:, :1], config),
            (EVERY_WINDOW, values, replace(config, epoch_windows=None)))
    for name, data, job_config in jobs:
        began = time.perf_counter()  # one fit each: minutes, not seconds
        fitted[name] = fit(data, job_config, progress=False)
        fits[name] = seconds = [time.perf_counter() - began]
        print(f"{name}: {seconds} s, {len(fitted[name].history)} epochs", flush=True)
    result["fit_seconds"] = {name: {"runs": [round(s, 2) for s in runs], "median": round(statistics.median(runs), 2)}
                             for name, runs in fits.items()}
    result["epochs"] = {name: len(f.history) for name, f in fitted.items()}
    result["validation_loss"] = {name: f.validation["loss"] for name, f in fitted.items()}
    result["ceiling_windows_per_s"] = {}
    for name, f in ((name, fitted[name]) for name in ("ae-lstm, 38 sensors", "ae-lstm, 1 sensor")):
        features = tuple(f"s{i}" for i in range(f.model.config.n_features))
        path = work / name.replace(", ", "-").replace(" ", "-")
        write_bundle(f, path, feature_names=features, name=name, version="1", source={})
        data = values[:, : len(features)]
        result["ceiling_windows_per_s"][name] = round(ceiling(path, data, config.window))
    pca = result["fit_seconds"]["pca"]["median"]
    result["joint_over_pca"] = round(result["fit_seconds"]["ae-lstm, 38 sensors"]["median"] / pca, 1)
    result["cap_speedup"] = round(result["fit_seconds"][EVERY_WINDOW]["median"]
                                  / result["fit_seconds"]["ae-lstm, 38 sensors"]["median"], 2)
    one, many = (result["ceiling_windows_per_s"][n] for n in ("ae-lstm, 1 sensor", "ae-lstm, 38 sensors"))
    result["ceiling_ratio_1_over_38"] = round(one / many, 2)
    return result


def markdown(result: dict) -> str:
    fits, top = result["fit_seconds"], result["ceiling_windows_per_s"]
    lines = ["# A multivariate device: training and serving cost", "",
             f"`{result['command']}` at {result['commit']}, {result['started']} to {result['ended']}; "
             f"{result['machine']}. **Machine load**: before `{result['uptime_before']}`; after "
             f"`{result['uptime_after']}`.", "",
             f"One synthetic device of {result['rows']:,} readings × {result['sensors']} sensors; the default "
             "`aelstm train` model (window 32, hidden 64, two LSTM layers, early stopping); one thread.", "",
             f"An epoch of the default model trains on {result['config']['epoch_windows']:,} windows drawn afresh "
             f"from the device's {result['training_windows']:,}; the last row trains "
             "on all of them every epoch, as before the cap. Validation loss: the AE-LSTM's lowest on the held-out "
             f"normal windows early stopping judges (at most {EARLY_STOPPING_WINDOWS:,}, evenly spaced; the same "
             "windows for every 38-sensor fit).", "",
             "| detector | fit s (median) | runs | epochs | validation loss |", "|---|---:|---|---:|---:|"]
    for name, cell in fits.items():
        loss = result["validation_loss"].get(name)
        lines.append(f"| {name} | {cell['median']:.2f} | {', '.join(f'{s:.2f}' for s in cell['runs'])} | "
                     f"{result['epochs'].get(name, '–')} | {'–' if loss is None else f'{loss:.3g}'} |")
    lines += ["", f"Joint AE-LSTM ÷ windowed PCA, fit time on 38 sensors: **{result['joint_over_pca']}×** "
              "(target ≤ 10×).",
              f"Every window each epoch ÷ the default cap, fit time on 38 sensors: **{result['cap_speedup']}×**.", "",
              "| model | onnxruntime alone, batch 256, windows/s |", "|---|---:|"]
    lines += [f"| {name} | {value:,} |" for name, value in top.items()]
    lines += ["", f"One sensor ÷ 38 sensors, scoring ceiling: **{result['ceiling_ratio_1_over_38']}×** "
              "(target: the multivariate model costs at most 2× the default model's per window)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="fits of each quick detector (median reported)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    result = {"command": f"python -m benchmarks.training.multivariate_cost --repeats {args.repeats}",
              "commit": short_revision(), "machine": platform.processor() or platform.machine(),
              "uptime_before": uptime(), "started": now()}
    torch.set_num_threads(1)
    with threadpool_limits(1), tempfile.TemporaryDirectory() as tmp:
        result.update(measure(args.repeats, Path(tmp)))
    result["ended"] = now()
    result["uptime_after"] = uptime()
    text = markdown(result)
    write_report(args.out, "multivariate_cost", result, text)
    print(text)


if __name__ == "__main__":
    main()
