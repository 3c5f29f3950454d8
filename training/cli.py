"""`aelstm train | train-fleets | retrain | score | info`: model commands (torch is imported by training only)."""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import click

from aelstm.core.bundle import load_bundle
from aelstm.core.cli_options import data_options, echo_features, read_series
from aelstm.core.errors import AelstmError
from aelstm.core.policy import DEFAULT_POLICY, MULTIVARIATE_POLICY

from .config import EARLY_STOPPING_WINDOWS
from .evaluation.cli import evaluate


def model_options(function):
    """The options that decide a model (architecture, training, alarm policy, preprocessing, seed): the same for
    one model (`train`) and for every fleet's (`train-fleets`)."""
    options = [
        click.option("--window", default=32, show_default=True, help="Window length (readings)."),
        click.option("--stride", default=1, show_default=True, help="Step between training windows."),
        click.option("--hidden", default=64, show_default=True, help="Hidden units of the AE and LSTM layers."),
        click.option("--latent", default=16, show_default=True, help="Size of the AE's latent code per patch."),
        click.option("--lstm-layers", default=2, show_default=True, help="Stacked LSTM layers."),
        click.option(
            "--patch",
            default=1,
            show_default=True,
            help="Consecutive readings the AE encodes and reconstructs together, so it sees local shape as well as "
            "level (window must be ≥ patch + 1).",
        ),
        click.option(
            "--score-steps",
            default=1,
            show_default=True,
            help="Average each error over the window's last N steps: one noisy reading weighs less, a sustained change "
            "more (N ≤ window − patch).",
        ),
        click.option(
            "--error-score",
            type=click.Choice(["pooled", "standardised", "feature-max"]),
            default="pooled",
            show_default=True,
            help="How a step's error over several features becomes one number: pooled (mean squared error), "
            "standardised (each feature's squared error over its normal size, averaged) or feature-max (the largest "
            "of them). With one feature all three agree.",
        ),
        click.option(
            "--epochs", default=100, show_default=True, help="Maximum epochs (early stopping on validation loss)."
        ),
        click.option(
            "--epoch-windows",
            type=click.IntRange(min=0),
            help="Windows an epoch trains on, drawn afresh each epoch from all of them, so a long recording costs a "
            "bounded time per epoch while a short one trains on every window [default: 4096; 0: every window].",
        ),
        click.option(
            "--patience",
            default=5,
            show_default=True,
            help=f"Epochs without improvement of the validation loss (judged on at most {EARLY_STOPPING_WINDOWS:,} "
            "evenly spaced validation windows) before stopping.",
        ),
        click.option(
            "--min-delta",
            default=0.01,
            show_default=True,
            help="Smallest improvement: a fall of the validation loss by this fraction of its value at the last "
            "improvement.",
        ),
        click.option("--batch-size", default=64, show_default=True),
        click.option("--lr", "learning_rate", default=1e-3, show_default=True, help="Adam learning rate."),
        click.option("--alpha", default=0.5, show_default=True, help="Weight of the reconstruction error."),
        click.option("--beta", default=0.5, show_default=True, help="Weight of the prediction error."),
        click.option(
            "--mode",
            type=click.Choice(["joint", "separate", "ae", "lstm"]),
            default="joint",
            show_default=True,
            help="joint: co-trained AE+LSTM; separate: AE then LSTM; ae/lstm: one part only.",
        ),
        click.option(
            "--policy",
            help=f"Alarm policy [default: for one feature `{DEFAULT_POLICY}`, for several `{MULTIVARIATE_POLICY}`]: "
            "rules separated by '|', fitted on normal validation scores and run per device. First "
            "`sum` (the score) or `likelihood[:short=N,long=N]` (each error term against the device's own past); then "
            "optionally `refractory:n=N` (one alarm per episode); last a threshold: `spot:risk=R,depth=D` (streaming, "
            "drift-aware with depth > 0), `pot:risk=R`, `quantile:q=Q` or `fixed:value=V`; optionally after it "
            "`confirm:k=K,n=N` (an alarm only while K of the last N threshold verdicts alarmed), then `hold:n=N` (an "
            "alarm stays raised N more windows), then `suppress:n=N` (no new alarm for N windows after one).",
        ),
        click.option(
            "--alarms-teach/--alarms-do-not-teach",
            default=True,
            show_default=True,
            help="Whether a device's alarms update its policy state: teaching lets a drifted device go quiet; not "
            "teaching keeps a long anomaly flagged over its whole length.",
        ),
        click.option("--wavelet", default="db4", show_default=True, help="PyWavelets wavelet for denoising."),
        click.option("--wavelet-level", default=1, show_default=True, help="Decomposition levels denoised."),
        click.option("--no-denoise", is_flag=True, help="Skip wavelet denoising."),
        click.option(
            "--out-of-range",
            type=click.Choice(["extrapolate", "clip"]),
            default="extrapolate",
            show_default=True,
            help="Readings outside the training range: score as-is, or clip to it.",
        ),
        click.option("--seed", default=0, show_default=True),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def train_config(wavelet: str, wavelet_level: int, no_denoise: bool, **hyper):
    """The model options as a training configuration."""
    from aelstm.core.preprocess import DenoiseConfig

    from .config import TrainConfig

    epoch_windows = hyper.pop("epoch_windows", None)
    if epoch_windows is not None:
        hyper["epoch_windows"] = epoch_windows or None  # 0: every window
    return TrainConfig(denoise=DenoiseConfig(enabled=not no_denoise, wavelet=wavelet, level=wavelet_level), **hyper)


@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@data_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Bundle directory to write.")
@click.option(
    "--train-fraction",
    type=float,
    help="Train on this leading fraction of the file [default: every row before the first labelled anomaly, or the "
    "whole file when it has no labelled anomalies].",
)
@click.option(
    "--until-first-anomaly", is_flag=True, help="Train on every row before the first labelled anomaly (needs labels)."
)
@click.option("--name", help="Model name [default: the data file's name].")
@click.option("--model-version", default="1", show_default=True, help="Model version recorded in the bundle.")
@model_options
@click.option(
    "--threads",
    default=1,
    show_default=True,
    help="torch threads; the default model is small enough that extra threads mostly add contention.",
)
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train(
    data,
    dataset,
    time_column,
    label_column,
    features,
    delimiter,
    non_numeric,
    output,
    train_fraction,
    until_first_anomaly,
    name,
    model_version,
    threads,
    quiet,
    **hyper,
) -> None:
    """Train the joint AE-LSTM on the normal part of DATA and write a model bundle."""
    from .config import training_rows
    from .train import train_series

    config = train_config(**hyper)
    series = read_series(data, dataset, time_column, label_column, features, delimiter, non_numeric)
    echo_features(series)
    rows, why = training_rows(series, train_fraction, until_first_anomaly)
    click.echo(f"training on {rows} of {len(series)} rows: {why}", err=True)
    if series.labels is not None and series.labels[:rows].any():
        click.echo(f"warning: {int(series.labels[:rows].sum())} training rows are labelled anomalous", err=True)
    fitted, bundle = train_series(
        series, output, config, rows=rows, name=name, version=model_version, progress=not quiet, threads=threads
    )
    m = bundle.manifest
    stops = "".join(f", {phase} stopped early at epoch {epoch}" for phase, epoch in fitted.early_stops.items())
    click.echo(
        f"trained {bundle.name} v{bundle.version} on rows 0–{rows - 1} × features [{', '.join(bundle.features)}]: "
        f"{len(fitted.history)} epochs{stops}, {fitted.seconds:.1f}s; threshold {bundle.threshold:.4g} "
        f"({bundle.threshold_method}); validation flagged {m['validation']['flagged_fraction']:.2%}"
    )
    click.echo(f"bundle written to {output}")


@click.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@data_options
@click.option("-o", "--output", type=click.Path(path_type=Path), help="CSV of scores to write [default: stdout].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--batch-size", default=4096, show_default=True, help="Windows per onnxruntime call.")
def score(
    bundle_dir, data, dataset, time_column, label_column, features, delimiter, non_numeric, output, device, batch_size
) -> None:
    """Score every full window of DATA with BUNDLE_DIR's model; one CSV row per window end.

    A CSV's features default to the model's own feature columns."""
    from aelstm.core.scoring import pointwise_report, score_series

    bundle = load_bundle(bundle_dir)
    features = features or (bundle.features if dataset == "csv" else None)
    series = read_series(data, dataset, time_column, label_column, features, delimiter, non_numeric)
    echo_features(series)
    table = score_series(bundle, series, device=device, batch_size=batch_size)
    table.to_csv(output if output else click.get_text_stream("stdout"), index=False)
    flagged = int(table["is_anomaly"].sum())
    click.echo(f"scored {len(table)} windows, flagged {flagged}", err=True)
    if series.labels is not None:
        click.echo(pointwise_report(table), err=True)


@click.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
def info(bundle_dir) -> None:
    """Validate BUNDLE_DIR and print its manifest."""
    bundle = load_bundle(bundle_dir)
    click.echo(json.dumps(bundle.manifest, indent=2))


# Where `train-fleets` and `retrain` fit (see `fleet_runner`).
FIT_ON_RAY_OPTION = click.option(
    "--ray-address", envvar="RAY_ADDRESS",
    help="Fit on this Ray cluster (e.g. auto) [default: an embedded local Ray with this machine's CPUs, or this "
         "process when no two fits could run at once here, e.g. one fleet; `local` is the embedded Ray] "
         "(env RAY_ADDRESS).")
FIT_RESOURCE_OPTION = click.option(
    "--fit-resource", metavar="NAME",
    help="On a cluster (--ray-address): each fit takes its --cpus-per-fleet in units of this Ray custom resource "
         "instead of CPUs, so fits run only on the nodes that offer it: training nodes started with `ray start "
         "--num-cpus 0 --resources '{\"NAME\": CORES}'`, where Scorer replicas (which ask for CPUs) never land.")


@click.command("train-fleets")
@click.argument("data", type=click.Path(path_type=Path))
@data_options
@click.option("--fleet-column", help="CSV: a column naming each row's fleet: one model per value [default: DATA is "
              "a folder with one CSV file or one folder of CSV files per fleet, or one file for one fleet].")
@click.option("--registry", type=click.Path(path_type=Path), default="registry", show_default=True,
              envvar="AELSTM_REGISTRY", help="Registry to publish into (env AELSTM_REGISTRY).")
@FIT_ON_RAY_OPTION
@FIT_RESOURCE_OPTION
@click.option("--no-ray", is_flag=True, help="Fit the fleets one after another in this process, without Ray.")
@click.option("--cpus-per-fleet", default=1, show_default=True, type=click.IntRange(min=1),
              help="CPUs (and torch threads) each fleet's fit takes; Ray runs as many fits at once as CPUs allow.")
@click.option("--holdout-fraction", default=0.1, show_default=True,
              help="The latest fraction of each fleet's normal readings, kept out of training for the gate.")
@click.option("--gate-margin", default=0.01, show_default=True,
              help="Publish a fleet's new model only if it flags at most this fraction more of the held-out normal "
              "windows than the version the fleet serves; otherwise keep it aside with the reason.")
@click.option("--summary", type=click.Path(path_type=Path), help="Write every fleet's outcome to this JSON file.")
@model_options
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_fleets(data, dataset, time_column, label_column, features, delimiter, non_numeric, fleet_column, registry,
                 ray_address, fit_resource, no_ray, cpus_per_fleet, holdout_fraction, gate_margin, summary, quiet,
                 **hyper) -> None:
    """Train one model per fleet in DATA, in parallel on Ray, and publish each that passes its gate.

    Each fleet trains on its normal readings (every row before its first labelled anomaly) except the latest
    --holdout-fraction, on which the new model and the version the fleet serves are both judged. A fleet whose data
    is bad or whose training fails is reported with its reason; the others go on. Exits 1 when any fleet failed."""
    from .fleet_training import FleetTrainer
    from .fleets import discover_fleets

    config = train_config(**hyper)
    read = lambda path: read_series(path, dataset, time_column, label_column, features, delimiter, non_numeric)  # noqa: E731
    key_options = {"time_column": time_column, "label_column": label_column, "feature_columns": features,
                   "delimiter": delimiter, "non_numeric": non_numeric}
    fleets = discover_fleets(data, read, key_column=fleet_column, key_options=key_options)
    click.echo(f"{len(fleets)} fleet(s) in {data}: {', '.join(f.name for f in fleets)}", err=True)
    with fleet_runner(no_ray, ray_address, cpus_per_fleet, len(fleets), resource=fit_resource) as runner:
        trainer = FleetTrainer(registry, runner, holdout_fraction=holdout_fraction, margin=gate_margin,
                               progress=not quiet)
        outcomes = trainer.train(fleets, lambda _: config)
    finish_fleets(outcomes, summary)


@click.command()
@click.option("--recorded", type=click.Path(path_type=Path), required=True,
              help="Where the server records normal readings (its --record-dir).")
@click.option("--registry", type=click.Path(path_type=Path), default="registry", show_default=True,
              envvar="AELSTM_REGISTRY", help="Registry whose served fleets are retrained (env AELSTM_REGISTRY).")
@click.option("--fleet", "fleets", multiple=True, help="Only this fleet (repeatable) [default: every served fleet].")
@click.option("--min-rows", default=2000, show_default=True, type=click.IntRange(min=1),
              help="Skip a fleet with fewer readings recorded since its served version was published.")
@FIT_ON_RAY_OPTION
@FIT_RESOURCE_OPTION
@click.option("--no-ray", is_flag=True, help="Fit the fleets one after another in this process, without Ray.")
@click.option("--cpus-per-fleet", default=1, show_default=True, type=click.IntRange(min=1),
              help="CPUs (and torch threads) each fleet's fit takes.")
@click.option("--holdout-fraction", default=0.1, show_default=True,
              help="The last fraction of each fleet's recorded readings, kept out of training for the gate.")
@click.option("--gate-margin", default=0.01, show_default=True,
              help="Publish only if the new model flags at most this fraction more held-out windows than the served "
              "version.")
@click.option("--summary", type=click.Path(path_type=Path), help="Write every fleet's outcome to this JSON file.")
@click.option("--below-scoring", is_flag=True, help="Run below scoring, for hosts that also score: this process and "
              "every fit in Linux's idle scheduling class (nice 19 where there is none), each Ray fit in a worker of "
              "its own. The server's retraining loop always sets it.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def retrain(recorded, registry, fleets, min_rows, ray_address, fit_resource, no_ray, cpus_per_fleet, holdout_fraction,
            gate_margin, summary, below_scoring, quiet) -> None:
    """Retrain each served fleet on the normal readings the server recorded since its version was published.

    Each fleet is trained with its served model's own configuration, on recorded devices one after another, and is
    gated and published like `train-fleets` (the held-out part is the last devices' readings). Fleets with fewer
    than --min-rows new readings are skipped. Exits 1 when any fleet failed."""
    from aelstm.core.priority import below_scoring as lower_this_process

    from .fleet_training import FleetTrainer
    from .retrain import plan_retraining

    if below_scoring:
        lower_this_process()
    plan = plan_retraining(recorded, registry, list(fleets) or None, min_rows)
    for outcome in plan.skipped:
        click.echo(f"{outcome.fleet}: skipped: {outcome.reason}", err=True)
    outcomes = list(plan.skipped)
    if plan.fleets:
        with fleet_runner(no_ray, ray_address, cpus_per_fleet, len(plan.fleets), below_scoring,
                          fit_resource) as runner:
            trainer = FleetTrainer(registry, runner, holdout_fraction=holdout_fraction, margin=gate_margin,
                                   progress=not quiet)
            outcomes += trainer.train(plan.fleets, plan.configs.__getitem__)
    finish_fleets(outcomes, summary)


def finish_fleets(outcomes, summary: Path | None) -> None:
    """Print the outcome table, write the summary, and fail when a fleet failed."""
    click.echo(outcome_table(outcomes))
    if summary is not None:
        summary.write_text(json.dumps([o.to_dict() for o in outcomes], indent=2) + "\n")
    failed = [o.fleet for o in outcomes if o.status == "failed"]
    if failed:
        raise AelstmError(f"{len(failed)} of {len(outcomes)} fleet(s) failed: {', '.join(failed)}")


@contextmanager
def fleet_runner(no_ray: bool, ray_address: str | None, cpus_per_fleet: int, fleets: int, below_scoring: bool = False,
                 resource: str | None = None):
    """Fits in this process, or on Ray (embedded, shut down and cleaned up at the end, or a cluster, left running).

    Without a cluster, a job whose fits could not run side by side here (one fleet, or CPUs for only one fit) fits
    in this process: an embedded Ray would only add its start-up (seconds), and a fit asking for more
    CPUs than the machine has would never be scheduled. `local` (Ray's name for a new local instance) is the
    embedded Ray. `below_scoring`: each Ray fit lowers the worker it runs in; `resource`: the custom resource that
    places fits on a cluster's training nodes (`RayRunner`)."""
    from .fleet_training import LocalRunner, RayRunner

    ray_address = None if ray_address == "local" else ray_address
    if resource and (no_ray or not ray_address):
        raise click.UsageError("--fit-resource places fits on the nodes of a Ray cluster: it needs --ray-address")
    at_once = min(fleets, (os.cpu_count() or 1) // cpus_per_fleet)
    if no_ray or (not ray_address and at_once < 2):
        if not no_ray and fleets:
            click.echo(f"{fleets} fleet(s), {cpus_per_fleet} CPU(s) each on {os.cpu_count()}: no two fits can run at "
                       "once here, so they run one after another in this process, without Ray", err=True)
        yield LocalRunner(threads=cpus_per_fleet)
        return
    from aelstm.server.ray_backend import configure_ray_environment, init_ray

    configure_ray_environment(ray_address)
    import ray

    temp_dir = init_ray(ray_address, num_cpus=os.cpu_count() or 1)
    try:
        yield RayRunner(cpus_per_fleet=cpus_per_fleet, threads=cpus_per_fleet, below_scoring=below_scoring,
                        resource=resource)
    finally:
        ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def outcome_table(outcomes) -> str:
    """One line per fleet: outcome, version, epochs, time, held-out false alarms (new vs served), reason."""
    lines = [f"{'fleet':<20} {'outcome':<10} {'version':>7} {'epochs':>6} {'seconds':>8} {'flagged':>8} "
             f"{'served':>8}  reason"]
    for o in outcomes:
        gate = o.gate
        flagged = f"{gate.candidate_flagged:.2%}" if gate else "-"
        served = f"{gate.serving_flagged:.2%}" if gate and gate.serving_flagged is not None else "-"
        lines.append(f"{o.fleet:<20} {o.status:<10} {o.version or '-':>7} {o.epochs or '-':>6} "
                     f"{o.seconds if o.seconds is not None else '-':>8} {flagged:>8} {served:>8}  {o.reason}")
    return "\n".join(lines)


MODEL_COMMANDS = (train, train_fleets, retrain, score, info, evaluate)
