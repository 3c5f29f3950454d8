"""Choosing streaming-score settings and detection thresholds on the development half of NAB only.

A setting picked by looking at the scored files flatters the figure it produces; here a small grid is declared up
front, each candidate is scored on the development files, and the best standard-profile score there wins (the first
declared among ties). The thresholds are that candidate's corpus-optimised thresholds on the same files, one per
profile. Nothing here sees a held-out file: `develop` is handed the development files and nothing else.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Generic, TypeVar

import numpy as np

from .corpus import NabFile
from .likelihood import LikelihoodConfig
from .online import OnlineConfig
from .scoring import PROFILES, NabScorer

SELECTION_PROFILE = "standard"
# The declared grid, in the order that breaks ties (simpler or earlier-default values first).
GRID: dict[str, tuple] = {
    "short": (1, 5),  # rows averaged into the current raw error before its likelihood
    "long": (None, 2000),  # past rows in the reference distribution (None: all of them)
    "refractory": (0, 100),  # rows a new alarm must beat (0: every row keeps its score)
    "fine_tune": (False, True),  # online fine-tuning after every segment (a trained setting: costs a run)
}
PATCHES = (1, 8)  # readings per AE input patch, where the training code has that option (trained: costs a run)

T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    """One point of the grid for the AE-LSTM family; `patch` is None where the training code has no patch option."""

    short: int = 1
    long: int | None = None
    refractory: int = 100
    fine_tune: bool = True
    patch: int | None = None

    @property
    def likelihood(self) -> LikelihoodConfig:
        return LikelihoodConfig(short=self.short, long=self.long, refractory=self.refractory)

    @property
    def online(self) -> OnlineConfig:
        return OnlineConfig(epochs=1 if self.fine_tune else 0)

    @property
    def label(self) -> str:
        text = (
            f"short={self.short} long={self.long or 'all'} refractory={self.refractory} "
            f"fine-tune={'on' if self.fine_tune else 'off'}"
        )
        return text if self.patch is None else f"{text} patch={self.patch}"

    def to_dict(self) -> dict:
        return asdict(self)


def declared_grid(with_patch: bool) -> list[Setting]:
    """Every combination of GRID (and PATCHES when the training code has them), in tie-breaking order."""
    patches = PATCHES if with_patch else (None,)
    names = [*GRID, "patch"]
    return [Setting(**dict(zip(names, values, strict=True))) for values in itertools.product(*GRID.values(), patches)]


@dataclass(frozen=True)
class Candidate(Generic[T]):
    """One candidate's development result: all profiles at their development-optimised thresholds."""

    candidate: T
    report: dict  # profile name → ProfileResult.to_dict()

    @property
    def score(self) -> float:
        return self.report[SELECTION_PROFILE]["score"]

    @property
    def thresholds(self) -> dict[str, float]:
        return {name: result["threshold"] for name, result in self.report.items()}


@dataclass(frozen=True)
class Development(Generic[T]):
    """What the development half decided: every candidate's result and the chosen one."""

    files: tuple[str, ...]
    candidates: tuple[Candidate[T], ...]
    chosen: Candidate[T]


def develop(
    files: Sequence[NabFile], candidates: Sequence[T], scores_of: Callable[[T, Sequence[NabFile]], list[np.ndarray]]
) -> Development[T]:
    """Score every candidate on `files` (the development half) and keep the best standard score, first among ties.

    `scores_of(candidate, files)` gives one score array per file, in order; it is only ever called with `files`.
    """
    scorer = NabScorer.of(files)
    results = []
    for candidate in candidates:
        scores = scores_of(candidate, files)
        report = {p.name: scorer.optimised(scores, p).to_dict() for p in PROFILES}
        results.append(Candidate(candidate, report))
    best = int(np.argmax([result.score for result in results]))  # first maximum: earliest declared among ties
    return Development(tuple(nab.key for nab in files), tuple(results), results[best])
