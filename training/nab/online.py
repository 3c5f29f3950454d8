"""Online fine-tuning for streaming scoring: the model keeps learning from rows it has already scored.

A NAB file drifts long after its probationary period ends; a model frozen on those first rows turns every new
normal regime into a stream of errors. Here the series is scored in segments: each segment is scored by the
model as it stood at the segment's start, then the model trains a few epochs on the most recent rows (which
include that segment) before the next segment is scored. No row is ever scored by a model that saw it.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from aelstm.core.preprocess import prepare_windows, sliding_windows

if TYPE_CHECKING:  # torch loads only where a model is fine-tuned
    import torch

    from ..train import FittedModel


@dataclass(frozen=True)
class OnlineConfig:
    """`every`: rows per segment and `recent`: rows trained on after each segment (None = the probation length);
    `epochs`: passes over those rows per update (0 turns fine-tuning off)."""

    every: int | None = None
    recent: int | None = None
    epochs: int = 1

    def to_dict(self) -> dict:
        return asdict(self)


def _phases(fitted: FittedModel) -> list[tuple[list[torch.nn.Parameter], tuple[float, float]]]:
    """The same parameter groups and loss weights the mode was trained with."""
    model, config = fitted.model, fitted.config
    if config.mode == "separate":
        spatial = [*model.encoder.parameters(), *model.decoder.parameters()]
        temporal = [*model.lstm.parameters(), *model.head.parameters()]
        return [(spatial, (1.0, 0.0)), (temporal, (0.0, 1.0))]
    weights = {"ae": (1.0, 0.0), "lstm": (0.0, 1.0)}.get(config.mode, (config.alpha, config.beta))
    return [(list(model.parameters()), weights)]


def fine_tune(fitted: FittedModel, windows: np.ndarray, epochs: int, generator: torch.Generator) -> None:
    """A few Adam epochs on raw windows `[n, window, features]`; score scales and threshold stay as calibrated."""
    import torch

    if epochs < 1 or len(windows) == 0:
        return
    batch = torch.from_numpy(prepare_windows(windows, fitted.config.denoise))
    model, size = fitted.model, fitted.config.batch_size
    for params, weights in _phases(fitted):
        optimiser = torch.optim.Adam(params, lr=fitted.config.learning_rate)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(len(batch), generator=generator)
            for start in range(0, len(batch), size):
                rec, pred = model.step_errors(batch[order[start : start + size]])
                loss = weights[0] * rec.mean() + weights[1] * pred.mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    model.eval()


def score_online(
    fitted: FittedModel, values: np.ndarray, probation: int, online: OnlineConfig
) -> tuple[np.ndarray, np.ndarray]:
    """(rec_part, pred_part) per window ending at rows window−1 … T−1, with fine-tuning after every segment."""
    import torch

    window = fitted.config.window
    windows = sliding_windows(values, window, 1)  # windows[k] ends at row k + window − 1
    every = online.every or probation
    recent = online.recent or probation
    generator = torch.Generator().manual_seed(fitted.config.seed)
    bounds = [window - 1, *range(probation, len(values), every), len(values)]
    bounds = sorted({b for b in bounds if b >= window - 1})
    rec, pred = [], []
    for first_row, end_row in itertools.pairwise(bounds):
        _, r, p = fitted.score_parts(windows[first_row - window + 1 : end_row - window + 1])
        rec.append(r)
        pred.append(p)
        if end_row > probation and end_row < len(values):  # learn from what has now been seen
            fine_tune(fitted, windows[max(0, end_row - recent) : end_row - window + 1], online.epochs, generator)
    return np.concatenate(rec), np.concatenate(pred)
