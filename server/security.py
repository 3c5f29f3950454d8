"""Transport security and bearer tokens for the ingress: TLS (optionally mutual) and `authorization: Bearer`."""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc

from aelstm.training.errors import AelstmError

# Load balancers and orchestrators probe health without credentials.
OPEN_SERVICES = ("/grpc.health.v1.Health/",)


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise AelstmError(f"cannot read {what} {path}: {exc.strerror}") from exc


def server_credentials(cert: str | Path, key: str | Path, client_ca: str | Path | None = None):
    """TLS credentials; with `client_ca`, clients must present a certificate it signed (mTLS)."""
    pair = [(_read(key, "TLS key"), _read(cert, "TLS certificate"))]
    if client_ca is None:
        return grpc.ssl_server_credentials(pair)
    return grpc.ssl_server_credentials(pair, root_certificates=_read(client_ca, "client CA"),
                                       require_client_auth=True)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls whose `authorization` metadata is not `Bearer <one of tokens>` with UNAUTHENTICATED."""

    def __init__(self, tokens: list[str]) -> None:
        if not tokens or any(not t for t in tokens):
            raise AelstmError("bearer tokens must be non-empty strings")
        self._tokens = [t.encode() for t in tokens]

    def _allowed(self, metadata) -> bool:
        for key, value in metadata or ():
            if key == "authorization" and isinstance(value, str) and value.startswith("Bearer "):
                offered = value[len("Bearer "):].encode()
                return any(hmac.compare_digest(offered, token) for token in self._tokens)
        return False

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        if self._allowed(handler_call_details.invocation_metadata):
            return handler
        return _rejecting(handler)


def _rejecting(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same kind that fails with UNAUTHENTICATED."""
    message = "missing or invalid token: send metadata `authorization: Bearer <token>`"

    async def unary(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    kwargs = {"request_deserializer": handler.request_deserializer,
              "response_serializer": handler.response_serializer}
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(streaming, **kwargs)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(unary, **kwargs)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(streaming, **kwargs)
    return grpc.unary_unary_rpc_method_handler(unary, **kwargs)
