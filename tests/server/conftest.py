"""Serving fixtures: two small bundles trained once per session, registries, and helpers to build requests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
import pytest_asyncio

from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc
from support import EC2_LATENCY, MACHINE_TEMPERATURE


@dataclass(frozen=True)
class Trained:
    """A bundle directory and the labelled series it was trained on (its normal start)."""

    path: Path
    series: object


def _train(path: Path, csv: Path, name: str, max_rows: int) -> Trained:
    from aelstm.core.data import load_nab
    from aelstm.training.config import TrainConfig, training_rows
    from aelstm.training.train import train_series

    series = load_nab(csv)
    rows = min(training_rows(series, None, until_first_anomaly=True)[0], max_rows)
    config = TrainConfig(window=16, hidden=16, latent=4, epochs=4, patience=2)
    train_series(series, path, config, rows=rows, name=name, progress=False)
    return Trained(path, series)


@pytest.fixture(scope="session")
def ec2_bundle(tmp_path_factory) -> Trained:
    """EC2 request latency model (1 feature, window 16), trained in seconds on readings before the first label."""
    return _train(tmp_path_factory.mktemp("bundles") / "ec2", EC2_LATENCY, "ec2-latency", 1000)


@pytest.fixture(scope="session")
def machine_bundle(tmp_path_factory) -> Trained:
    """Machine temperature model (a second fleet, a second model)."""
    return _train(tmp_path_factory.mktemp("bundles") / "machine", MACHINE_TEMPERATURE, "machine-temp", 1000)


class Wire:
    """Builders of protocol messages and small gRPC client helpers."""

    @staticmethod
    def tensor(values: np.ndarray, packed: bool = True) -> pb.Tensor:
        values = np.asarray(values, dtype="<f4")
        if packed:
            return pb.Tensor(shape=list(values.shape), packed=values.tobytes())
        return pb.Tensor(shape=list(values.shape), values=pb.FloatList(values=values.ravel().tolist()))

    @classmethod
    def window(cls, device: str, values: np.ndarray, packed: bool = True, timestamp_ms: int = 0) -> pb.Item:
        return pb.Item(device_id=device, window=cls.tensor(values, packed), timestamp_ms=timestamp_ms)

    @classmethod
    def readings(cls, device: str, values: np.ndarray, timestamp_ms: int = 0) -> pb.Item:
        return pb.Item(device_id=device, readings=cls.tensor(values), timestamp_ms=timestamp_ms)

    @staticmethod
    async def stream(stub, requests: list[pb.ScoreRequest], pause_s: float = 0.0,
                     between=None) -> dict[str, list[pb.ScoreResponse]]:
        """Send `requests` on one StreamScore call; returns every response grouped by request id.

        `between(i)`, if given, is awaited before sending request i (to act mid-stream).
        """

        async def send():
            for i, request in enumerate(requests):
                if between is not None:
                    await between(i)
                if pause_s:
                    await asyncio.sleep(pause_s)
                yield request

        answers: dict[str, list[pb.ScoreResponse]] = {}
        async for response in stub.StreamScore(send()):
            answers.setdefault(response.request_id, []).append(response)
        return answers

    @classmethod
    async def verdicts(cls, address: str, fleet: str, device: str, values: np.ndarray, rows: range) -> dict[int, tuple]:
        """One StreamScore call to `address` sending `rows` of `values` one reading per item, a second apart;
        row → (status, alarm score, threshold, alarm)."""
        requests = [pb.ScoreRequest(request_id=str(row), fleet_id=fleet, items=[
            cls.readings(device, values[row : row + 1], timestamp_ms=1_000 * (row + 1))]) for row in rows]
        async with grpc.aio.insecure_channel(address) as channel:
            answers = await cls.stream(pb_grpc.AnomalyScorerStub(channel), requests)
        results = {int(key): responses[0].results[0] for key, responses in answers.items()}
        return {row: (r.status, r.alarm_score, r.threshold, r.is_anomaly) for row, r in results.items()}


@pytest_asyncio.fixture
async def stub(server):
    """A client of the module's `server` fixture."""
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.AnomalyScorerStub(channel)


@pytest.fixture(scope="session")
def wire() -> type[Wire]:
    return Wire
