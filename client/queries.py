"""The small RPCs: what models the server has, and the anomalies it publishes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import grpc
import numpy as np

from aelstm.v1 import scoring_pb2 as pb

from .connection import ClientError, ConnectionOptions, ExitCode, rpc_failure, stub


async def list_models(options: ConnectionOptions) -> list[pb.ModelInfo]:
    async with options.channel() as channel:
        try:
            response = await stub(channel).ListModels(pb.ListModelsRequest(), metadata=options.metadata,
                                                      timeout=options.deadline_s)
        except grpc.RpcError as exc:
            raise rpc_failure(exc, options, "ListModels") from None
    return list(response.models)


async def get_model(options: ConnectionOptions, fleet_id: str) -> pb.ModelInfo:
    async with options.channel() as channel:
        try:
            return await stub(channel).GetModel(pb.GetModelRequest(fleet_id=fleet_id), metadata=options.metadata,
                                                timeout=options.deadline_s)
        except grpc.RpcError as exc:
            raise rpc_failure(exc, options, f"GetModel for fleet {fleet_id!r}") from None


def training_range(info: pb.ModelInfo) -> tuple[np.ndarray, np.ndarray] | None:
    """The model's per-feature training minimum and maximum (from its manifest), if the server shares them."""
    try:
        scaler = json.loads(info.manifest_json)["preprocessing"]["scaler"]
        return np.asarray(scaler["min"], np.float64), np.asarray(scaler["max"], np.float64)
    except (ValueError, KeyError, TypeError):
        return None


async def watch_anomalies(options: ConnectionOptions, fleet_id: str, *, count: int | None = None,
                          timeout_s: float | None = None) -> AsyncIterator[pb.Anomaly]:
    """Anomalies as the server publishes them, until `count` arrived or `timeout_s` passed (if given).

    The stream has no end of its own: the server closing it or the connection dropping before then raises
    (UNREACHABLE), so that a script watching cannot take a server that went away for a quiet one.
    """
    async with options.channel() as channel:
        connected = asyncio.ensure_future(channel.channel_ready())
        call = stub(channel).WatchAnomalies(pb.WatchAnomaliesRequest(fleet_id=fleet_id), metadata=options.metadata)
        loop = asyncio.get_running_loop()
        end = None if timeout_s is None else loop.time() + timeout_s
        seen = 0
        try:
            while count is None or seen < count:
                remaining = None if end is None else end - loop.time()
                if remaining is not None and remaining <= 0:
                    break
                try:
                    anomaly = await asyncio.wait_for(call.read(), remaining)
                except TimeoutError:
                    break
                if anomaly is grpc.aio.EOF:
                    raise ClientError(f"{options.target} ended the watch (is the server shutting down?)",
                                      ExitCode.UNREACHABLE)
                seen += 1
                yield anomaly
        except grpc.RpcError as exc:
            if connected.done() and exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise ClientError(f"lost the connection to {options.target} while watching: {exc.details()}",
                                  ExitCode.UNREACHABLE) from None
            raise rpc_failure(exc, options, "WatchAnomalies") from None
        finally:
            connected.cancel()
            call.cancel()


async def wait_until_serving(options: ConnectionOptions, wait_s: float, poll_s: float = 0.5) -> str:
    """Poll the standard grpc.health.v1 service until it reports SERVING or `wait_s` has passed; returns the last
    status name (SERVING, NOT_SERVING, ...)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    loop = asyncio.get_running_loop()
    end = loop.time() + wait_s
    async with options.channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                response = await health.Check(health_pb2.HealthCheckRequest(), metadata=options.metadata,
                                              timeout=options.deadline_s)
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
            except grpc.RpcError as exc:
                if loop.time() >= end:
                    raise rpc_failure(exc, options, "health check") from None
                status = "UNREACHABLE"
            if status == "SERVING" or loop.time() >= end:
                return status
            await asyncio.sleep(poll_s)
