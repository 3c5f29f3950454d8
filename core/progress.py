"""Progress of long jobs, for both CLIs: redrawn in place on a terminal, plain lines every few seconds elsewhere.

A live display written to a log file or a pipe becomes one long line of carriage returns; when the console is not a
terminal, the same figures are printed as ordinary lines instead, at most one every `every_s` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

PLAIN_EVERY_S = 5.0
_BAR_WIDTH = 30


class StatusLine:
    """One status line while a job runs (a context manager); `update` it as often as the job likes."""

    def __init__(self, console: Console | None = None, enabled: bool = True, transient: bool = True,
                 every_s: float | None = None, clock: Callable[[], float] = time.monotonic):
        """`transient`: on a terminal the line disappears at the end; elsewhere the last line is printed then.
        `every_s` defaults to PLAIN_EVERY_S."""
        self.console = console if console is not None else Console(stderr=True)
        live = enabled and self.console.is_terminal
        self._live = Live(console=self.console, refresh_per_second=4, transient=transient) if live else None
        self._plain = enabled and not live
        self._transient, self._clock = transient, clock
        self._every_s = PLAIN_EVERY_S if every_s is None else every_s
        self._next_line = clock() + self._every_s
        self._last: str | None = None

    def __enter__(self) -> StatusLine:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)
        elif self._plain and not self._transient and self._last is not None:
            self._print(self._last)

    def update(self, live: RenderableType, plain: str) -> None:
        """Show `live` on a terminal; elsewhere print `plain` if `every_s` has passed since the last line."""
        if self._live is not None:
            self._live.update(live)
        elif self._plain:
            self._last = plain
            if self._clock() >= self._next_line:
                self._print(plain)

    def _print(self, line: str) -> None:
        self.console.print(line, markup=False, highlight=False, soft_wrap=True)
        self._next_line = self._clock() + self._every_s


class ProgressBar:
    """A counted job (epochs, fits, files, windows): description, bar, done/total, elapsed time and a note."""

    def __init__(self, description: str, total: int, unit: str, *, console: Console | None = None,
                 enabled: bool = True, transient: bool = True, every_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.description, self.total, self.unit = description, total, unit
        self.done, self.note = 0, ""
        self._clock = clock
        self._started = clock()
        self._status = StatusLine(console, enabled, transient, every_s, clock)

    def __enter__(self) -> ProgressBar:
        self._status.__enter__()
        self._show()
        return self

    def __exit__(self, *exc) -> None:
        self._status.__exit__(*exc)

    def advance(self, n: int = 1, note: str | None = None) -> None:
        self.done += n
        if note is not None:
            self.note = note
        self._show()

    def log(self, line: str) -> None:
        """A line of its own, kept above the bar (one finished part's result)."""
        self._status.console.print(line, markup=False, highlight=False, soft_wrap=True)

    def set_note(self, note: str) -> None:
        self.note = note
        self._show()

    def _show(self) -> None:
        fraction = min(1.0, self.done / self.total) if self.total else 0.0
        elapsed = int(self._clock() - self._started)
        figures = f"{self.done}/{self.total} {self.unit} ({fraction:.0%}) {elapsed // 60}:{elapsed % 60:02d}"
        note = f" · {self.note}" if self.note else ""
        filled = round(fraction * _BAR_WIDTH)
        live = Text.assemble((self.description, "bold"), " ", ("━" * filled, "magenta"),
                             ("━" * (_BAR_WIDTH - filled), "grey23"), f" {figures}{note}")
        self._status.update(live, f"{self.description}: {figures}{note}")
