"""The scoring backend interface and its in-process implementation (onnxruntime in this process, no Ray).

The ingress speaks only this interface, so the Ray Serve backend and the in-process one are interchangeable: the
in-process one serves edge nodes, laptops and fast tests; the Ray one serves fleets and scales out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

import numpy as np

from aelstm.core.bundle import load_bundle
from aelstm.core.errors import AelstmError
from aelstm.core.runtime import BundleScorer, Scores

from .registry import ModelEntry

log = logging.getLogger(__name__)


class BackendUnavailable(AelstmError):
    """The backend cannot score right now (its Ray application is gone or not yet deployed): nothing is wrong
    with the model, so the registry must not refuse it."""


class ScoringBackend(Protocol):
    """Scores batches of raw windows `[batch, window, features]` with the model named by its registry key."""

    name: str
    replicas: int  # workers that score (Ray Serve replicas, or threads), as of the last health check

    async def start(self) -> None:
        """Get ready to load models (may take seconds: starting Ray, deploying replicas)."""

    async def prepare(self, entry: ModelEntry) -> str:
        """Load `entry` and score one window with it; returns the onnxruntime provider that really runs.

        Raises when the model cannot be served, so the registry can refuse it and keep the previous version.
        """

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        """Scores of every window, in order."""

    async def retain(self, keys: set[str]) -> None:
        """Models outside `keys` are no longer served and may be unloaded."""

    async def healthy(self) -> bool:
        """Whether the backend can score now."""

    async def close(self) -> None:
        """Release every resource (threads, Ray)."""


def probe_windows(entry: ModelEntry) -> np.ndarray:
    """One all-zero window of the model's shape: enough to prove a session loads and runs."""
    return np.zeros((1, entry.bundle.window, len(entry.bundle.features)), dtype=np.float32)


class InProcessBackend:
    """onnxruntime sessions in this process; scoring runs on a small thread pool so the event loop stays free."""

    name = "inprocess"

    def __init__(self, threads: int = 1, intra_op_threads: int = 1, device: str = "auto",
                 retired_grace_s: float = 60.0) -> None:
        self._threads = threads
        self._intra_op_threads = intra_op_threads
        self._device = device
        self._scorers: dict[str, BundleScorer] = {}
        # Models swapped out, kept `retired_grace_s` after their swap (however many swaps follow): calls that
        # resolved them just before a swap still find them. key -> (scorer, monotonic time it was retired).
        self.retired_grace_s = retired_grace_s
        self._retired: dict[str, tuple[BundleScorer, float]] = {}
        self._pool: ThreadPoolExecutor | None = None

    @property
    def replicas(self) -> int:
        return self._threads if self._pool is not None else 0

    async def start(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self._threads, thread_name_prefix="aelstm-score")

    async def prepare(self, entry: ModelEntry) -> str:
        if entry.key not in self._scorers:
            scorer = await self._run(self._load, entry.bundle.path)
            await self._run(scorer.score, probe_windows(entry))
            self._scorers[entry.key] = scorer
        return self._scorers[entry.key].provider

    def _load(self, path) -> BundleScorer:
        scorer = BundleScorer(load_bundle(path), device=self._device, intra_op_threads=self._intra_op_threads)
        log.info("loaded model %s on %s", path, scorer.provider, extra={"fields": {"provider": scorer.provider}})
        return scorer

    async def score(self, key: str, windows: np.ndarray) -> Scores:
        scorer = self._scorers.get(key) or self._retired.get(key, (None, 0.0))[0]
        if scorer is None:
            raise LookupError(f"model {key} is not loaded")
        return await self._run(scorer.score, windows)

    async def retain(self, keys: set[str]) -> None:
        now = time.monotonic()
        self._retired = {key: retired for key, retired in self._retired.items()
                         if key not in keys and now - retired[1] < self.retired_grace_s}
        for key in set(self._scorers) - keys:
            self._retired[key] = (self._scorers.pop(key), now)

    async def healthy(self) -> bool:
        return self._pool is not None

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True)  # waits for running calls: never on the loop
        self._scorers.clear()
        self._retired.clear()

    async def _run(self, function, *args):
        if self._pool is None:
            raise RuntimeError("backend not started")
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, *args)
