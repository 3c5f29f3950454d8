"""`aelstm`: one command gathering the model commands (train, score, info, ...) of `aelstm.training` and the service
commands (publish, serve, deploy, ...) of `aelstm.server`, so that neither package has to import the other."""

from __future__ import annotations

import click

from aelstm.core.cli_options import OneLineErrorGroup
from aelstm.server.cli import SERVICE_COMMANDS
from aelstm.training.cli import MODEL_COMMANDS


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aelstm")
def main() -> None:
    """aelstm: anomaly detection for IoT fleets with a joint autoencoder + LSTM.

    Train a model per fleet on normal history, inspect it, and serve it over gRPC on Ray Serve.
    """


for command in (*MODEL_COMMANDS, *SERVICE_COMMANDS):
    main.add_command(command)
