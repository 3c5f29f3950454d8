"""A Ray that cannot start is a one-line error, not a traceback."""

import pytest
import ray

from aelstm.core.errors import AelstmError
from aelstm.server.config import ScorerSettings
from aelstm.server.ray_backend import RayServeBackend


async def test_a_ray_that_cannot_start_is_retried_once_then_a_clear_error(monkeypatch, tmp_path):
    calls = []

    def refuse(*args, **kwargs):
        calls.append(kwargs)
        raise Exception("The current node timed out during startup.\nmore detail")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    with pytest.raises(AelstmError, match=r"^could not start an embedded local Ray: The current node timed out"):
        await RayServeBackend(ScorerSettings(), temp_root=str(tmp_path)).start()
    assert len(calls) == 2
    assert [call["_temp_dir"].startswith(str(tmp_path)) for call in calls] == [True, True]
    assert list(tmp_path.iterdir()) == []  # Ray never wrote there: nothing kept to read
