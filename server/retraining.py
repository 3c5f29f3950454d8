"""The server's retraining loop: every `retrain_every_s`, write out what was recorded, then run `aelstm retrain` as
a separate low-priority process. Training never runs on the ingress's event loop or in its process (torch stays
out of it), and a retraining run that fails is logged and counted while scoring goes on. New versions reach every
ingress through the registry like any publish; devices keep their windows and start from the new version's
calibration.

An ingress attached to a Ray cluster has the fits run there (`--ray-address`); an embedded or in-process ingress
fits them one after another on its own host, in the idle scheduling class (`below_scoring`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import logging
import os
import sys
import tempfile
from pathlib import Path

from aelstm.core.errors import AelstmError

from .config import ServeConfig
from .metrics import Metrics
from .recorder import Recorder

log = logging.getLogger(__name__)

RETRAIN_NICENESS = 19  # where the OS has no idle scheduling class: as far below scoring as nice goes


def below_scoring() -> None:
    """Put the calling (retraining) process below everything scoring does: in Linux's SCHED_IDLE class it gets a
    CPU only when nothing else wants one, so training on the ingress's own host does not take time from scoring
    (nice alone still lets it take about a tenth of a busy CPU, and its wake-ups delay the scoring ones)."""
    os.nice(RETRAIN_NICENESS)
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):  # not allowed here (a container's seccomp policy): nice 19 it is
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def check_retraining_available() -> None:
    """Retraining needs torch; say so when the server starts, not hours later."""
    if importlib.util.find_spec("torch") is None:
        raise AelstmError("retrain-every-s needs the training dependencies (torch) next to the server: "
                          "pip install 'aelstm[train]', or retrain elsewhere with `aelstm retrain`")


def retrain_command(config: ServeConfig, summary: Path) -> list[str]:
    """The `aelstm retrain` run for this ingress's registry and recordings."""
    where = ["--ray-address", config.ray_address] if config.ray_address else ["--no-ray"]
    return [sys.executable, "-m", "aelstm.training.retrain", "--recorded", str(config.record_dir), "--registry",
            str(config.registry), "--min-rows", str(config.retrain_min_rows), "--quiet", "--summary", str(summary),
            *where]


class RetrainLoop:
    """Runs retraining on a schedule until cancelled; one run at a time."""

    def __init__(self, config: ServeConfig, recorder: Recorder, metrics: Metrics) -> None:
        self.config, self.recorder, self.metrics = config, recorder, metrics
        self.runs = 0

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.config.retrain_every_s)
            try:
                await self.retrain_once()
            except Exception:
                log.exception("retraining failed; scoring goes on, next try in %.0f s", self.config.retrain_every_s)

    async def retrain_once(self) -> list[dict]:
        """Write the recordings, retrain, and return every fleet's outcome (as `aelstm retrain --summary`)."""
        await self.recorder.flush()
        with tempfile.TemporaryDirectory(prefix="aelstm-retrain-") as folder:
            summary = Path(folder) / "summary.json"
            process = await asyncio.create_subprocess_exec(
                *retrain_command(self.config, summary), stdout=asyncio.subprocess.PIPE,
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
