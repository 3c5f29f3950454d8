"""Shared fixtures: the optional shared datasets and a tiny trained bundle."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import pytest

from leaks import left_running
from support import EC2_LATENCY, SHARED_DATASETS

_exit_status: list[int] = []
_ray_started_here: list[bool] = []


def pytest_configure(config) -> None:
    """Note each Ray this process starts or joins (`ray.init`): only then is the interpreter's exit skipped."""
    import ray

    start = ray.init

    @functools.wraps(start)
    def noted(*args, **kwargs):
        _ray_started_here.append(True)
        return start(*args, **kwargs)

    ray.init = noted


def pytest_sessionfinish(session, exitstatus) -> None:
    """A session that left Ray or a process running fails, whatever its tests said."""
    leaks = left_running()
    if leaks:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        reporter.ensure_newline()
        reporter.write_sep("=", "left running by the tests (stopped now)", red=True)
        for leak in leaks:
            reporter.write_line(leak)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    _exit_status.append(int(session.exitstatus))


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config) -> None:
    """Where Ray ran in this process, exit with pytest's own status without finalising the interpreter. After every
    result was reported, one of the native extensions the suite loads into one process (Ray's core worker, gRPC,
    onnxruntime, torch) once crashed while Python tore its modules down: a segmentation fault after "338 passed",
    in one of nine full runs, each of which had started Ray in process. Nothing is left to report by then, and the
    leak check above has run, so the teardown is skipped rather than allowed to turn a result red."""
    if _exit_status and _ray_started_here:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_exit_status[-1])


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """../shared/datasets, or skip when this checkout has none (a user's fresh clone)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip("../shared/datasets is not present")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A small joint AE-LSTM trained in seconds on the normal start of the EC2 latency fixture."""
    from aelstm.core.data import load_nab
    from aelstm.training.config import TrainConfig, training_rows
    from aelstm.training.train import train_series

    series = load_nab(EC2_LATENCY)
    config = TrainConfig(window=16, hidden=16, latent=4, epochs=4, patience=2)
    fitted, bundle = train_series(
        series,
        tmp_path_factory.mktemp("bundle") / "ec2",
        config,
        rows=training_rows(series, None, until_first_anomaly=True)[0],
        name="ec2-latency",
        progress=False,
    )
    return fitted, bundle, series
