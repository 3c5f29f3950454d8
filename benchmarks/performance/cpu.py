"""Where the machine's CPU time goes during a run, per process role, read from /proc (Linux).

A Ray Serve path spends CPU in several processes (our ingress or Serve's proxy, the replica, Ray's own daemons) and
the load generator shares the same cores, so "the server is slow" needs splitting: these samples say which process
used how much of the machine while the load ran.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import descendants, stat_fields

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CPUS = os.cpu_count() or 1


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process so far (fields 14 and 15), None once it is gone."""
    try:
        fields = stat_fields(pid)
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    except (OSError, IndexError, ValueError):
        return None


def machine_jiffies() -> tuple[int, int]:
    """(busy, total) CPU time of the whole machine so far, from the first line of /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def roles(main_pid: int, main_role: str) -> dict[str, list[int]]:
    """The processes of one server by role: the process we started, Ray Serve replicas, Serve's proxy, and the rest
    of what it spawned (Ray's GCS, raylet, controller, agents). Ray names its workers `ray::<Actor>` in cmdline."""
    found: dict[str, list[int]] = {main_role: [main_pid], "replica": [], "proxy": [], "ray_other": []}
    for pid in descendants(main_pid):
        name = command_line(pid)
        role = ("replica" if name.startswith("ray::ServeReplica") else
                "proxy" if name.startswith("ray::ProxyActor") else "ray_other")
        found[role].append(pid)
    return {role: pids for role, pids in found.items() if pids}


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    cpu_s: dict[str, float]  # role -> CPU seconds so far (a process that ended keeps its last value)
    busy: int
    total: int


class CpuWatch:
    """Samples the CPU time of each role's processes every `every_s` seconds in a thread, while in the `with` block."""

    def __init__(self, groups: dict[str, list[int]], every_s: float = 0.25) -> None:
        self.groups = groups
        self.every_s = every_s
        self.samples: list[Sample] = []
        self._last: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> Sample:
        for pid in {p for pids in self.groups.values() for p in pids}:
            value = cpu_seconds(pid)
            if value is not None:
                self._last[pid] = value
        busy, total = machine_jiffies()
        return Sample(time.monotonic(), {role: sum(self._last.get(p, 0.0) for p in pids)
                                         for role, pids in self.groups.items()}, busy, total)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.samples.append(self.sample())

    def __enter__(self) -> CpuWatch:
        self.samples.append(self.sample())
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.samples.append(self.sample())

    def shares(self, start: float, end: float) -> dict:
        """Per role, the fraction of the whole machine's CPU time (all cores) it used between `start` and `end`
        (monotonic), from the samples nearest inside that window; `machine_busy` is everything on the machine."""
        inside = [s for s in self.samples if start <= s.at <= end]
        if len(inside) < 2:
            raise ValueError("fewer than two CPU samples inside the window")
        first, last = inside[0], inside[-1]
        wall = last.at - first.at
        shares = {role: round((last.cpu_s[role] - first.cpu_s[role]) / (wall * CPUS), 4) for role in self.groups}
        shares["machine_busy"] = round((last.busy - first.busy) / max(1, last.total - first.total), 4)
        return {"shares_of_machine": shares, "window_s": round(wall, 2), "cpus": CPUS}


def cool_down(pids: list[int], below_cores: float = 0.35, timeout_s: float = 15.0) -> float:
    """Wait until these processes together use less than `below_cores` cores (a server still working off the backlog
    of an overloaded step would slow the next sweep down); returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        before = sum(cpu_seconds(p) or 0.0 for p in pids)
        time.sleep(0.5)
        if (sum(cpu_seconds(p) or 0.0 for p in pids) - before) / 0.5 < below_cores:
            break
    return time.monotonic() - started
