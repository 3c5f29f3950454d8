"""The joint AE-LSTM: an autoencoder over short patches of readings (spatial, and with a patch longer than one
reading also local shape) and an LSTM over the sequence of patch codes (temporal).

The module takes windows in raw units, scales them with the training min–max, and returns per window the anomaly
score of the last step and its two parts. The same module is trained in torch and exported to ONNX, so serving and
training compute exactly the same function.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from .config import ERROR_SCORES

LSTM_INPUTS = ("latent", "reading")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters (recorded in the bundle manifest)."""

    n_features: int
    window: int
    hidden: int = 64
    latent: int = 16
    lstm_layers: int = 2
    lstm_input: str = "latent"  # "reading" gives the LSTM-only ablation, which never sees the encoder
    patch: int = 1  # readings per AE input: with one feature, patch 1 can only tell whether a value is in range
    score_steps: int = 1  # the score averages each error over the window's last `score_steps` steps
    error_score: str = "pooled"  # one of ERROR_SCORES

    def to_dict(self) -> dict:
        return asdict(self)


class JointAELSTM(nn.Module):
    """Score A(t) = α·Rec(t)/s_rec + β·Pred(t)/s_pred for the last step t of each window.

    Rec is the mean squared reconstruction error of the patch of `patch` readings ending at t, Pred the mean squared
    error of the LSTM's prediction of reading t from the patches (or readings) before it (both in min–max-scaled
    units). s_rec and s_pred are the mean errors on normal training windows, so each normalised term is ≈ 1 on
    normal data and α, β weigh comparable quantities; with α + β = 1 a normal window scores about 1.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.lstm_input not in LSTM_INPUTS:
            raise ValueError(f"lstm_input must be one of {LSTM_INPUTS}, got {config.lstm_input!r}")
        if not 1 <= config.patch < config.window:
            raise ValueError(f"patch must be in [1, window − 1], got {config.patch} for window {config.window}")
        if config.error_score not in ERROR_SCORES:
            raise ValueError(f"error score must be one of {ERROR_SCORES}, got {config.error_score!r}")
        if not 1 <= config.score_steps <= config.window - config.patch:
            raise ValueError(f"score steps must be in [1, window − patch], got {config.score_steps} for window "
                             f"{config.window} and patch {config.patch}")
        self.config = config
        f, h, z = config.n_features, config.hidden, config.latent
        self.encoder = nn.Sequential(nn.Linear(config.patch * f, h), nn.Tanh(), nn.Linear(h, z))
        self.decoder = nn.Sequential(nn.Linear(z, h), nn.Tanh(), nn.Linear(h, config.patch * f))
        lstm_in = z if config.lstm_input == "latent" else f
        self.lstm = nn.LSTM(lstm_in, h, num_layers=config.lstm_layers, batch_first=True)
        self.head = nn.Linear(h, f)
        # Scoring constants, filled in by calibration; buffers so they are exported into the graph.
        self.register_buffer("scale_min", torch.zeros(f))
        self.register_buffer("scale_span", torch.ones(f))
        self.register_buffer("clip_low", torch.tensor(-torch.inf))
        self.register_buffer("clip_high", torch.tensor(torch.inf))
        self.register_buffer("weights", torch.tensor([0.5, 0.5]))  # α, β
        self.register_buffer("error_scales", torch.ones(2))  # s_rec, s_pred
        # Per dimension of each term's error vector, 1 / its mean squared error on normal windows (ones: pooled).
        self.register_buffer("rec_error_weights", torch.ones(config.patch * f))
        self.register_buffer("pred_error_weights", torch.ones(f))

    def set_scaling(self, minimum: np.ndarray, span: np.ndarray, clip: bool) -> None:
        """Install the training min–max; with `clip`, scaled readings are held to [0, 1]."""
        self.scale_min.copy_(torch.as_tensor(minimum, dtype=torch.float32))
        self.scale_span.copy_(torch.as_tensor(span, dtype=torch.float32))
        self.clip_low.fill_(0.0 if clip else -torch.inf)
        self.clip_high.fill_(1.0 if clip else torch.inf)

    def set_score_weights(self, alpha: float, beta: float, rec_scale: float, pred_scale: float) -> None:
        self.weights.copy_(torch.tensor([alpha, beta]))
        self.error_scales.copy_(torch.tensor([rec_scale, pred_scale]))

    def set_error_weights(self, rec: np.ndarray, pred: np.ndarray) -> None:
        """Install each term's per-dimension error weights (`training.error_weights` fits them)."""
        self.rec_error_weights.copy_(torch.as_tensor(rec, dtype=torch.float32))
        self.pred_error_weights.copy_(torch.as_tensor(pred, dtype=torch.float32))

    def patches(self, scaled: torch.Tensor) -> torch.Tensor:
        """`[B, W, F]` → `[B, W-p+1, p·F]`: the p readings ending at each step p..W, oldest first.

        Plain slices of the time axis, concatenated, so the exported graph holds only Slice and Concat."""
        p = self.config.patch
        return torch.cat([scaled[:, i : i - p + 1 or None] for i in range(p)], dim=-1)

    def step_residuals(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step signed error vectors: reconstruction `[B, W-p+1, p·F]` (patches ending at steps p..W) and
        next-reading prediction (`[B, W-p, F]` for steps p+1..W from patch codes; `[B, W-1, F]` for steps 2..W
        from readings)."""
        scaled = (windows - self.scale_min) / self.scale_span
        scaled = torch.clamp(scaled, self.clip_low, self.clip_high)
        patches = self.patches(scaled)
        latent = self.encoder(patches)
        from_codes = self.config.lstm_input == "latent"
        sequence = latent if from_codes else scaled
        hidden, _ = self.lstm(sequence[:, :-1])
        first_target = self.config.patch if from_codes else 1
        return self.decoder(latent) - patches, self.head(hidden) - scaled[:, first_target:]

    def step_errors(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step mean squared errors (the training losses), reconstruction and prediction."""
        rec, pred = self.step_residuals(windows)
        return (rec**2).mean(dim=-1), (pred**2).mean(dim=-1)

    def error_score(self, residuals: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """`[B, T, D]` error vectors → `[B, T]` by the model's error score (see `ERROR_SCORES`)."""
        weighted = residuals**2 * weights  # pooled: weights of one, so plain squared errors
        return weighted.amax(dim=-1) if self.config.error_score == "feature-max" else weighted.mean(dim=-1)

    def step_scores(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step error scores, reconstruction and prediction (unscaled terms of A)."""
        rec, pred = self.step_residuals(windows)
        return self.error_score(rec, self.rec_error_weights), self.error_score(pred, self.pred_error_weights)

    def last_errors(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each error averaged over the window's last `score_steps` steps `[B]`: with more than one step a single
        noisy reading weighs less and a sustained change more."""
        rec, pred = self.step_scores(windows)
        steps = self.config.score_steps
        return rec[:, -steps:].mean(dim=1), pred[:, -steps:].mean(dim=1)

    def forward(self, windows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`[B, W, F]` raw windows → (score, rec_part, pred_part), each `[B]`; score = rec_part + pred_part."""
        parts = self.weights * torch.stack(self.last_errors(windows), dim=-1) / self.error_scales
        return parts.sum(dim=-1), parts[:, 0], parts[:, 1]
