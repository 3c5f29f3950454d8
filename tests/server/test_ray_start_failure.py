"""A Ray that cannot start is a one-line error, not a traceback."""

import pytest
import ray

from aelstm.server.ray_backend import RayServeBackend, RaySettings
from aelstm.training.errors import AelstmError


async def test_a_ray_that_cannot_start_is_a_clear_error(monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("Timed out waiting for file gcs_server_port\nmore detail")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(AelstmError, match=r"^could not start an embedded local Ray: Timed out waiting for file"):
        await RayServeBackend(RaySettings()).start()
