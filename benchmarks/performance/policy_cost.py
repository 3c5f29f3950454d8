"""What a device's alarm policy costs the ingress: `readings` items of the same model under each policy, through
the transport-free scoring seam, alternating in one run; and what a device's state takes in bytes.

    python -m benchmarks.performance.policy_cost        # writes benchmarks/results/performance/policy_cost.*

Every fleet serves the same trained weights (one bundle, its policy refitted on the model's scores of the normal
rows it was trained on), in-process onnxruntime, so the differences are the per-device judging: a place in the
device's order, one policy step per reading, the verdict. `sum | fixed` (a fixed level: no state that learns) is
the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from aelstm.core.bundle import MANIFEST_FILE, load_bundle, write_manifest
from aelstm.core.policy import DEFAULT_POLICY, Policy
from aelstm.core.preprocess import sliding_windows
from aelstm.core.runtime import BundleScorer
from aelstm.server.registry import publish

from ..harness import FIXTURE, train, uptime, write_report
from .seam import alternate, seam_arguments, seam_server, warm_up

OUT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "performance"
TRAINED_FRACTION = 0.15  # harness.train trains on this leading share of the fixture
POLICIES = {"fixed": "sum | fixed:value=1", "dspot (default)": DEFAULT_POLICY,
            "likelihood + refractory": "likelihood | refractory:n=100 | fixed:value=0.5"}


def with_policy(bundle_dir: Path, spec: str, values: np.ndarray, to: Path) -> Path:
    """The same bundle with `spec` fitted on the model's terms over the normal rows it was trained on."""
    shutil.copytree(bundle_dir, to)
    bundle = load_bundle(to)
    normal = values[: int(len(values) * TRAINED_FRACTION), None].astype(np.float32)
    scores = BundleScorer(bundle, device="cpu").score(sliding_windows(normal, bundle.window))
    manifest = json.loads((to / MANIFEST_FILE).read_text())
    manifest["policy"] = Policy.parse(spec).fit(np.stack([scores.rec_part, scores.pred_part], 1)).to_dict()
    write_manifest(to, manifest)
    return to


async def measure(registry: Path, values: np.ndarray, args: argparse.Namespace) -> dict:
    server = seam_server(str(registry))
    await server.start()
    try:
        sides = {fleet: (server.scorer, f"f{index}") for index, fleet in enumerate(POLICIES)}
        sent, bytes_per_device = {}, {}
        for name, side in sides.items():
            before = server.scorer.devices.bytes
            sent[name] = await warm_up(side, values, args)
            bytes_per_device[name] = (server.scorer.devices.bytes - before) / args.devices
        seconds = await alternate(sides, sent, values, args)
    finally:
        await server.stop(0)
    items = args.items * args.rounds
    per_item = {fleet: float(np.median(s)) / items * 1e6 for fleet, s in seconds.items()}
    return {"policies": POLICIES, "us_per_item_median": per_item,
            "extra_us_per_item": {fleet: per_item[fleet] - per_item["fixed"] for fleet in POLICIES},
            "bytes_per_device": bytes_per_device, "items_per_repeat": items, "repeats": args.repeats,
            "devices": args.devices, "items_per_request": args.items}


def markdown(result: dict, args: argparse.Namespace) -> str:
    lines = ["# What a device's alarm policy costs the ingress", "",
             f"Reproduce: `{result['command']}` (`uptime` at start: `{result['uptime']}`).", "",
             f"`readings` items, one reading each, {args.items} per request, {args.devices} devices, in-process "
             f"onnxruntime, through `RequestScorer.score_request`; median of {args.repeats} repeats of "
             f"{result['items_per_repeat']} items per policy, the policies alternating in one run. Bytes per device: "
             "the device store's growth per device once every window is full (readings, ids, policy state and "
             "the remembered verdicts for resends).", "",
             "| policy | µs per item (median) | over `fixed` | bytes per device |", "|---|---|---|---|"]
    for name, spec in result["policies"].items():
        lines.append(f"| {name}: `{spec}` | {result['us_per_item_median'][name]:.1f} | "
                     f"{result['extra_us_per_item'][name]:+.1f} | {result['bytes_per_device'][name]:,.0f} |")
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
        bundle = train(scratch / "trained")
        registry = scratch / "registry"
        for index, spec in enumerate(POLICIES.values()):
            publish(with_policy(bundle, spec, values, scratch / f"p{index}"), registry, f"f{index}")
        result = asyncio.run(measure(registry, values, args))
    result |= {"command": " ".join(["python -m benchmarks.performance.policy_cost", *(argv or sys.argv[1:])]),
               "uptime": load}
    write_report(OUT, "policy_cost", result, markdown(result, args))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
