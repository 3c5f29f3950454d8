"""Command-line pieces every aelstm command shares: one-line errors and the options that read a dataset file."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import click

from .data import LABEL_NAMES, LOADERS, NON_NUMERIC_POLICIES, ColumnNotice, NonNumericWarning, Series
from .errors import AelstmError

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


def _split_names(_context: click.Context, _parameter: click.Parameter, value: str | None) -> tuple[str, ...] | None:
    return tuple(name.strip() for name in value.split(",")) if value else None


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
        click.option(
            "--label-column",
            help=f"CSV: name of the 0/1 label column [default: the first column named {'/'.join(LABEL_NAMES)} "
            "(any case) that holds only 0 and 1, if any].",
        ),
        click.option(
            "--features",
            callback=_split_names,
            help="CSV: comma-separated feature columns [default: every column that holds numbers, except the time and "
            "label columns, other label-named columns and row indices (integers that rise by one every row from 0 "
            "or 1, or rise every row under a name such as index, Unnamed: 0 or timestamp)].",
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
    path: Path, dataset: str, time_column, label_column, features: Sequence[str] | None, delimiter, non_numeric: str
) -> Series:
    """Read a dataset file as the data options say; text cells read as missing are one `warning:` line, columns
    a CSV's defaults set aside one `note:` line."""
    prefixes = {NonNumericWarning: "warning", ColumnNotice: "note"}
    with warnings.catch_warnings(record=True) as caught:
        for category in prefixes:
            warnings.simplefilter("always", category)
        if dataset == "csv":
            series = LOADERS["csv"](
                path,
                time_column=time_column,
                label_column=label_column,
                feature_columns=features,
                delimiter=delimiter,
                non_numeric=non_numeric,
            )
        else:
            series = LOADERS[dataset](path, non_numeric=non_numeric)
    for warning in caught:
        if warning.category in prefixes:
            click.echo(f"{prefixes[warning.category]}: {warning.message}", err=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return series


def echo_features(series: Series) -> None:
    """One stderr line naming the feature columns read, so a wrong default choice is seen before it matters."""
    click.echo(f"features ({len(series.feature_names)}): {', '.join(series.feature_names)}", err=True)
