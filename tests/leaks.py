"""What a test session left running: a Ray still initialised in the pytest process, and processes it started that
never stopped (a server, a raylet). Checked once every result is in, so that a leak fails the run instead of
lingering into the next one."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

from benchmarks.harness import descendants, stat_fields

SETTLE_S = 30.0  # processes being stopped get this long to go before they count as left running


def _running(pid: int) -> str | None:
    """The command line of `pid` while it runs (None once it is gone or a zombie awaiting its parent)."""
    try:
        if stat_fields(pid)[0] == "Z":
            return None
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except (OSError, IndexError):
        return None


def _ends_with_its_parent(command: str) -> bool:
    """The stdlib's multiprocessing resource tracker, started by a library on first use: it ends when the pipe from
    the process that started it closes (at that process's exit), so it is not something a test left behind."""
    return "multiprocessing.resource_tracker" in command


def running_children() -> dict[int, str]:
    """Every live process below this one that should have stopped by now, with its command line."""
    found = {pid: _running(pid) for pid in descendants(os.getpid())}
    return {
        pid: command
        for pid, command in found.items()
        if command is not None and not _ends_with_its_parent(command)
    }


def left_running(settle_s: float = SETTLE_S) -> list[str]:
    """What the session left running, once what is still stopping had `settle_s` to go; each process found is then
    killed, so that it cannot hold the run's output open or outlive it."""
    leaks = []
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        leaks.append("a Ray started by the tests is still initialised in the pytest process")
    deadline = time.monotonic() + settle_s
    while (children := running_children()) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid, command in children.items():
        leaks.append(f"process {pid} still running: {command[:200]}")
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return leaks
