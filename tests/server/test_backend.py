"""In-process backend: loads, scores, and keeps the models of the last swap for calls queued just before it."""

from __future__ import annotations

import numpy as np
import pytest

from aelstm.server.backend import InProcessBackend
from aelstm.server.registry import publish


async def test_a_swapped_out_model_serves_until_the_next_swap(tmp_path, ec2_bundle):
    old, new, newest = (publish(ec2_bundle.path, tmp_path, "f") for _ in range(3))
    backend = InProcessBackend()
    await backend.start()
    try:
        assert await backend.prepare(old) == "CPUExecutionProvider"
        windows = np.zeros((3, 16, 1), np.float32)
        assert len((await backend.score(old.key, windows)).score) == 3
        await backend.prepare(new)
        await backend.retain({new.key})
        assert len((await backend.score(old.key, windows)).score) == 3  # retired, still there
        await backend.prepare(newest)
        await backend.retain({newest.key})
        with pytest.raises(LookupError, match="not loaded"):
            await backend.score(old.key, windows)
    finally:
        await backend.close()
