"""What the per-reading cost benchmarks share: `readings` requests through the transport-free scoring seam
(`RequestScorer.score_request`), every side's device windows filled first, then timed repeats that alternate
between the sides in one run, so the machine's noise falls on all of them alike."""

from __future__ import annotations

import argparse
import time

import numpy as np

from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.scoring import RequestScorer
from aelstm.v1 import scoring_pb2 as pb

from ..harness import WINDOW

Side = tuple[RequestScorer, str]  # a scorer and the fleet its requests name


def seam_server(registry: str, **settings) -> ScoringServer:
    """An in-process server on `registry` that never refuses (the benchmark measures cost, not overload) and does
    not poll the registry during a run."""
    return ScoringServer(ServeConfig(port=0, backend="inprocess", registry=registry, metrics_port=0, poll_s=60.0,
                                     batch_wait_ms=0.0, scoring_budget_ms=60_000.0, **settings))


def seam_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--items", type=int, default=64, help="readings items per request")
    parser.add_argument("--rounds", type=int, default=200, help="requests per timed repeat")
    parser.add_argument("--repeats", type=int, default=7)


def requests(fleet: str, values: np.ndarray, devices: int, items: int, rounds: int, first: int) -> list:
    """`rounds` requests of `items` readings items each, one reading per item, devices in turn, timestamped."""
    out, row = [], first
    for r in range(rounds):
        batch = []
        for i in range(items):
            device = (r * items + i) % devices
            batch.append(pb.Item(device_id=f"d{device}", timestamp_ms=row // devices + 1, readings=pb.Tensor(
                shape=[1, 1], packed=np.asarray([[values[row % len(values)]]], "<f4").tobytes())))
            row += 1
        out.append(pb.ScoreRequest(request_id=str(r), fleet_id=fleet, items=batch))
    return out


async def warm_up(side: Side, values: np.ndarray, args: argparse.Namespace) -> int:
    """Fill every device's window (two windows of readings per device); returns the readings sent."""
    scorer, fleet = side
    rounds = -(-2 * WINDOW * args.devices // args.items)
    for request in requests(fleet, values, args.devices, args.items, rounds, 0):
        await scorer.score_request(request)
    return rounds * args.items


async def alternate(sides: dict[str, Side], sent: dict[str, int], values: np.ndarray,
                    args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds of each timed repeat per side, the sides taking turns; each side's readings go on from `sent`."""
    seconds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.repeats):
        for name, (scorer, fleet) in sides.items():
            batch = requests(fleet, values, args.devices, args.items, args.rounds, sent[name])
            sent[name] += args.items * args.rounds
            started = time.perf_counter()
            for request in batch:
                await scorer.score_request(request)
            seconds[name].append(time.perf_counter() - started)
    return seconds
