"""The service commands of `aelstm` (publish, registry, serve, deploy, undeploy, status): `aelstm.cli` gathers them
with the model commands."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path

import click

from aelstm.core.errors import AelstmError

from .config import ScorerSettings, ServeConfig, cpu_shortfall, load_config, shown_default
from .registry import DEFAULT_FLEET, list_versions
from .registry import pin as pin_version
from .registry import publish as publish_bundle
from .registry import rollback as rollback_fleet
from .registry import unpin as unpin_version

REGISTRY_OPTION = click.option("--registry", type=click.Path(path_type=Path), default="registry", show_default=True,
                               envvar="AELSTM_REGISTRY", help="Registry directory (env AELSTM_REGISTRY).")
RAY_ADDRESS_OPTION = click.option("--ray-address", required=True, envvar="RAY_ADDRESS",
                                  help="The Ray cluster, e.g. auto or 10.0.0.1:6379 (env RAY_ADDRESS).")


@click.command()
@click.argument("bundle_dir", type=click.Path(path_type=Path))
@click.option("--fleet", required=True, help=f"Fleet the model serves ({DEFAULT_FLEET} for the default model).")
@REGISTRY_OPTION
def publish(bundle_dir: Path, fleet: str, registry: Path) -> None:
    """Validate BUNDLE_DIR and add it to the registry as the fleet's next version.

    Version numbers are never reused, even after a version folder was deleted. A running `aelstm serve` on the
    same registry picks the new version up within its poll interval, without a restart.
    """
    published(publish_bundle(bundle_dir, registry, fleet))


def published(entry) -> None:
    click.echo(f"published {entry.bundle.name} as fleet {entry.fleet} version {entry.version} "
               f"(sha256 {entry.digest[:12]}, {entry.bundle.path})")


@click.group()
def registry() -> None:
    """Inspect the model registry, roll a fleet back, pin a fleet to a version."""


@registry.command("list")
@REGISTRY_OPTION
@click.option("--fleet", help="Only this fleet.")
def registry_list(registry: Path, fleet: str | None) -> None:
    """Every version of every fleet: served (what an ingress on this registry serves), present (older), refused
    (invalid, or not the content published under its number) or deleted (its number stays used)."""
    rows = [r for r in list_versions(registry) if fleet is None or r.fleet == fleet]
    if not rows:
        click.echo(f"no versions in {registry}")
        return
    click.echo(f"{'fleet':<16} {'version':>7}  {'state':<8} {'sha256':<12}  {'published':<25} note")
    for r in rows:
        click.echo(f"{r.fleet:<16} {r.version:>7}  {r.state:<8} {r.digest[:12]:<12}  {r.published_at:<25} {r.note}")


@registry.command("rollback")
@click.argument("fleet")
@click.option("--to", "version", help="Version whose content to serve again [default: the one below the newest].")
@REGISTRY_OPTION
def registry_rollback(fleet: str, version: str | None, registry: Path) -> None:
    """Serve an earlier version's content again, published as a new version (a number is never reused), so every
    ingress on the registry moves to it within its poll interval."""
    published(rollback_fleet(registry, fleet, version))


@registry.command("pin")
@click.argument("fleet")
@click.argument("version")
@REGISTRY_OPTION
def registry_pin(fleet: str, version: str, registry: Path) -> None:
    """Serve VERSION of FLEET whatever is published after it (retraining, train-fleets) until `unpin`; every
    ingress on the registry moves to it within its poll interval. A pinned version that is deleted or refused
    falls back to the newest valid one."""
    pin_version(registry, fleet, version)
    click.echo(f"fleet {fleet} pinned to version {version}")


@registry.command("unpin")
@click.argument("fleet")
@REGISTRY_OPTION
def registry_unpin(fleet: str, registry: Path) -> None:
    """Serve FLEET's newest valid version again."""
    was = unpin_version(registry, fleet)
    click.echo(f"fleet {fleet} unpinned (was pinned to version {was})" if was else f"fleet {fleet} was not pinned")


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


@click.command()
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
    if config.backend == "ray" and config.ray_address is None:
        warn_if_short_of_cpus(config, config.ray_cpus, "the embedded Ray (--ray-cpus)")
    asyncio.run(_serve(config))


def warn_if_short_of_cpus(settings: ScorerSettings, cpus: float, where: str) -> None:
    shortfall = cpu_shortfall(settings, cpus)
    if shortfall:
        click.echo(f"warning: {shortfall} on {where}", err=True)


async def _serve(config) -> None:
    from . import logs
    from .app import ScoringServer

    if config.backend == "ray":
        from . import ray_backend

        ray_backend.configure_ray_environment(config.ray_address)  # before Ray is imported, as it reads it then
        import ray.serve  # noqa: F401  - Ray and Serve install log handlers at import: `logs.configure` replaces them
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
    if server.serving:
        click.echo(f"aelstm serving on {server.address} (backend {server.backend.name}, {models} model(s), "
                   f"health SERVING)")
    else:
        waits_for = "a model is published to " + config.registry if server.backend_ready else "the scoring backend runs"
        click.echo(f"aelstm listening on {server.address} (backend {server.backend.name}, {models} model(s), "
                   f"health NOT_SERVING until {waits_for})")
    sys.stdout.flush()
    await stop.wait()
    logging.getLogger(__name__).info("stopping: answering requests in flight")  # in the log's format
    await server.stop()


