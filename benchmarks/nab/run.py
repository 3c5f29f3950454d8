"""NAB with an honest protocol: settings and thresholds chosen on the development half, reported on the held-out half.

    python -m benchmarks.nab.run --protocol split --cache .cache/nab              # the whole report
    python -m benchmarks.nab.run --modes zscore                                  # the z-score baseline alone

Steps (split: benchmarks/nab/split.json, fixed before any run):
1. development: every setting of the declared grid (training.nab.selection.GRID) is scored with the joint AE-LSTM
   (first seed) on the development files only; the best standard score there wins, and its development-optimised
   thresholds (one per profile) become the detection thresholds;
2. report: each mode and seed with the chosen setting, its thresholds again taken from the development half only,
   scored on the development half, the held-out half (at those thresholds: the honest figure; and scoreboard-style
   at the held-out half's own optimum) and the full corpus; each subset normalised with its own null and perfect.
Per-file results of the first seed go to `<out>/<detector>/<category>/<detector>_<file>.csv` (the NAB layout),
the report to `<out>/summary.json`, `summary.md` and `summary.png`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aelstm.core.errors import AelstmError
from aelstm.core.progress import ProgressBar
from aelstm.training.nab.corpus import NabFile, load_corpus
from aelstm.training.nab.results import as_written, write_results
from aelstm.training.nab.scoring import NabScorer
from aelstm.training.nab.selection import GRID, PATCHES, SELECTION_PROFILE, Development, Setting, declared_grid, develop
from aelstm.training.nab.split import Split
from aelstm.training.nab.streaming import AELSTMStreamDetector, StreamingDetector, ZScoreDetector

from ..harness import uptime
from .report import cotraining, markdown, plot

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "datasets" / "nab"
DEFAULT_SPLIT = Path(__file__).resolve().parent / "split.json"
DEFAULT_OUT = REPO / "benchmarks" / "results" / "nab"
DEFAULT_CACHE = REPO / ".cache" / "nab"
# One hyper-parameter set for every file: small windows and a small model, since a probationary period holds at
# most 750 rows; everything else is the project's default training recipe.
NAB_TRAIN = {"window": 16, "hidden": 32, "latent": 8, "epochs": 30, "patience": 5}
MODES = {"ae-lstm": "joint", "ae-then-lstm": "separate", "ae-only": "ae", "lstm-only": "lstm"}
SELECTING_MODE = "ae-lstm"  # the grid is searched with the joint model; the ablations reuse its choice
ALL_DETECTORS = [*MODES, "zscore"]


def patch_supported() -> bool:
    """Whether the training code has a `patch` option (added in parallel work); the grid covers it only then."""
    from aelstm.training.train import TrainConfig  # torch loads only where a model is involved

    return "patch" in {f.name for f in dataclasses.fields(TrainConfig)}


def make_detector(name: str, setting: Setting, seed: int, cache: Path | None) -> StreamingDetector:
    if name == "zscore":
        return ZScoreDetector()
    if name not in MODES:
        raise AelstmError(f"unknown detector {name!r}; choose from {ALL_DETECTORS}")
    from aelstm.training.train import TrainConfig

    patch = {} if setting.patch is None else {"patch": setting.patch}
    config = TrainConfig(**NAB_TRAIN, **patch, mode=MODES[name], seed=seed)
    return AELSTMStreamDetector(config, likelihood=setting.likelihood, online=setting.online, cache=cache)


def _score_one(job: tuple[StreamingDetector, NabFile]) -> tuple[str, np.ndarray, float]:
    detector, nab = job
    started = time.perf_counter()
    scores = detector.score_file(nab.values, nab.probation)
    return nab.key, scores, time.perf_counter() - started


def stream(detector: StreamingDetector, files: Sequence[NabFile], jobs: int, label: str) -> tuple[dict, dict]:
    """({key: scores as written}, {key: seconds}) for `files`; files still to fit run in `jobs` processes.

    Seconds are the fit-and-score time recorded with a cached model where there is one, else measured here."""
    pending = sorted((nab for nab in files if not detector.is_cached(nab.values, nab.probation)),
                     key=lambda nab: -len(nab.values))  # largest first: the pool ends evenly
    scores, seconds = {}, {}
    if pending:
        pool = multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else None
        work = [(detector, nab) for nab in pending]
        outcomes = pool.imap_unordered(_score_one, work) if pool is not None else map(_score_one, work)
        try:
            with ProgressBar(label, len(pending), "files", transient=False) as bar:
                for key, values, took in outcomes:
                    scores[key], seconds[key] = values, took
                    bar.advance(note=key.split("/")[-1][:28])
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    for nab in files:
        if nab.key not in scores:
            scores[nab.key] = detector.score_file(nab.values, nab.probation)
        recorded = detector.fit_seconds(nab.values, nab.probation)
        seconds[nab.key] = recorded if recorded is not None else seconds.get(nab.key, 0.0)
        scores[nab.key] = as_written(scores[nab.key])
    return scores, seconds


def choose_setting(development: list[NabFile], seed: int, args: argparse.Namespace) -> Development[Setting]:
    """The grid search, on the development files alone."""
    grid = declared_grid(with_patch=patch_supported())

    def scores_of(setting: Setting, files: Sequence[NabFile]) -> list[np.ndarray]:
        detector = make_detector(SELECTING_MODE, setting, seed, args.cache)
        scores, _ = stream(detector, files, args.jobs, f"dev {setting.label}")
        return [scores[nab.key] for nab in files]

    return develop(development, grid, scores_of)


def grid_transfer(choice: Development[Setting], held_out: list[NabFile], seed: int, args: argparse.Namespace) -> list:
    """After the choice, for the record only: each grid setting on the held-out files at its development thresholds."""
    scorer = NabScorer.of(held_out)
    rows = []
    for candidate in choice.candidates:
        detector = make_detector(SELECTING_MODE, candidate.candidate, seed, args.cache)
        scores, _ = stream(detector, held_out, args.jobs, f"held-out {candidate.candidate.label}")
        report = scorer.report([scores[nab.key] for nab in held_out], candidate.thresholds)
        rows.append({
            "setting": candidate.candidate.to_dict(),
            "label": candidate.candidate.label,
            "development": candidate.report,
            "held_out": report["at_threshold"],
        })
    return rows


def evaluate(detector: StreamingDetector, corpus: list[NabFile], halves: tuple[list, list], args) -> dict:
    """Score the whole corpus once; thresholds from the development half; report every subset."""
    scores, seconds = stream(detector, corpus, args.jobs, detector.name)
    development, held_out = halves
    choice = develop(development, [detector.name], lambda _, files: [scores[nab.key] for nab in files])
    thresholds = choice.chosen.thresholds
    subsets = {"held_out": held_out, "full": corpus}
    reports = {name: NabScorer.of(files).report([scores[n.key] for n in files], thresholds)
               for name, files in subsets.items()}
    entry = {
        "detector": detector.describe(),
        "thresholds_from_development": thresholds,
        "development": choice.chosen.report,
        **reports,
        "seconds_total": round(sum(seconds.values()), 1),
        "seconds_per_file": {key: round(value, 2) for key, value in sorted(seconds.items())},
    }
    return entry, scores


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=("split",), default="split",
                        help="split: choose on the development half, report on the held-out half (the only one)")
    parser.add_argument("--modes", default=",".join(ALL_DETECTORS), help=f"comma list of {ALL_DETECTORS}")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds of the AE-LSTM family; the first one "
                        "searches the grid")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB root (data/ and labels/)")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="development / held-out split by file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="models' raw errors, to rescore fast")
    parser.add_argument("--jobs", type=int, default=2, choices=(1, 2), help="worker processes")
    args = parser.parse_args(argv)
    args.modes = [name.strip() for name in args.modes.split(",") if name.strip()]
    args.seeds = [int(seed) for seed in args.seeds.split(",") if seed.strip()]
    unknown = sorted(set(args.modes) - set(ALL_DETECTORS))
    if unknown:
        parser.exit(2, f"error: unknown detector {unknown[0]!r}; choose from {ALL_DETECTORS}\n")
    if not args.seeds:
        parser.exit(2, "error: --seeds needs at least one seed\n")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started, load = time.perf_counter(), uptime()
    try:
        split = Split.load(args.split)
        corpus = load_corpus(args.data)
        halves = split.halves(corpus)
    except AelstmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    development, held_out = halves
    summary = {
        "protocol": "split",
        "command": "python -m benchmarks.nab.run " + " ".join(sys.argv[1:] if argv is None else argv),
        "uptime_at_start": load,
        "machine": f"{platform.processor() or platform.machine()}, {multiprocessing.cpu_count()} cores",
        "jobs": args.jobs,
        "split": {"file": str(args.split.relative_to(REPO) if args.split.is_relative_to(REPO) else args.split),
                  **{name: {"files": len(files), "windows": sum(len(n.windows) for n in files)}
                     for name, files in (("development", development), ("held_out", held_out), ("full", corpus))}},
        "train": NAB_TRAIN,
        "seeds": args.seeds,
        "detectors": {},
    }
    modes = [name for name in args.modes if name in MODES]
    setting = Setting()
    if modes:
        choice = choose_setting(development, args.seeds[0], args)
        setting = choice.chosen.candidate
        summary["selection"] = {
            "chosen_on": "development half only",
            "mode": SELECTING_MODE,
            "seed": args.seeds[0],
            "profile": SELECTION_PROFILE,
            "rule": "highest development standard score at the development-optimised threshold; first declared "
                    "setting among ties",
            "grid": {**GRID, **({"patch": PATCHES} if patch_supported() else {})},
            "chosen": setting.to_dict(),
            "chosen_label": setting.label,
            "grid_results": grid_transfer(choice, held_out, args.seeds[0], args),
        }
    runs = [(name, seed) for name in modes for seed in args.seeds] + [("zscore", None)] * ("zscore" in args.modes)
    for name, seed in runs:
        detector = make_detector(name, setting, seed or 0, args.cache)
        entry, scores = evaluate(detector, corpus, halves, args)
        key = name if seed is None else f"{name}/seed{seed}"
        summary["detectors"][key] = {"mode": name, "seed": seed, **entry}
        if seed in (None, args.seeds[0]):
            for nab in corpus:
                write_results(args.out, name, nab, scores[nab.key])
        held = entry["held_out"]["at_threshold"]["standard"]["score"]
        print(f"{key}: held-out standard {held:.1f} at the development threshold", file=sys.stderr)
    summary["cotraining"] = cotraining(summary["detectors"], list(MODES))
    summary["wall_seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    (args.out / "summary.md").write_text(markdown(summary))
    plot(summary, args.out / "summary.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
