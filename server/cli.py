"""`aelstm`: the model commands (train, score, info) and the server commands."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import fields
from pathlib import Path

import click

from aelstm.core.cli_options import OneLineErrorGroup
from aelstm.core.errors import AelstmError
from aelstm.training.cli import MODEL_COMMANDS

from .config import ScorerSettings, ServeConfig, load_config, shown_default
from .registry import DEFAULT_FLEET
from .registry import publish as publish_bundle


@click.group(cls=OneLineErrorGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aelstm")
def main() -> None:
    """aelstm: anomaly detection for IoT fleets with a joint autoencoder + LSTM.

    Train a model per fleet on normal history, inspect it, and serve it over gRPC on Ray Serve.
    """


for command in MODEL_COMMANDS:
    main.add_command(command)


@main.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--fleet", required=True, help=f"Fleet the model serves ({DEFAULT_FLEET} for the default model).")
@click.option("--registry", type=click.Path(path_type=Path), default="registry", show_default=True,
              envvar="AELSTM_REGISTRY", help="Registry directory (env AELSTM_REGISTRY).")
def publish(bundle_dir: Path, fleet: str, registry: Path) -> None:
    """Validate BUNDLE_DIR and add it to the registry as the fleet's next version.

    A running `aelstm serve` on the same registry picks it up within its poll interval, without a restart.
    """
    entry = publish_bundle(bundle_dir, registry, fleet)
    click.echo(f"published {entry.bundle.name} as fleet {fleet} version {entry.version} ({entry.bundle.path})")


_CLICK_TYPES = {"int": int, "float": float, "str": str}


def settings_options(kind: type[ScorerSettings]):
    """Click options for every setting `kind` declares: flag, type, choices, help and shown default all come
    from the declaration in `config.py`. Options default to None so that a YAML file can fill what is not given."""

    def decorate(command):
        for spec in reversed(fields(kind)):
            meta = spec.metadata
            help_text = f"{meta['help']} [default: {shown_default(spec)}]"
            base = str(spec.type).split("|")[0].strip()
            if meta.get("envvar") and base.startswith("tuple"):
                command = click.option(meta["flag"], spec.name, multiple=True, envvar=meta["envvar"],
                                       help=help_text)(command)
                continue
            if base == "bool":
                command = click.option(f"--{spec.name.replace('_', '-')}", default=None, is_flag=True,
                                       help=help_text)(command)
                continue
            kind_of_value = click.Choice(meta["choices"]) if meta["choices"] else _CLICK_TYPES[base]
            command = click.option(f"--{spec.name.replace('_', '-')}", default=None, type=kind_of_value,
                                   envvar=meta.get("envvar"), help=help_text)(command)
        return command

    return decorate


@main.command()
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML file of settings (same names as the flags); flags override it.")
@settings_options(ServeConfig)
def serve(config_file: Path | None, **flags) -> None:
    """Serve the registry's models over gRPC (aelstm.v1.AnomalyScorer, health, reflection).

    Starts an embedded local Ray (or joins --ray-address) unless --backend inprocess. Prints the address once
    health is SERVING; Ctrl-C or SIGTERM answers what is in flight and stops cleanly.
    """
    flags["tokens"] = flags["tokens"] or None
    config = load_config(config_file, flags)
    asyncio.run(_serve(config))


async def _serve(config) -> None:
    from . import logs
    from .app import ScoringServer

    logs.configure(config.log_format)
    Path(config.registry).mkdir(parents=True, exist_ok=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signals() -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)

    on_signals()
    server = ScoringServer(config)
    await server.start()
    on_signals()  # again: starting Ray installs its own SIGTERM handler, which would skip the drain
    if stop.is_set():
        await server.stop()
        return
    if hopeless(server):
        await server.stop(0)
        raise AelstmError(f"cannot serve: the registry {config.registry} has no model and the default bundle "
                          f"{config.default_bundle} was refused (see the log above)")
    models = len(server.models.snapshot.entries())
    state = "SERVING" if server.serving else f"NOT_SERVING until a model is published to {config.registry}"
    click.echo(f"aelstm serving on {server.address} (backend {server.backend.name}, {models} model(s), "
               f"health {state})", nl=True)
    sys.stdout.flush()
    await stop.wait()
    click.echo("stopping: answering requests in flight", err=True)
    await server.stop()


def hopeless(server) -> bool:
    """A server that can never serve: its backend is up, yet nothing loaded, and it was given a default bundle
    that failed (a registry that is merely empty waits for `aelstm publish` instead)."""
    return (server.config.default_bundle is not None and server.backend_ready
            and not server.models.snapshot.entries())


@main.command()
@click.option("--ray-address", required=True, envvar="RAY_ADDRESS",
              help="The Ray cluster to deploy on, e.g. auto or 10.0.0.1:6379 (env RAY_ADDRESS).")
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="YAML file of scorer settings (same names as the flags); flags override it.")
@settings_options(ScorerSettings)
def deploy(ray_address: str, config_file: Path | None, **flags) -> None:
    """Deploy (or update in place) the scoring application on a Ray cluster, then exit.

    The application outlives this command: `aelstm serve --ray-address ...` ingresses on any node attach to it,
    and none of them ever deletes it. Remove it with `serve delete aelstm`.
    """
    from . import ray_backend

    settings = load_config(config_file, flags, kind=ScorerSettings)
    ray_backend.configure_ray_environment(ray_address)
    import ray

    ray_backend.init_ray(ray_address, num_cpus=0)
    try:
        ray_backend.deploy(settings)
        replicas = asyncio.run(ray_backend.replica_placement())
    finally:
        ray.shutdown()
    click.echo(f"scoring application deployed on {ray_address}: {len(replicas)} Scorer replica(s) on node(s) "
               f"{', '.join(sorted({node[:12] for node in replicas.values()}))}")
