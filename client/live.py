"""Progress of a load run, refreshed from LoadRun snapshots: live on a terminal, a plain line every few seconds in a
log."""

from __future__ import annotations

from rich.console import Console
from rich.text import Text

from aelstm.core.progress import StatusLine

from .loadtest import Snapshot


def progress_line(snapshot: Snapshot, title: str) -> Text:
    """One line: phase, current rate, latency percentiles of the last interval, counts and errors."""
    errors = f"[bold red]errors {snapshot.errors}[/]" if snapshot.errors else "errors 0"
    if snapshot.item_errors:
        errors += f" [bold red]item errors {snapshot.item_errors}[/]"
    if snapshot.refused:
        errors += f" [yellow]refused {snapshot.refused}[/]"
    return Text.from_markup(
        f"[bold]{title}[/] {snapshot.elapsed_s:5.1f}s {snapshot.phase} │ {snapshot.msgs_per_s:7.0f} msgs/s "
        f"{snapshot.items_per_s:8.0f} items/s │ p50 {snapshot.p50_ms:7.2f} ms p99 {snapshot.p99_ms:7.2f} ms │ "
        f"sent {snapshot.sent} answered {snapshot.answered} in flight {snapshot.in_flight} │ {errors}"
    )


class LiveProgress:
    """Context manager whose `update` is the LoadRun progress callback; prints nothing when disabled."""

    def __init__(self, console: Console, title: str, enabled: bool = True):
        self.title = title
        self._status = StatusLine(console, enabled)

    def __enter__(self) -> LiveProgress:
        self._status.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._status.__exit__(*exc)

    def update(self, snapshot: Snapshot) -> None:
        line = progress_line(snapshot, self.title)
        self._status.update(line, line.plain)
