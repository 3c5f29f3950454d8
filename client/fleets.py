"""Which fleets a load test feeds: named ones, made-up ones, or by default the fleets the server has.

A server scores a fleet id it has no model for with its default model, and refuses it when it has none: made-up
fleet names (`-F N`) only work against a server with a default model, so by default the load goes to the fleets the
server lists, its default model under the fleet name `default`.
"""

from __future__ import annotations

from aelstm.v1 import scoring_pb2 as pb

from .connection import ClientError, ConnectionOptions, ExitCode
from .queries import list_models
from .workload import fleet_names

DEFAULT_MODEL_FLEET = "default"


def server_fleets(models: list[pb.ModelInfo]) -> list[str]:
    """Every fleet with a model of its own, then `default` for the default model (an id the server does not know)."""
    named = [m.fleet_id for m in models if not m.is_default]
    default = [DEFAULT_MODEL_FLEET] if any(m.is_default for m in models) and DEFAULT_MODEL_FLEET not in named else []
    return named + default


async def load_fleets(options: ConnectionOptions, fleet_ids: tuple[str, ...], fleet_count: int | None,
                      ) -> tuple[list[str], str]:
    """The fleets to feed, and a phrase saying where they came from (for the report)."""
    if fleet_ids:
        return list(fleet_ids), "named with --fleet"
    models = await list_models(options)
    known = server_fleets(models)
    if fleet_count is None:
        if not known:
            raise ClientError(f"{options.target} has no models to load-test", ExitCode.REJECTED)
        return known, "from the server's ListModels; its default model counts as fleet 'default'"
    made_up = fleet_names(fleet_count)
    if not any(m.is_default for m in models) and set(made_up) - set(known):
        raise ClientError(f"-F {fleet_count} makes up fleets {', '.join(made_up)}, which only a default model could "
                          f"score, and {options.target} has none; its fleets: {', '.join(known) or 'none'} (leave "
                          "out -F to load them all, or pick with --fleet)", ExitCode.REJECTED)
    return made_up, f"-F {fleet_count}: made-up names, scored by the default model"
