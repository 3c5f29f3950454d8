"""Live progress of a load run on the terminal (rich), refreshed from LoadRun snapshots."""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.table import Table

from .loadtest import Snapshot


def _table(snapshot: Snapshot, title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("elapsed", "phase", "msgs/s", "items/s", "p50 ms", "p99 ms", "sent", "answered", "in flight",
                   "errors"):
        table.add_column(column, justify="right")
    table.add_row(f"{snapshot.elapsed_s:.1f}s", snapshot.phase, f"{snapshot.msgs_per_s:.0f}",
                  f"{snapshot.items_per_s:.0f}", f"{snapshot.p50_ms:.2f}", f"{snapshot.p99_ms:.2f}",
                  str(snapshot.sent), str(snapshot.answered), str(snapshot.in_flight),
                  f"[red]{snapshot.errors}[/red]" if snapshot.errors else "0")
    return table


class LiveProgress:
    """Context manager whose `update` is the LoadRun progress callback; prints nothing when disabled."""

    def __init__(self, console: Console, title: str, enabled: bool = True):
        self.title = title
        self._live = Live(console=console, refresh_per_second=4, transient=True) if enabled else None

    def __enter__(self) -> LiveProgress:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(self, snapshot: Snapshot) -> None:
        if self._live is not None:
            self._live.update(_table(snapshot, self.title))
