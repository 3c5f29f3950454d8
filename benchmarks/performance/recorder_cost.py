"""What recording normal readings for retraining costs the ingress: `readings` items of one model through the
transport-free scoring seam, with and without `--record-dir`, alternating in one run.

    python -m benchmarks.performance.recorder_cost      # writes benchmarks/results/performance/recorder_cost.*

The recording side records every device (`record_devices` 1.0, the worst case; the default records a tenth) and
writes its Parquet files every second, so the writes run during the timed requests as they do in a server.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

import numpy as np

from aelstm.server.app import ScoringServer
from aelstm.server.registry import publish

from ..harness import FIXTURE, train, uptime, write_report
from .policy_cost import OUT
from .seam import alternate, seam_arguments, seam_server, warm_up

FLEET = "machines"


def server(registry: Path, record_dir: Path | None) -> ScoringServer:
    recording = {"record_dir": str(record_dir), "record_devices": 1.0, "record_flush_s": 1.0} if record_dir else {}
    return seam_server(str(registry), **recording)


async def measure(registry: Path, record_dir: Path, values: np.ndarray, args: argparse.Namespace) -> dict:
    sides = {"without": server(registry, None), "recording": server(registry, record_dir)}
    for side in sides.values():
        await side.start()
    try:
        scorers = {name: (side.scorer, FLEET) for name, side in sides.items()}
        sent = {name: await warm_up(scorer, values, args) for name, scorer in scorers.items()}
        seconds = await alternate(scorers, sent, values, args)
        await sides["recording"].recorder.flush()
    finally:
        for side in sides.values():
            await side.stop(0)
    items = args.items * args.rounds
    per_item = {name: float(np.median(s)) / items * 1e6 for name, s in seconds.items()}
    files = sorted((record_dir / FLEET).glob("*.parquet"))
    import pyarrow.parquet as pq

    rows = sum(pq.read_metadata(path).num_rows for path in files)
    return {"us_per_item_median": per_item, "recording_extra_us_per_reading": per_item["recording"]
            - per_item["without"], "seconds_per_repeat": seconds, "recorded_rows": rows, "files": len(files),
            "items_per_repeat": items, "repeats": args.repeats, "devices": args.devices,
            "items_per_request": args.items}


def markdown(result: dict) -> str:
    lines = ["# What recording normal readings costs the ingress", "",
             f"Reproduce: `{result['command']}` (`uptime` at start: `{result['uptime']}`).", "",
             f"`readings` items, one reading each, {result['items_per_request']} per request, {result['devices']} "
             "devices, in-process onnxruntime, through `RequestScorer.score_request`; every device recorded, "
             f"Parquet written every second; median of {result['repeats']} repeats of {result['items_per_repeat']} "
             f"items per side, the sides alternating in one run. {result['recorded_rows']:,} readings were recorded "
             f"in {result['files']} files.", "",
             "| side | µs per reading (median) |", "|---|---:|"]
    for name, value in result["us_per_item_median"].items():
        lines.append(f"| {name} | {value:.1f} |")
    lines += ["", f"Recording costs **{result['recording_extra_us_per_reading']:+.1f} µs per reading**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    seam_arguments(parser)
    args = parser.parse_args(argv)
    load = uptime()
    from aelstm.core.data import load_nab

    values = load_nab(FIXTURE).values[:, 0]
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        publish(train(scratch / "trained"), scratch / "registry", FLEET)
        result = asyncio.run(measure(scratch / "registry", scratch / "recorded", values, args))
    result |= {"command": " ".join(["python -m benchmarks.performance.recorder_cost", *(argv or sys.argv[1:])]),
               "uptime": load}
    text = markdown(result)
    write_report(OUT, "recorder_cost", result, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
