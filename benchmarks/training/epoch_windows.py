"""Fit time and validation loss of the default model on the synthetic multivariate device for several caps on the
windows an epoch trains on (the development sweep behind `TrainConfig.epoch_windows`).

    python -m benchmarks.training.epoch_windows 4096 2048 8192 1024     # caps in run order; `none`: every window

Prints one line per cap; `benchmarks/results/training/development/epoch-windows.md` records the sweep that chose
the default."""

from __future__ import annotations

import sys
import time

import torch
from threadpoolctl import threadpool_limits

from aelstm.training.train import TrainConfig, fit

from .multivariate_cost import device


def main() -> None:
    values = device()
    caps = [None if arg == "none" else int(arg) for arg in sys.argv[1:]]
    torch.set_num_threads(1)
    with threadpool_limits(1):
        for cap in caps:
            began = time.perf_counter()
            fitted = fit(values, TrainConfig(epoch_windows=cap), progress=False)
            print({"epoch_windows": cap, "fit_s": round(time.perf_counter() - began, 1),
                   "epochs": len(fitted.history), "best_validation_loss": fitted.validation["loss"],
                   "validation_score_p99": fitted.validation["score_p99"]}, flush=True)


if __name__ == "__main__":
    main()
