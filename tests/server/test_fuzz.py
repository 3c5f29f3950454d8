"""Property-based: whatever requests a client sends on one stream, each gets exactly one response, every item a
result, no response exceeds the send limit, and the stream and health survive (in-process backend)."""

from __future__ import annotations

import asyncio
import queue
import struct
import threading
from collections import Counter

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

SEND_LIMIT = 1024 * 1024
MAX_ID = 256

floats = st.one_of(st.floats(width=32, allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 1e19, -1e19, 3.4e38, 1e12, 1e-30, float("nan")]))
ids = st.one_of(st.text(max_size=40), st.text(min_size=250, max_size=600), st.just(""),
                st.integers(0, 3).map(lambda n: "é" * (MAX_ID // 2 - 1 + n)))


@st.composite
def tensors(draw):
    shape = draw(st.one_of(st.tuples(st.integers(1, 20), st.integers(1, 2)).map(list),
                           st.lists(st.integers(0, 2**32 - 1), max_size=5)))
    size = int(np.prod(shape, dtype=np.float64)) if shape else 0
    count = size if 0 < size <= 64 and draw(st.booleans()) else draw(st.integers(0, 40))
    values = draw(st.lists(floats, min_size=count, max_size=count))
    if draw(st.booleans()):
        packed = struct.pack(f"<{len(values)}f", *values) + draw(st.sampled_from([b"", b"\0"]))
        return pb.Tensor(shape=shape, packed=packed)
    return pb.Tensor(shape=shape, values=pb.FloatList(values=values))


@st.composite
def items(draw):
    device = draw(st.one_of(st.sampled_from(["d1", "d2", "d3"]), ids))
    timestamp = draw(st.one_of(st.just(0), st.integers(-(2**63), 2**63 - 1), st.integers(0, 100)))
    kind = draw(st.sampled_from(["window", "readings", "none"]))
    if kind == "none":
        return pb.Item(device_id=device, timestamp_ms=timestamp)
    return pb.Item(device_id=device, timestamp_ms=timestamp, **{kind: draw(tensors())})


@st.composite
def requests(draw):
    return pb.ScoreRequest(request_id=draw(ids), fleet_id=draw(st.one_of(st.sampled_from(["ec2", "", "nobody"]),
                                                                          ids)),
                           items=draw(st.lists(items(), max_size=12)))


class ServerThread:
    """A ScoringServer on an event loop of its own thread, so that the test can drive a blocking client."""

    def __init__(self, config: ServeConfig) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self.call(self._make(config))

    async def _make(self, config):
        server = ScoringServer(config)
        await server.start()
        return server

    def call(self, coroutine, timeout: float = 120):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.call(self.server.stop(0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
        self.loop.close()


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory, ec2_bundle):
    registry = tmp_path_factory.mktemp("fuzz-registry")
    publish(ec2_bundle.path, registry, "ec2")
    running = ServerThread(ServeConfig(port=0, backend="inprocess", registry=str(registry), metrics_port=0,
                                       poll_s=60.0, batch_wait_ms=1.0, drain_grace_s=5.0, max_message_mb=1,
                                       max_items=8, max_id_bytes=MAX_ID))
    yield running.server
    running.stop()


@pytest.fixture(scope="module")
def stream(fuzz_server):
    """One StreamScore call for every example: (send queue, response iterator, channel)."""
    channel = grpc.insecure_channel(fuzz_server.address)
    outgoing: queue.Queue = queue.Queue()
    responses = pb_grpc.AnomalyScorerStub(channel).StreamScore(iter(outgoing.get, None))
    yield outgoing, responses, channel
    outgoing.put(None)
    channel.close()


def echoed(text: str) -> str:
    return text if len(text.encode()) <= MAX_ID else ""


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(batch=st.lists(requests(), min_size=1, max_size=4))
def test_any_requests_get_one_bounded_response_each_and_the_stream_survives(stream, batch):
    outgoing, responses, _ = stream
    for request in batch:
        outgoing.put(request)
    got = [next(responses) for _ in batch]
    assert all(r.ByteSize() <= SEND_LIMIT for r in got)
    assert Counter(r.request_id for r in got) == Counter(echoed(r.request_id) for r in batch)
    expected = Counter((echoed(r.request_id), len(r.items)) for r in batch)
    assert Counter((r.request_id, len(r.results)) for r in got) == expected
    for response in got:
        for result in response.results:
            assert result.status != pb.ITEM_STATUS_UNSPECIFIED
            assert len(result.device_id.encode()) <= MAX_ID and len(result.error.message) <= 1000
            if result.status == pb.ITEM_STATUS_OK:
                assert np.isfinite([result.score, result.rec_part, result.pred_part]).all()


def test_the_stream_and_health_are_intact_after_fuzzing(stream, ec2_bundle):
    outgoing, responses, channel = stream
    window = ec2_bundle.series.values[:16].astype("<f4").reshape(16, 1)
    outgoing.put(pb.ScoreRequest(request_id="final", fleet_id="ec2", items=[
        pb.Item(device_id="final", window=pb.Tensor(shape=[16, 1], packed=window.tobytes()))]))
    final = next(responses)
    assert final.request_id == "final" and final.results[0].status == pb.ITEM_STATUS_OK
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
