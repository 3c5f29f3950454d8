"""The README's first-run instructions work on a fresh clone: nothing installs from an index the package is not on,
the commands it shows are reachable (.venv activated), and the demo's port setting is documented."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    return README.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_pip_install_of_aelstm_is_from_the_clone():
    installs = [arg for arg in re.findall(r"pip install (?:-e )?([^\s`]+)", README) if arg != "torch"]
    assert installs and all(re.fullmatch(r'"?\.(\[[a-z,]+\])?"?', arg) for arg in installs), installs


def test_quick_start_activates_the_venv_and_documents_the_demo_port():
    quick_start = section("Quick start")
    assert "source .venv/bin/activate" in quick_start
    assert "AELSTM_DEMO_PORT" in quick_start
    assert "AELSTM_DEMO_PORT" in (ROOT / "scripts" / "demo.sh").read_text().split("set -euo", 1)[0]
