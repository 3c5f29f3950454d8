"""Command-line pieces every aelstm command shares: one-line errors and the options that read a dataset file."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import click

from .data import LOADERS, NON_NUMERIC_POLICIES, NonNumericWarning, Series
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
