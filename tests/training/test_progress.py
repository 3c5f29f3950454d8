"""Progress displays: live on a terminal, plain periodic lines (no carriage returns) in a log file or pipe."""

from __future__ import annotations

import io

from rich.console import Console

from aelstm.core.progress import ProgressBar, StatusLine


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_a_bar_prints_plain_lines_at_most_every_few_seconds():
    out, clock = io.StringIO(), Clock()
    with ProgressBar("train", 10, "epochs", console=Console(file=out), every_s=5, clock=clock) as bar:
        for _ in range(10):
            clock.now += 1.5
            bar.advance(note="val 0.1")
    lines = out.getvalue().splitlines()
    assert lines == ["train: 4/10 epochs (40%) 0:06 · val 0.1", "train: 8/10 epochs (80%) 0:12 · val 0.1"]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_a_kept_bar_prints_its_last_line_at_the_end_off_a_terminal():
    out, clock = io.StringIO(), Clock()
    with ProgressBar("evaluate", 3, "fits", console=Console(file=out), transient=False, clock=clock) as bar:
        bar.advance(3)
    assert out.getvalue() == "evaluate: 3/3 fits (100%) 0:00\n"


def test_on_a_terminal_the_line_is_redrawn_in_place():
    out = io.StringIO()
    with StatusLine(Console(file=out, force_terminal=True, width=80)) as status:
        status.update("live line", "plain line")
    assert "live line" in out.getvalue() and "plain line" not in out.getvalue()


def test_disabled_prints_nothing():
    out = io.StringIO()
    with ProgressBar("quiet", 2, "files", console=Console(file=out), enabled=False, every_s=0) as bar:
        bar.advance(2)
    assert out.getvalue() == ""
