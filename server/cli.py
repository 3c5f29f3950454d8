"""`aelstm`: the model commands (train, score, info) and the server commands."""

from __future__ import annotations

import sys

import click

from aelstm.training.cli import MODEL_COMMANDS
from aelstm.training.errors import AelstmError


class FriendlyGroup(click.Group):
    """Turns known errors into a one-line message and exit status 1 (no traceback)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except AelstmError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aelstm")
def main() -> None:
    """aelstm: anomaly detection for IoT fleets with a joint autoencoder + LSTM.

    Train a model per fleet on normal history, inspect it, and serve it over gRPC on Ray Serve.
    """


for command in MODEL_COMMANDS:
    main.add_command(command)
