"""`aelstm train | score | info`: model commands (torch is imported only by `train`)."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import click

from .bundle import load_bundle
from .data import LOADERS, NON_NUMERIC_POLICIES, NonNumericWarning, Series
from .errors import AelstmError
from .evaluation.cli import evaluate

DATASETS = tuple(LOADERS)


class OneLineErrorGroup(click.Group):
    """A click group that prints a known failure as one `error:` line and exits with its code (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AelstmError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def data_options(function):
    """Options shared by every command that reads a dataset file."""
    options = [
        click.option(
            "--dataset",
            "dataset",
            type=click.Choice(DATASETS),
            default="csv",
            show_default=True,
            help="File format: NAB, SKAB, TON_IoT, N-BaIoT or a generic CSV.",
        ),
        click.option("--time-column", help="CSV: name of the timestamp column (optional)."),
        click.option("--label-column", help="CSV: name of the 0/1 label column (optional)."),
        click.option(
            "--features",
            help="CSV: comma-separated feature columns (default: every column that holds numbers, other than the "
            "time and label columns).",
        ),
        click.option("--delimiter", default=",", show_default=True, help="CSV: field separator."),
        click.option(
            "--non-numeric",
            type=click.Choice(NON_NUMERIC_POLICIES),
            default="refuse",
            show_default=True,
            help="Text in a numeric column (e.g. 'hot', 'N/A', 'NaN'): refuse the file, naming the column, the count "
            "and the first such cell; or read those cells as missing values, with a warning that counts them. "
            "Empty cells are always missing values (gaps, interpolated from the readings around them).",
        ),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def read_series(
    path: Path, dataset: str, time_column, label_column, features, delimiter, non_numeric: str
) -> Series:
    """Read a dataset file as the data options say; text cells read as missing are one `warning:` line."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", NonNumericWarning)
        if dataset == "csv":
            columns = [c.strip() for c in features.split(",")] if features else None
            series = LOADERS["csv"](
                path,
                time_column=time_column,
                label_column=label_column,
                feature_columns=columns,
                delimiter=delimiter,
                non_numeric=non_numeric,
            )
        else:
            series = LOADERS[dataset](path, non_numeric=non_numeric)
    for warning in caught:
        if issubclass(warning.category, NonNumericWarning):
            click.echo(f"warning: {warning.message}", err=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return series


@click.command()
@click.argument("data", type=click.Path(path_type=Path))
@data_options
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help="Bundle directory to write.")
@click.option("--train-fraction", type=float, help="Train on this leading fraction of the file [default: 0.15].")
@click.option("--until-first-anomaly", is_flag=True, help="Train on every row before the first labelled anomaly.")
@click.option("--name", help="Model name [default: the data file's name].")
@click.option("--model-version", default="1", show_default=True, help="Model version recorded in the bundle.")
@click.option("--window", default=32, show_default=True, help="Window length (readings).")
@click.option("--stride", default=1, show_default=True, help="Step between training windows.")
@click.option("--hidden", default=64, show_default=True, help="Hidden units of the AE and LSTM layers.")
@click.option("--latent", default=16, show_default=True, help="Size of the AE's latent code per reading.")
@click.option("--lstm-layers", default=2, show_default=True, help="Stacked LSTM layers.")
@click.option("--epochs", default=50, show_default=True, help="Maximum epochs (early stopping on validation loss).")
@click.option("--patience", default=5, show_default=True, help="Epochs without improvement before stopping.")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--lr", "learning_rate", default=1e-3, show_default=True, help="Adam learning rate.")
@click.option("--alpha", default=0.5, show_default=True, help="Weight of the reconstruction error.")
@click.option("--beta", default=0.5, show_default=True, help="Weight of the prediction error.")
@click.option(
    "--mode",
    type=click.Choice(["joint", "separate", "ae", "lstm"]),
    default="joint",
    show_default=True,
    help="joint: co-trained AE+LSTM; separate: AE then LSTM; ae/lstm: one part only.",
)
@click.option(
    "--threshold",
    "threshold_method",
    type=click.Choice(["pot", "quantile"]),
    default="pot",
    show_default=True,
    help="Calibrate on normal validation scores by peaks-over-threshold or a quantile.",
)
@click.option("--quantile", default=0.995, show_default=True, help="Quantile for --threshold quantile.")
@click.option("--pot-risk", default=1e-3, show_default=True, help="Exceedance probability for --threshold pot.")
@click.option("--wavelet", default="db4", show_default=True, help="PyWavelets wavelet for denoising.")
@click.option("--wavelet-level", default=1, show_default=True, help="Decomposition levels denoised.")
@click.option("--no-denoise", is_flag=True, help="Skip wavelet denoising.")
@click.option(
    "--out-of-range",
    type=click.Choice(["extrapolate", "clip"]),
    default="extrapolate",
    show_default=True,
    help="Readings outside the training range: score as-is, or clip to it.",
)
@click.option("--seed", default=0, show_default=True)
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
    wavelet,
    wavelet_level,
    no_denoise,
    **hyper,
) -> None:
    """Train the joint AE-LSTM on the normal start of DATA and write a model bundle."""
    from .preprocess import DenoiseConfig
    from .train import TrainConfig, train_series, training_rows

    series = read_series(data, dataset, time_column, label_column, features, delimiter, non_numeric)
    denoise = DenoiseConfig(enabled=not no_denoise, wavelet=wavelet, level=wavelet_level)
    config = TrainConfig(denoise=denoise, **hyper)
    rows = training_rows(series, train_fraction, until_first_anomaly)
    if series.labels is not None and series.labels[:rows].any():
        click.echo(f"warning: {int(series.labels[:rows].sum())} training rows are labelled anomalous", err=True)
    fitted, bundle = train_series(
        series, output, config, rows=rows, name=name, version=model_version, progress=not quiet, threads=threads
    )
    m = bundle.manifest
    click.echo(
        f"trained {bundle.name} v{bundle.version} on {rows} readings × {len(bundle.features)} features in "
        f"{fitted.seconds:.1f}s ({len(fitted.history)} epochs); threshold {bundle.threshold:.4g} "
        f"({m['threshold']['method']}); validation flagged {m['validation']['flagged_fraction']:.2%}"
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
    """Score every full window of DATA with BUNDLE_DIR's model; one CSV row per window end."""
    from .scoring import pointwise_report, score_series

    bundle = load_bundle(bundle_dir)
    series = read_series(data, dataset, time_column, label_column, features, delimiter, non_numeric)
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


MODEL_COMMANDS = (train, score, info, evaluate)
