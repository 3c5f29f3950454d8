"""Live progress of a load run on the terminal (rich), refreshed from LoadRun snapshots."""

from __future__ import annotations

from rich.console import Console
from rich.live import Live
from rich.text import Text

from .loadtest import Snapshot


def progress_line(snapshot: Snapshot, title: str) -> Text:
    """One line: phase, current rate, latency percentiles of the last interval, counts and errors."""
    errors = f"[bold red]errors {snapshot.errors}[/]" if snapshot.errors else "errors 0"
    if snapshot.item_errors:
        errors += f" [bold red]item errors {snapshot.item_errors}[/]"
    return Text.from_markup(
        f"[bold]{title}[/] {snapshot.elapsed_s:5.1f}s {snapshot.phase} │ {snapshot.msgs_per_s:7.0f} msgs/s "
        f"{snapshot.items_per_s:8.0f} items/s │ p50 {snapshot.p50_ms:7.2f} ms p99 {snapshot.p99_ms:7.2f} ms │ "
        f"sent {snapshot.sent} answered {snapshot.answered} in flight {snapshot.in_flight} │ {errors}"
    )


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
            self._live.update(progress_line(snapshot, self.title))
