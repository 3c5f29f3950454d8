"""The alarms a served model raises, judged by NAB: which threshold should a drifting stream ship with?

    python -m benchmarks.nab.alarms            # development half chooses, both halves reported

Per NAB file, a model is trained as `aelstm train` would on the probationary rows (the NAB benchmark's model size
and the patch its development half chose) and scores the file as the server does: no online learning, one score
per row. Every threshold calibrator of the quality benchmark's grid (static POT, streaming SPOT and DSPOT at each
drift depth and risk) turns the model's own validation scores into a threshold, and its binary alarms are scored by
NAB (an alarm is 1, a quiet row 0). Unlike `benchmarks.nab.run`, no threshold is optimised on any file: this is
the shipped alarm, as an operator gets it. The calibrator with the best development standard score is chosen; the
held-out half is reported at it. Writes `benchmarks/results/nab/alarms.json` and `alarms.md`.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import sys
import time
from pathlib import Path

import numpy as np

from aelstm.core.errors import AelstmError
from aelstm.core.preprocess import sliding_windows
from aelstm.core.progress import ProgressBar
from aelstm.training.detectors.base import Calibrator
from aelstm.training.evaluation.selection import calibrators
from aelstm.training.nab.corpus import NabFile, load_corpus
from aelstm.training.nab.scoring import PROFILES, NabScorer
from aelstm.training.nab.split import Split

from ..harness import uptime
from .run import DEFAULT_DATA, DEFAULT_OUT, DEFAULT_SPLIT, NAB_TRAIN

ALARM = 0.5  # binary alarms: 1 above it, 0 below


def chosen_patch(summary: Path) -> int:
    """The patch the NAB benchmark's development half chose (its committed summary), 1 without one."""
    if not summary.is_file():
        return 1
    return int(json.loads(summary.read_text())["selection"]["chosen"].get("patch") or 1)


def _model_scores(job: tuple[NabFile, int, int]) -> tuple[str, np.ndarray, np.ndarray, float]:
    """(key, score per row from the first full window on, the validation scores `fit` calibrated on, seconds)."""
    import torch

    from aelstm.training.train import TrainConfig, fit

    nab, patch, seed = job
    torch.set_num_threads(1)
    started = time.perf_counter()
    config = TrainConfig(**NAB_TRAIN, patch=patch, seed=seed)
    columns = np.asarray(nab.values, dtype=np.float64)[:, None]
    fitted = fit(columns[: nab.probation], config, progress=False)
    scores = fitted.score(sliding_windows(columns, config.window, 1))
    return nab.key, scores, fitted.validation_scores, time.perf_counter() - started


def alarms(nab: NabFile, scores: np.ndarray, validation: np.ndarray, calibrator: Calibrator) -> np.ndarray:
    """1.0 where the calibrated threshold alarms, per row; the probationary rows (trained on) stay quiet. A
    streaming threshold judges the file as one stream from its first full window, as a served device would be."""
    flags = np.zeros(len(nab.values))
    flags[len(nab.values) - len(scores) :] = calibrator(validation).flags(scores)
    flags[: nab.probation] = 0.0
    return flags


def judge(files: list[NabFile], model: dict, grid: list[Calibrator]) -> list[dict]:
    """Every calibrator's three NAB profiles on `files`, alarms as shipped."""
    scorer = NabScorer.of(files)
    rows = []
    for calibrator in grid:
        flags = [alarms(nab, *model[nab.key], calibrator) for nab in files]
        profiles = {p.name: scorer.at(flags, p, ALARM).to_dict() for p in PROFILES}
        rows.append({"calibrator": calibrator.to_dict(), "label": calibrator.label, "profiles": profiles,
                     "alarms": int(sum(f.sum() for f in flags))})
    return rows


def markdown(result: dict) -> str:
    lines = [
        "# NAB: the alarms a served model raises",
        "",
        f"Reproduce: `{result['command']}` ({result['wall_seconds'] / 60:.1f} min; `uptime` at start: "
        f"`{result['uptime']}`).",
        "",
        "One model per file, trained on its probationary rows as `aelstm train` would (window "
        f"{NAB_TRAIN['window']}, patch {result['patch']}, the NAB benchmark's model), scoring the file as the server "
        "does: no online learning. Each calibrator turns the model's own validation scores into a threshold; its "
        "binary alarms are scored by NAB with no threshold optimised on any file. **The development half "
        f"({result['development_files']} files) chose the calibrator; the held-out half ({result['held_out_files']} "
        "files) is reported at it.** The held-out column of the other rows was computed after the choice.",
        "",
        f"**Chosen on development:** {result['chosen']} (rule: best development standard score, first in the grid "
        "among ties).",
        "",
        "| calibrator | development standard | development low FP | held-out standard | held-out low FP | held-out "
        "low FN | held-out alarms (TP / FN / FP windows) |",
        "|---|---|---|---|---|---|---|",
    ]
    for dev, held in zip(result["development"], result["held_out"], strict=True):
        mark = " **← chosen**" if dev["label"] == result["chosen"] else ""
        d, h = dev["profiles"], held["profiles"]
        counts = f"{held['alarms']} ({h['standard']['tp']} / {h['standard']['fn']} / {h['standard']['fp']})"
        low_fp, low_fn = "reward_low_FP_rate", "reward_low_FN_rate"
        cells = [d["standard"], d[low_fp], h["standard"], h[low_fp], h[low_fn]]
        lines.append(f"| {dev['label']}{mark} | " + " | ".join(f"{c['score']:.1f}" for c in cells) + f" | {counts} |")
    lines += ["", f"Median seconds per model (fit and scoring, one thread): {result['median_model_seconds']:.1f}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="NAB root (data/ and labels/)")
    parser.add_argument("--split", type=Path, default=DEFAULT_SPLIT, help="development / held-out split by file")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=2, choices=(1, 2), help="worker processes")
    args = parser.parse_args(argv)
    try:
        corpus = load_corpus(args.data)
        development, held_out = Split.load(args.split).halves(corpus)
    except AelstmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    load = uptime()
    started = time.perf_counter()
    patch = chosen_patch(args.out / "summary.json")
    model, seconds = {}, []
    work = [(nab, patch, args.seed) for nab in sorted(corpus, key=lambda nab: -len(nab.values))]
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool, \
            ProgressBar("models", len(work), "files", transient=False) as bar:
        for key, scores, validation, took in pool.imap_unordered(_model_scores, work):
            model[key] = (scores, validation)
            seconds.append(took)
            bar.advance(note=key.split("/")[-1][:28])
    grid = calibrators()
    on_development = judge(development, model, grid)
    best = int(np.argmax([row["profiles"]["standard"]["score"] for row in on_development]))
    result = {
        "command": " ".join(["python -m benchmarks.nab.alarms", *(sys.argv[1:] if argv is None else argv)]),
        "uptime": load,
        "patch": patch,
        "seed": args.seed,
        "development_files": len(development),
        "held_out_files": len(held_out),
        "chosen_on": "development half only",
        "chosen": on_development[best]["label"],
        "chosen_calibrator": on_development[best]["calibrator"],
        "development": on_development,
        "held_out": judge(held_out, model, grid),
        "median_model_seconds": float(np.median(seconds)),
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "alarms.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "alarms.md").write_text(markdown(result))
    print(f"chosen on development: {result['chosen']}; wrote {args.out / 'alarms.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
