"""`aelstm evaluate`: run detectors on a public dataset and write the quality report (JSON, markdown, PNG)."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from aelstm.core.errors import DataError
from aelstm.core.policy import DEFAULT_POLICY

from .protocols import SPLITS

if TYPE_CHECKING:
    from .lineup import Settings

DEFAULT_OUT = Path("benchmarks/results/quality")
DEFAULT_DATA = Path("../shared/datasets")
SENSITIVITY_HIDDEN = (16, 32, 64, 128)
SENSITIVITY_RATES = (1e-4, 1e-3, 1e-2)
QUICK_EPOCHS = 3


def run_settings(dataset: str, quick: bool, epochs: int | None, window: int, seed: int,
                 chosen: Path | None = None) -> Settings:
    """The settings every detector of a run shares; `chosen` is a selection file whose chosen alarm policy and
    AE-LSTM variant replace the defaults (so reported runs use settings picked on development runs only)."""
    from .lineup import Settings  # imports torch: only when a run starts
    from .selection import chosen_policy

    long_series = dataset == "ton_iot"
    # TON_IoT devices have ~17,500 training rows: every 16th training window and ≤ 15 epochs keep it in budget.
    default_epochs = QUICK_EPOCHS if quick else 15 if long_series else 50
    settings = Settings(window=window, epochs=default_epochs if epochs is None else epochs,
                        train_stride=16 if long_series else 1, seed=seed)
    if chosen is None:
        return settings
    try:
        picked = json.loads(chosen.read_text())["chosen"]
        return replace(settings, policy=chosen_policy(picked), aelstm=dict(picked["aelstm"]))
    except (OSError, ValueError, KeyError, TypeError, DataError) as exc:
        raise DataError(f"{chosen}: not a selection file with a 'chosen' setting ({exc})") from exc


def _detector_list(text: str | None) -> tuple[str, ...]:
    from .lineup import DETECTORS

    if not text:
        return DETECTORS
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise DataError(f"unknown detector(s) {unknown}; choose from {', '.join(DETECTORS)}")
    return names


@click.command()
@click.option("--dataset", type=click.Choice(["skab", "skab-anomaly-free", "ton_iot", "nbaiot"]), required=True,
              help="Dataset protocol (skab: SKAB's leaderboard protocol; skab-anomaly-free: also learn from its "
                   "anomaly-free run).")
@click.option("--detectors", help="Comma-separated detectors [default: all that the dataset allows].")
@click.option("--quick", is_flag=True, help="A small subset with few epochs (CI smoke run, ≤ 2 minutes).")
@click.option("--data-root", type=click.Path(path_type=Path), default=DEFAULT_DATA, show_default=True,
              help="Folder holding skab/, ton_iot/, nbaiot_sample/.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Folder for <dataset>.json, <dataset>.md and the PNG figures.")
@click.option("--window", default=16, show_default=True, help="Window length shared by every detector.")
@click.option("--epochs", type=int, help="Max AE-LSTM epochs [default: 50; 15 on TON_IoT; 3 with --quick].")
@click.option("--no-sensitivity", is_flag=True, help="Skip the hidden-units / learning-rate sweep (SKAB only).")
@click.option("--split", type=click.Choice(SPLITS), help="SKAB runs to judge: development (valve1, where settings "
              "are chosen), held-out (valve2 + other, reported) or all [default: held-out on SKAB, all elsewhere].")
@click.option("--settings", "chosen", type=click.Path(path_type=Path, dir_okay=False),
              help="A selection file (benchmarks/results/quality/selection-skab.json): use its chosen alarm "
                   f"policy and AE-LSTM variant [default: the shipped policy, {DEFAULT_POLICY}, and the default "
                   "model].")
@click.option("--seeds", default=1, show_default=True, type=click.IntRange(1),
              help="Train the AE-LSTM family with this many seeds (--seed, +1, …); mean ± sd is reported.")
@click.option("--seed", default=0, show_default=True)
@click.option("--quiet", is_flag=True, help="No progress bars.")
def evaluate(dataset, detectors, quick, data_root, output, window, epochs, no_sensitivity, split, chosen, seeds,
             seed, quiet) -> None:
    """Evaluate detectors on DATASET with its standard protocol; thresholds come from normal/training data only."""
    import torch
    from threadpoolctl import threadpool_limits

    from . import plots, report
    from .protocols import load_protocol
    from .runner import evaluate as run_detectors
    from .runner import sensitivity

    started, load = time.perf_counter(), report.load_average()
    names = _detector_list(detectors)
    torch.set_num_threads(1)  # one thread for every detector: fair timings, and a shared machine stays usable
    split = split or ("held-out" if dataset.startswith("skab") else "all")
    protocol = load_protocol(dataset, data_root, quick=quick, window=window, split=split)
    settings = run_settings(dataset, quick, epochs, window, seed, chosen)
    with threadpool_limits(1):
        results, skipped = run_detectors(protocol, names, settings, progress=not quiet, seeds=seeds)
        sweep = None
        if dataset.startswith("skab") and not no_sensitivity:
            subset = protocol.cases[:1] if quick else protocol.cases[::6]
            grid = sensitivity(replace(protocol, cases=subset), settings, SENSITIVITY_HIDDEN, SENSITIVITY_RATES,
                               progress=not quiet)
            sweep = {"results": grid,
                     "cases": [c.name for c in subset],
                     "cases_note": f"Sweep on {len(subset)} of {len(protocol.cases)} runs "
                                   f"({', '.join(c.name for c in subset)}) to keep it cheap; reported, not used "
                                   "to choose settings."}
    command = " ".join(["aelstm evaluate --dataset", dataset, "--split", split,
                        *(["--settings", str(chosen)] if chosen else []),
                        *(["--seeds", str(seeds)] if seeds > 1 else []),
                        *(["--detectors", detectors] if detectors else []),
                        *(["--quick"] if quick else []), *(["--epochs", str(epochs)] if epochs is not None else []),
                        *(["--window", str(window)] if window != 16 else []),
                        *(["--no-sensitivity"] if no_sensitivity else [])])
    source = str(chosen) if chosen else "defaults (no selection file)"
    data = report.build_json(protocol, results, skipped, report.settings_dict(settings, quick, seeds, source),
                             sweep, command, time.perf_counter() - started, load)
    output.mkdir(parents=True, exist_ok=True)
    first = {name: runs[0] for name, runs in results.items()}
    figures = [plots.roc_pr(first, output / f"{dataset}_roc_pr.png", dataset),
               plots.shipped_vs_best(data, output / f"{dataset}_shipped_vs_best.png")]
    example = first.get("ae-lstm") or next(iter(first.values()), None)
    if example is not None:
        index = _example_case(protocol.cases)
        figures.append(plots.detection_example(protocol.cases[index], example.cases[index],
                                               output / f"{dataset}_detection_example.png", example.name))
    if sweep:
        figures.append(plots.sensitivity(sweep["results"], output / f"{dataset}_sensitivity.png", dataset))
    data["figures"] = [str(f) for f in figures]
    json_path, md_path = report.write(data, output)
    click.echo(f"wrote {json_path}, {md_path} and {len(figures)} figures in {data['seconds']:.0f}s")
    for line in report.summary_lines(data):
        click.echo(line)


def _example_case(cases) -> int:
    """The first case whose test rows hold both classes (a figure needs something to find)."""
    for index, case in enumerate(cases):
        labels = case.test_labels
        if labels.any() and not labels.all():
            return index
    return 0
