"""Packages are found, not listed: each top folder is one `aelstm.<name>` package together with every subpackage
beneath it, so a new subpackage can never be left out of the wheel (everything else is in pyproject.toml)."""

from setuptools import find_packages, setup

FOLDERS = {"aelstm.cli": "cli", "aelstm.core": "core", "aelstm.training": "training", "aelstm.server": "server",
           "aelstm.client": "client", "aelstm.v1": "protos/aelstm/v1"}

setup(
    package_dir=FOLDERS,
    packages=[f"{name}.{sub}" if sub else name for name, folder in FOLDERS.items()
              for sub in ["", *find_packages(folder)]],
)
