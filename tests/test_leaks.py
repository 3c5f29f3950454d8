"""The session's leak check names what a test left running, and leaves what ends with the pytest process anyway."""

from __future__ import annotations

import subprocess
import sys
from multiprocessing import resource_tracker

from leaks import running_children


def test_a_child_left_running_is_named_and_the_stdlib_resource_tracker_is_not() -> None:
    resource_tracker.ensure_running()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        children = running_children()
        assert sleeper.pid in children
        assert not any("resource_tracker" in command for command in children.values())
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sleeper.pid not in running_children()
