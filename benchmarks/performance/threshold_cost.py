"""What a streaming threshold costs the ingress: `readings` items scored under static POT against the same model
under DSPOT, through the transport-free scoring seam, alternating in one run.

    python -m benchmarks.performance.threshold_cost        # writes benchmarks/results/performance/threshold_cost.*

Both fleets serve the same trained weights (one bundle, its threshold rewritten), in-process onnxruntime, so the
difference is the per-device judging: a place in the device's order, a SPOT step, the verdict.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aelstm.core.bundle import MANIFEST_FILE, load_bundle
from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb

from ..harness import FIXTURE, WINDOW, train, uptime

OUT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "performance"


def static_copy(bundle_dir: Path, to: Path) -> Path:
    """The same bundle with its threshold rewritten as static POT at the initial level."""
    shutil.copytree(bundle_dir, to)
    manifest = json.loads((to / MANIFEST_FILE).read_text())
    manifest["threshold"] = {"value": load_bundle(bundle_dir).threshold, "method": "pot", "params": {}}
    (to / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return to


def requests(fleet: str, values: np.ndarray, devices: int, items: int, rounds: int) -> list[pb.ScoreRequest]:
    """`rounds` requests of `items` readings items each, one reading per item, devices in turn."""
    out, row = [], 0
    for r in range(rounds):
        batch = []
        for i in range(items):
            device = (r * items + i) % devices
            batch.append(pb.Item(device_id=f"d{device}", readings=pb.Tensor(
                shape=[1, 1], packed=np.asarray([[values[row % len(values)]]], "<f4").tobytes())))
            row += 1
        out.append(pb.ScoreRequest(request_id=str(r), fleet_id=fleet, items=batch))
    return out


async def measure(registry: Path, values: np.ndarray, args: argparse.Namespace) -> dict:
    server = ScoringServer(ServeConfig(port=0, backend="inprocess", registry=str(registry), metrics_port=0,
                                       poll_s=60.0, batch_wait_ms=0.0))
    await server.start()
    try:
        seconds: dict[str, list[float]] = {"pot": [], "dspot": []}
        warm_up = -(-2 * WINDOW * args.devices // args.items)  # two windows per device
        for fleet in seconds:  # fill every device's window first
            for request in requests(fleet, values, args.devices, args.items, warm_up):
                await server.scorer.score_request(request)
        for _ in range(args.repeats):
            for fleet in seconds:
                batch = requests(fleet, values, args.devices, args.items, args.rounds)
                started = time.perf_counter()
                for request in batch:
                    await server.scorer.score_request(request)
                seconds[fleet].append(time.perf_counter() - started)
    finally:
        await server.stop(0)
    items = args.items * args.rounds
    per_item = {fleet: float(np.median(s)) / items * 1e6 for fleet, s in seconds.items()}
    return {"us_per_item_median": per_item, "dspot_extra_us_per_item": per_item["dspot"] - per_item["pot"],
            "items_per_repeat": items, "repeats": args.repeats, "devices": args.devices,
            "items_per_request": args.items}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--items", type=int, default=64, help="readings items per request")
    parser.add_argument("--rounds", type=int, default=200, help="requests per timed repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    load = uptime()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        bundle = train(scratch / "dspot")
        registry = scratch / "registry"
        publish(bundle, registry, "dspot")
        publish(static_copy(bundle, scratch / "pot"), registry, "pot")
        from aelstm.core.data import load_nab

        values = load_nab(FIXTURE).values[:, 0]
        result = asyncio.run(measure(registry, values, args))
    result |= {"command": " ".join(["python -m benchmarks.performance.threshold_cost", *(argv or sys.argv[1:])]),
               "uptime": load}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "threshold_cost.json").write_text(json.dumps(result, indent=2) + "\n")
    cost = result["us_per_item_median"]
    (OUT / "threshold_cost.md").write_text(
        "# What a streaming threshold costs the ingress\n\n"
        f"Reproduce: `{result['command']}` (`uptime` at start: `{load}`).\n\n"
        f"`readings` items, one reading each, {args.items} per request, {args.devices} devices, in-process "
        f"onnxruntime, through `RequestScorer.score_request`; median of {args.repeats} repeats of "
        f"{result['items_per_repeat']} items per threshold, the two alternating in one run.\n\n"
        "| threshold | µs per item (median) |\n|---|---|\n"
        f"| static POT | {cost['pot']:.1f} |\n| DSPOT (depth 512) | {cost['dspot']:.1f} |\n\n"
        f"DSPOT adds {result['dspot_extra_us_per_item']:.1f} µs per item.\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
