"""The server's retraining loop: every `retrain_every_s`, and for a fleet whose drift reached `retrain_on_drift`
(`server.drift`), write out what was recorded, then run `aelstm retrain` as a separate low-priority process.
Training never runs on the ingress's event loop or in its process (torch stays out of it), and a retraining run that
fails is logged and counted while scoring goes on. New versions reach every ingress through the registry like any
publish; devices keep their windows and start from the new version's calibration.

A drifted fleet is retrained at most once per `retrain_drift_cooldown_s`, except that a run which skipped it (too
few readings recorded since its version: a drifting fleet alarms, and alarmed readings are not recorded) is tried
again after the next write of the recordings. Drift starts afresh when a new version is served.

An ingress attached to a Ray cluster has the fits run there (`--ray-address`), on the nodes offering
`retrain_fit_resource` when it is set; an embedded or in-process ingress fits them one after another on its own
host. Either way the run and each fit are in the idle scheduling class
(`core.priority.below_scoring`): a cluster's fit runs in a Ray worker of its own that lowers itself, since the nodes
it lands on may score too.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import math
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from aelstm.core.errors import AelstmError
from aelstm.core.priority import below_scoring

from .config import ServeConfig
from .metrics import Metrics
from .recorder import Recorder

log = logging.getLogger(__name__)

def check_retraining_available() -> None:
    """Retraining needs torch; say so when the server starts, not hours later."""
    if importlib.util.find_spec("torch") is None:
        raise AelstmError("retrain-every-s needs the training dependencies (torch) next to the server: "
                          "pip install 'aelstm[train]', or retrain elsewhere with `aelstm retrain`")


def retrain_command(config: ServeConfig, summary: Path, fleets: Sequence[str] = ()) -> list[str]:
    """The `aelstm retrain` run for this ingress's registry and recordings: of `fleets`, or every served fleet."""
    where = ["--ray-address", config.ray_address] if config.ray_address else ["--no-ray"]
    if config.retrain_fit_resource:
        where += ["--fit-resource", config.retrain_fit_resource]
    return [sys.executable, "-m", "aelstm.training.retrain", "--recorded", str(config.record_dir), "--registry",
            str(config.registry), "--min-rows", str(config.retrain_min_rows), "--quiet", "--summary", str(summary),
            "--below-scoring", *where, *(arg for fleet in fleets for arg in ("--fleet", fleet))]


class RetrainLoop:
    """Runs retraining on a schedule and on drift until cancelled; one run at a time. `drift()`: each served
    fleet's drift ratio, where known."""

    def __init__(self, config: ServeConfig, recorder: Recorder, metrics: Metrics,
                 drift: Callable[[], dict[str, float]] = dict) -> None:
        self.config, self.recorder, self.metrics, self.drift = config, recorder, metrics, drift
        self.runs = 0
        self._one_at_a_time = asyncio.Lock()
        self._drift_tried: dict[str, tuple[float, str]] = {}  # fleet -> when its drift last started a run, outcome

    async def run(self) -> None:
        jobs = []
        if self.config.retrain_every_s:
            jobs.append(self._repeat(self.config.retrain_every_s, self.retrain_once, "retraining"))
        if self.config.retrain_on_drift:
            jobs.append(self._repeat(self.config.poll_s, self.retrain_drifted, "drift-triggered retraining"))
        await asyncio.gather(*jobs)

    @staticmethod
    async def _repeat(every_s: float, job: Callable[[], Awaitable[list[dict]]], what: str) -> None:
        """`job` every `every_s` seconds until cancelled; a run that fails is logged and scoring goes on."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await job()
            except Exception:
                log.exception("%s failed; scoring goes on, next try in %.0f s", what, every_s)

    def drifted(self) -> list[str]:
        """Served fleets whose drift reached the trigger, and that may be retrained for it now."""
        return self._due(self.drift())

    def _due(self, ratios: dict[str, float]) -> list[str]:
        now = time.monotonic()

        def due(fleet: str) -> bool:
            when, outcome = self._drift_tried.get(fleet, (-math.inf, ""))
            wait = self.config.record_flush_s if outcome == "skipped" else self.config.retrain_drift_cooldown_s
            return now - when >= wait

        return sorted(fleet for fleet, ratio in ratios.items() if ratio >= self.config.retrain_on_drift and due(fleet))

    async def retrain_drifted(self) -> list[dict]:
        """Retrain the fleets whose drift calls for it (none: nothing runs); every such fleet's outcome."""
        ratios = self.drift()
        fleets = self._due(ratios)
        if not fleets:
            return []
        for fleet in fleets:
            self._drift_tried[fleet] = (time.monotonic(), "")
            self.metrics.drift_retrains.labels(fleet).inc()
            log.info("retraining: fleet %s drifted (%.1f× calibration's p99 exceedance)", fleet, ratios[fleet],
                     extra={"fields": {"fleet": fleet}})
        outcomes = await self.retrain_once(fleets)
        for outcome in outcomes:
            if outcome["fleet"] in self._drift_tried:
                self._drift_tried[outcome["fleet"]] = (self._drift_tried[outcome["fleet"]][0], outcome["status"])
        return outcomes

    async def retrain_once(self, fleets: Sequence[str] = ()) -> list[dict]:
        """Write the recordings, retrain `fleets` (or every served fleet), and return every fleet's outcome (as
        `aelstm retrain --summary`)."""
        async with self._one_at_a_time:
            return await self._retrain(fleets)

    async def _retrain(self, fleets: Sequence[str]) -> list[dict]:
        await self.recorder.flush()
        with tempfile.TemporaryDirectory(prefix="aelstm-retrain-") as folder:
            summary = Path(folder) / "summary.json"
            process = await asyncio.create_subprocess_exec(
                *retrain_command(self.config, summary, fleets), stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, preexec_fn=below_scoring)
            try:
                output, _ = await process.communicate()
            except asyncio.CancelledError:
                process.kill()
                await process.wait()
                raise
            outcomes = json.loads(summary.read_text()) if summary.is_file() else []
        self.runs += 1
        for outcome in outcomes:
            self.metrics.retrained.labels(outcome["status"]).inc()
            log.info("retraining: fleet %s %s%s: %s", outcome["fleet"], outcome["status"],
                     f" as version {outcome['version']}" if outcome.get("version") else "", outcome["reason"],
                     extra={"fields": {"fleet": outcome["fleet"], "outcome": outcome["status"]}})
        if process.returncode and not (process.returncode == 1 and outcomes):  # 1 with a summary: fleets failed
            tail = output.decode(errors="replace").strip().splitlines()[-3:]
            log.error("retraining run exited %s: %s", process.returncode, " | ".join(tail))
        return outcomes
