"""The publishing gate: a retrained model replaces the one its fleet serves only if it is not worse on recent
normal readings that neither of them trained on.

The figure is the one operators feel: the fraction of held-out normal windows that the model's own alarm policy
flags (false alarms), run as the server runs it. It is scale-free, so two models with different scalers and score
scales compare directly, and a model that diverged, over-fits or was calibrated too tightly shows up in it.
"""

from __future__ import annotations

from dataclasses import dataclass

from aelstm.core.bundle import Bundle
from aelstm.core.data import Series
from aelstm.core.scoring import score_series

DEFAULT_MARGIN = 0.01  # a candidate may flag at most one point more of the held-out windows than the serving model


@dataclass(frozen=True)
class GateResult:
    """Whether a candidate may be published, with the figures that decided it."""

    passed: bool
    candidate_flagged: float
    serving_flagged: float | None  # None: nothing comparable is served
    serving_version: str | None
    reason: str

    def to_dict(self) -> dict:
        return {"passed": self.passed, "candidate_flagged": self.candidate_flagged,
                "serving_flagged": self.serving_flagged, "serving_version": self.serving_version,
                "reason": self.reason}


def flagged_fraction(bundle: Bundle, holdout: Series) -> float:
    """The share of `holdout`'s full windows that `bundle`'s policy flags, from a fresh policy state."""
    return float(score_series(bundle, holdout, device="cpu")["is_anomaly"].mean())


def gate(candidate: Bundle, serving: tuple[str, Bundle] | None, holdout: Series,
         margin: float = DEFAULT_MARGIN) -> GateResult:
    """Judge `candidate` against `serving` ((version, bundle), or None for a fleet's first model) on `holdout`."""
    flagged = flagged_fraction(candidate, holdout)
    if serving is None:
        return GateResult(True, flagged, None, None, "first version of the fleet")
    version, current = serving
    if current.features != candidate.features:
        return GateResult(True, flagged, None, version,
                          f"features changed from {list(current.features)}: not comparable with version {version}")
    served = flagged_fraction(current, holdout)
    figures = (f"flags {flagged:.2%} of {_count(candidate, holdout)} held-out normal windows, version {version} "
               f"flags {served:.2%}")
    if flagged <= served + margin:
        return GateResult(True, flagged, served, version, figures)
    return GateResult(False, flagged, served, version, f"{figures} (allowed: {served + margin:.2%})")


def _count(bundle: Bundle, holdout: Series) -> int:
    return max(0, len(holdout) - bundle.window + 1)
