"""The highest rate a server sustains within the SLO, found with `aelstm-client loadtest --rate A:B:STEP` sweeps.

A sweep only tells where the server broke if some rate in it broke: a sweep whose top rate still passes measured its
own limit, not the server's. So a sweep that never breaks is continued above its top, one whose very first rate
already fails is redone below it, and a figure that never met a failing rate within the allowed tries is kept but
marked as a lower bound.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from aelstm.client.sweep import sustained

SLO_MS = 50.0
MIN_RATE = 1.0  # msgs/s: below this a server is broken, not slow


@dataclass(frozen=True)
class Phase:
    """How long each rate of a sweep (or a fixed-rate run) runs, and how long unanswered messages are waited for."""

    warmup_s: float
    duration_s: float
    drain_s: float


@dataclass(frozen=True)
class Workload:
    """What the simulated gateways send: the loadtest defaults of the serving benchmarks, at a batch and RPC kind."""

    batch: int
    rpc: str = "stream"
    gateways: int = 4
    fleets: int = 2
    devices: int = 256
    processes: int = 1  # load generator processes (one drives a few thousand messages/s)

    def args(self, phase: Phase) -> list[str]:
        return ["-G", str(self.gateways), "-F", str(self.fleets), "-D", str(self.devices), "-b", str(self.batch),
                "--rpc", self.rpc, "--slo-ms", f"{SLO_MS:g}", "--warmup", f"{phase.warmup_s:g}s",
                "--duration", f"{phase.duration_s:g}s", "--drain", f"{phase.drain_s:g}s",
                "--processes", str(self.processes)]


def nice(x: float) -> float:
    """`x` rounded to 1, 1.5, 2, 2.5, ... 9.5 times a power of ten, and at least MIN_RATE (readable rate steps)."""
    if x <= MIN_RATE:
        return MIN_RATE
    magnitude = 10 ** math.floor(math.log10(x))
    return round(x / magnitude * 2) / 2 * magnitude


@dataclass(frozen=True)
class Grid:
    """Rates `first, first + step, ...` (msgs/s), `steps` of them."""

    first: float
    step: float
    steps: int

    @property
    def last(self) -> float:
        return self.first + self.step * (self.steps - 1)

    def spec(self) -> str:
        return f"{self.first:g}:{self.last:g}:{self.step:g}"

    @classmethod
    def from_zero(cls, top: float, steps: int) -> Grid:
        """Evenly from near zero up to about `top`: when little is known of the limit."""
        step = nice(top / steps)
        return cls(step, step, steps)

    @classmethod
    def around(cls, limit: float, steps: int) -> Grid:
        """From half of an expected `limit` up past it in tenths: a fine grid once the limit is roughly known."""
        step = nice(limit / 10)
        return cls(max(step, round(limit / 2 / step) * step), step, steps)

    def above(self) -> Grid:
        """The continuation of a sweep that never broke: on from its top, twice as coarse."""
        return Grid(self.last + self.step, nice(2 * self.step), self.steps)

    def below(self) -> Grid:
        """A redo of a sweep whose first rate already failed: from near zero up to that rate."""
        return Grid.from_zero(self.first, self.steps)


def step_row(run: dict, batch: int) -> dict:
    """One rate of a sweep, compactly."""
    m = run["measured"]
    return {"rate": run["schedule"]["rate"], "offered_items_per_s": run["schedule"]["rate"] * batch,
            "items_per_s": m["throughput"]["items_per_s"], "p50_ms": m["latency_ms"]["p50"],
            "p99_ms": m["latency_ms"]["p99"], "errors": sum(m["errors"].values()), "lost": m["lost"],
            "sustained": sustained(run, SLO_MS)}


def find_limit(sweep: Callable[[Grid], tuple[dict, str]], grid: Grid, batch: int, tries: int = 4) -> dict:
    """Sweep `grid` with `sweep(grid)` (one loadtest --json report and its command) until some rate breaks the SLO,
    moving the grid up or down as needed, at most `tries` sweeps. Returns the highest rate sustained before the
    first that broke, every step run, and whether the figure is only a lower bound (no rate broke)."""
    best, steps, commands = None, [], []
    broke = False
    for _ in range(tries):
        report, command = sweep(grid)
        commands.append(command)
        steps += [step_row(run, batch) for run in report["sweep"]]
        if report["max_sustained"]["best"] is not None:
            best = report["max_sustained"]
        broke = not steps[-1]["sustained"]
        if broke and (best is not None or grid.first <= MIN_RATE):
            break
        grid = grid.below() if broke else grid.above()
    return {"rate": best["rate"] if best else None, "items_per_s": best["items_per_s"] if best else None,
            "lower_bound": best is not None and not broke, "steps": steps, "commands": commands}