def hopeless(server) -> bool:
    """A server that can never serve: its backend is up, yet nothing loaded, and it was given a default bundle
    that failed (a registry that is merely empty waits for `aelstm publish` instead)."""
    return (server.config.default_bundle is not None and server.backend_ready
            and not server.models.snapshot.entries())


@click.command()
@RAY_ADDRESS_OPTION
@click.option("--config", "config_file", type=click.Path(path_type=Path),
              help="The settings file `aelstm serve --config` reads (server/serve.example.yaml): its scorer keys "
                   "(replicas ... device) shape the application; flags override them.")
@click.option("--dry-run", is_flag=True, help="Check the settings and the cluster's CPUs, print the Ray Serve "
                                              "config that would be deployed, and change nothing.")
@settings_options(ScorerSettings)
def deploy(ray_address: str, config_file: Path | None, dry_run: bool, **flags) -> None:
    """Deploy (or update in place) the scoring application on a Ray cluster, then exit.

    Deploying again applies only what changed: the same settings restart nothing; batching, onnxruntime threads and
    replica counts reach the running replicas; CPUs, GPUs, models per replica and the device roll the replicas over
    (ingresses hold their calls meanwhile, up to their --backend-grace-s).

    The application outlives this command: `aelstm serve --ray-address ...` ingresses on any node attach to it,
    and none of them ever deletes it. Remove it with `aelstm undeploy`.
    """
    from . import ray_backend

    settings = scorer_settings(config_file, flags)
    with ray_backend_session(ray_address) as ray:
        warn_if_short_of_cpus(settings, ray.cluster_resources().get("CPU", 0), f"the Ray cluster at {ray_address}")
        if dry_run:
            click.echo(serve_config_yaml(settings), nl=False)
            return
        ray_backend.deploy(settings)
        replicas = asyncio.run(ray_backend.replica_placement())
    click.echo(f"scoring application deployed on {ray_address}: {len(replicas)} Scorer replica(s) on node(s) "
               f"{', '.join(sorted({node[:12] for node in replicas.values()}))}")


def scorer_settings(config_file: Path | None, flags: dict) -> ScorerSettings:
    """The scorer part of the `aelstm serve` settings file (checked whole, so one file serves both commands),
    then the flags."""
    base = load_config(config_file, {}).scorer() if config_file else ScorerSettings()
    return ScorerSettings.from_mapping(flags, base=base)


@click.command()
@RAY_ADDRESS_OPTION
def undeploy(ray_address: str) -> None:
    """Delete the scoring application from a Ray cluster (ingresses attached to it turn NOT_SERVING)."""
    from ray import serve

    from .scoring_app import APP_NAME

    with ray_backend_session(ray_address):
        if APP_NAME not in serve.status().applications:
            click.echo(f"no scoring application {APP_NAME!r} on {ray_address}: nothing to delete")
            return
        serve.delete(APP_NAME)
    click.echo(f"scoring application {APP_NAME!r} deleted from {ray_address}")


@click.command()
@click.option("--ray-address", envvar="RAY_ADDRESS", help="The Ray cluster to report on (env RAY_ADDRESS).")
@click.option("--ingress", "ingresses", multiple=True, metavar="HOST:PORT",
              help="An ingress to ask for its health and models (repeatable).")
@click.option("--token", envvar="AELSTM_CLIENT_TOKEN", help="Bearer token for the ingresses (env AELSTM_CLIENT_TOKEN).")
def status(ray_address: str | None, ingresses: tuple[str, ...], token: str | None) -> None:
    """One view of a deployment: the cluster's nodes, the scoring application and its replicas per node, and for
    each --ingress its health and the model version it serves per fleet. Exits 1 unless all of it is serving."""
    from aelstm.client.connection import ConnectionOptions

    from .status import cluster_report, ingress_report

    if not ray_address and not ingresses:
        raise click.UsageError("name a cluster (--ray-address) or an ingress (--ingress), or both")
    healthy = True
    if ray_address:
        with ray_backend_session(ray_address):
            lines, running = cluster_report()
        click.echo("\n".join(lines))
        healthy = running
    for target in ingresses:
        lines, serving = asyncio.run(ingress_report(ConnectionOptions(target=target, token=token, deadline_s=5.0)))
        click.echo("\n".join(lines))
        healthy = healthy and serving
    if not healthy:
        raise AelstmError("not everything is serving (see above)")


@contextmanager
def ray_backend_session(ray_address: str):
    """Join the cluster as a driver that reserves no CPU; always disconnect."""
    from . import ray_backend

    ray_backend.configure_ray_environment(ray_address)
    import ray

    ray_backend.init_ray(ray_address, num_cpus=0)
    try:
        yield ray
    finally:
        ray.shutdown()


def serve_config_yaml(settings: ScorerSettings) -> str:
    """The same application as a Ray Serve config (`serve deploy`, or a RayService's serveConfigV2)."""
    import yaml

    from .scoring_app import app_config

    return yaml.safe_dump({"proxy_location": "Disabled", "applications": [app_config(settings)]}, sort_keys=False)


SERVICE_COMMANDS = (publish, registry, serve, deploy, undeploy, status)
