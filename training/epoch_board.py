"""The epoch each running fit has reached, for the progress display.

On Ray it is an actor, so it lives in a module of its own that imports nothing heavy: the actor's worker then
starts without importing torch (seconds of CPU on a small machine, taken from the fits).
"""

from __future__ import annotations


class EpochBoard:
    """The epoch each running fit has reached (a Ray actor when fits run on Ray)."""

    def __init__(self) -> None:
        self.epochs: dict[str, int] = {}

    def report(self, fleet: str, epoch: int) -> None:
        self.epochs[fleet] = epoch

    def finish(self, fleet: str) -> None:
        self.epochs.pop(fleet, None)

    def snapshot(self) -> dict[str, int]:
        return dict(self.epochs)
