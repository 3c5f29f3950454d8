"""Where work that must not slow scoring runs: below it. Retraining on a host that also scores (the ingress's own,
or a cluster node with replicas) puts itself in Linux's idle scheduling class, so it gets a CPU only when nothing
else wants one."""

from __future__ import annotations

import contextlib
import os

RETRAIN_NICENESS = 19  # where the OS has no idle scheduling class: as far below scoring as nice goes


def below_scoring() -> None:
    """Put the calling process below everything scoring does: in SCHED_IDLE it gets a CPU only when nothing else
    wants one (nice alone still lets it take about a tenth of a busy CPU, and its wake-ups delay the scoring ones)."""
    os.nice(RETRAIN_NICENESS - os.nice(0))
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        with contextlib.suppress(OSError):  # not allowed here (a container's seccomp policy): nice 19 it is
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def is_below_scoring() -> bool:
    """Whether this process runs below scoring: in the idle scheduling class, or at nice 19 where there is none."""
    if hasattr(os, "sched_getscheduler") and hasattr(os, "SCHED_IDLE") and os.sched_getscheduler(0) == os.SCHED_IDLE:
        return True
    return os.nice(0) >= RETRAIN_NICENESS
