"""GPU against CPU in one run: the onnxruntime ceiling over batch sizes and the end-to-end limits of `aelstm serve`
(in-process and Ray backends) with `--device cuda` against `--device cpu`, on the small EC2 fixture model.

    python -m benchmarks.gpu.run --install               # fresh .venv-gpu with onnxruntime-gpu, then the run
    python -m benchmarks.gpu.run                         # in an environment that already has onnxruntime-gpu
    python -m benchmarks.gpu.run --device-pair cpu,cpu   # the CPU-only path: a smoke test on a machine without a GPU

Writes benchmarks/results/gpu/summary.{json,md}. It reuses benchmarks/performance/run.py (ceiling, servers, sweeps)
with its quick plan, so it stays under 8 minutes; it refuses to run when onnxruntime cannot really use CUDA.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

from benchmarks.harness import REPO, train, write_report
from benchmarks.performance.limits import SLO_MS
from benchmarks.performance.run import (
    QUICK,
    Config,
    ceiling,
    git_commit,
    guesser,
    limits,
    load_average,
    machine,
    now,
    ours,
    running,
    say,
)

RESULTS = REPO / "benchmarks" / "results" / "gpu"
BATCHES = (1, 16, 64, 256, 1024, 4096)
CUDA = "CUDAExecutionProvider"


def install(environment: Path) -> Path:
    """A fresh virtual environment with aelstm and onnxruntime-gpu, and no CPU onnxruntime (both ship the same
    `onnxruntime` module, so one would silently shadow the other); returns its python."""
    say(f"creating {environment} with onnxruntime-gpu")
    venv.EnvBuilder(clear=True, with_pip=True).create(environment)
    python = environment / "bin" / "python"

    def pip(*args: str) -> None:
        subprocess.run([str(python), "-m", "pip", "install", "-q", *args], check=True, cwd=REPO, timeout=1800)

    pip("--upgrade", "pip")
    subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "onnxruntime"], check=True, capture_output=True)
    pip("-e", ".[gpu]")
    shown = subprocess.run([str(python), "-m", "pip", "show", "onnxruntime"], capture_output=True)
    if shown.returncode == 0:  # something pulled the CPU build in after all: it must go, and the GPU build's files back
        subprocess.run([str(python), "-m", "pip", "uninstall", "-y", "onnxruntime"], check=True, capture_output=True)
        pip("--force-reinstall", "--no-deps", "onnxruntime-gpu")
    return python


def refuse_without_cuda(bundle: Path) -> str:
    """The provider a CUDA session really runs on; exits with a clear message when it is not CUDA (onnxruntime lists
    CUDA whenever onnxruntime-gpu is installed, and silently falls back to CPU when no GPU or driver works)."""
    import onnxruntime

    from aelstm.core.bundle import load_bundle
    from aelstm.core.runtime import BundleScorer

    available = onnxruntime.get_available_providers()
    if CUDA not in available:
        raise SystemExit(f"no CUDA provider: onnxruntime {onnxruntime.__version__} offers {available}. Install "
                         "onnxruntime-gpu instead of onnxruntime (--install), on a machine with an NVIDIA GPU.")
    provider = BundleScorer(load_bundle(bundle), device="cuda").provider
    if provider != CUDA:
        raise SystemExit(f"onnxruntime-gpu is installed but a CUDA session runs on {provider}: no usable GPU, driver "
                         "or CUDA/cuDNN libraries (see onnxruntime's warning above).")
    return provider


def gpu_facts() -> str:
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=30).stdout.strip() or "none"
    except (OSError, subprocess.TimeoutExpired):
        return "none (no nvidia-smi)"


def labels(pair: list[str]) -> list[str]:
    """Names of the two sides: the devices, told apart when both are the same (the CPU smoke test)."""
    return [f"{d}{i + 1}" for i, d in enumerate(pair)] if pair[0] == pair[1] else pair


def measure(bundle: Path, pair: list[str], batches: tuple[int, ...], processes: int, tmp: Path) -> dict:
    """Ceilings and end-to-end limits for each device of the pair, one server at a time."""
    tops = {label: ceiling(bundle, BATCHES, QUICK.ceiling_s, 1, device)
            for label, device in zip(labels(pair), pair, strict=True)}
    found: dict[str, dict] = {}
    for label, device in zip(labels(pair), pair, strict=True):
        known: dict[str, float] = {}
        for backend in ("inprocess", "ray"):
            extra = ("--gpus-per-replica", "1") if backend == "ray" and device == "cuda" else ()
            server = ours(backend, bundle, tmp / f"registry-{backend}-{label}", device, extra,
                          name=f"{backend}-{label}")
            configs = [Config(server.name, batch, processes=processes) for batch in batches]
            with running(server, tmp) as process:
                found.update(limits(server, process, configs, QUICK, guesser(tops[label], known), known))
    return {"ceiling": tops, "limits": found}


def markdown(summary: dict) -> str:
    lines = ["# GPU against CPU: onnxruntime ceiling and end-to-end limits", "",
             f"`{summary['command']}` at {summary['commit'][:12]}, {summary['started']} to {summary['finished']}; "
             f"GPU: {summary['gpu']}; {summary['machine']['cpus']} CPUs ({summary['machine']['cpu_model']}).", "",
             "| ceiling, windows/s (one thread) | " + " | ".join(f"batch {b}" for b in BATCHES) + " |",
             "|---|" + "---:|" * len(BATCHES)]
    for label, top in summary["ceiling"].items():
        lines.append(f"| {label} ({top['batches']['batch1']['provider']}) | " +
                     " | ".join(f"{top['batches'][f'batch{b}']['windows_per_s']:,.0f}" for b in BATCHES) + " |")
    lines += ["", f"| end to end | items/s within p99 ≤ {SLO_MS:g} ms, none lost | msgs/s | lower bound |",
              "|---|---:|---:|---|"]
    for key, entry in summary["limits"].items():
        lines.append(f"| {key} | {entry['items_per_s']:,.0f} | {entry['rate']:g} | "
                     f"{'yes' if entry['lower_bound'] else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device-pair", default="cuda,cpu", help="the two --device values compared")
    parser.add_argument("--batches", default="16,1", help="loadtest batch sizes of the end-to-end sweeps")
    parser.add_argument("--processes", type=int, default=4, help="load generator processes")
    parser.add_argument("--install", action="store_true",
                        help="first create a fresh environment with onnxruntime-gpu (and no onnxruntime), run there")
    parser.add_argument("--environment", type=Path, default=REPO / ".venv-gpu", help="where --install creates it")
    parser.add_argument("--bundle", type=Path, help="serve this bundle instead of training the fixture's model")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    pair = [d.strip() for d in args.device_pair.split(",")]
    if len(pair) != 2 or not set(pair) <= {"cpu", "cuda"}:
        raise SystemExit("--device-pair takes two of cpu and cuda, e.g. cuda,cpu")
    with tempfile.TemporaryDirectory() as tmp:
        bundle = args.bundle or train(Path(tmp) / "bundle")  # here: the GPU environment need not have torch
        if args.install:
            python = install(args.environment)
            rest = [a for a in sys.argv[1:] if a != "--install"]
            command = [str(python), "-m", "benchmarks.gpu.run", *rest]
            if args.bundle is None:
                command += ["--bundle", str(bundle)]
            raise SystemExit(subprocess.run(command, cwd=REPO).returncode)
        if "cuda" in pair:
            say(f"CUDA session runs on {refuse_without_cuda(bundle)}")
        meta = {"command": shlex.join(sys.orig_argv), "started": now(), "load_average": {"start": load_average()},
                **git_commit(), "machine": machine(), "gpu": gpu_facts(), "device_pair": pair}
        measured = measure(bundle, pair, tuple(int(b) for b in args.batches.split(",")), args.processes, Path(tmp))
    meta["load_average"]["end"] = load_average()
    summary = {**meta, "finished": now(), **measured}
    text = markdown(summary)
    write_report(args.out, "summary", summary, text)
    say(f"wrote {args.out}/summary.json and summary.md")
    print(text)


if __name__ == "__main__":
    main()
