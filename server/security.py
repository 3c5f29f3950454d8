"""Transport security and bearer tokens for the ingress: TLS (optionally mutual) and `authorization: Bearer`.

Tokens are held only as sha256 digests. A token grants either every fleet (`--token` / AELSTM_TOKENS) or the
fleets named for it in a tokens file (`--tokens-file` / AELSTM_TOKENS_FILE):

    # token (plain, hashed when read) or sha256:<hex digest, `printf %s TOKEN | sha256sum`>: its fleets
    sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08: [machines, pumps]
    s3cret-gateway-token: machines
    ops-token: "*"                    # every fleet

The interceptor authenticates the call (UNAUTHENTICATED otherwise) and hands the token's fleets to the service
through `granted_fleets()`, which authorises each request against them.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import ipaddress
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import grpc
import yaml

from aelstm.core.errors import AelstmError

# Load balancers and orchestrators probe health without credentials; reflection only describes the public API.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
                 "/grpc.reflection.v1.ServerReflection/")
PERMISSION_DENIED = grpc.StatusCode.PERMISSION_DENIED.value[0]
ALL_FLEETS = "*"
_DIGEST = re.compile(r"sha256:([0-9a-fA-F]{64})")

# The fleets the current call's token grants: None means every fleet (also when no tokens are configured).
_GRANT: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("aelstm_grant", default=None)
# Told of each refusal ("UNAUTHENTICATED" or "PERMISSION_DENIED"): the server's metrics, set with the grant.
Denied = Callable[[str], None]
_ON_DENIED: contextvars.ContextVar[Denied | None] = contextvars.ContextVar("aelstm_on_denied", default=None)


def granted_fleets() -> frozenset[str] | None:
    """Fleets the token of the call being served may use; None: every fleet."""
    return _GRANT.get()


def allowed(fleet: str) -> bool:
    """Whether the call's token grants `fleet`; a refusal is counted (callers answer it PERMISSION_DENIED)."""
    grant = _GRANT.get()
    if grant is None or fleet in grant:
        return True
    on_denied = _ON_DENIED.get()
    if on_denied is not None:
        on_denied("PERMISSION_DENIED")
    return False


def denied_message(fleet: str) -> str:
    return f"this token does not grant fleet {fleet!r}"


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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


def read_tokens_file(path: str | Path) -> dict[str, frozenset[str] | None]:
    """sha256 digest -> fleets (None: every fleet) from a YAML mapping of token-or-digest: fleets."""
    try:
        data = yaml.safe_load(_read(path, "tokens file"))
    except yaml.YAMLError as exc:
        raise AelstmError(f"tokens file {path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise AelstmError(f"tokens file {path} must be a mapping of `token or sha256:<digest>: fleet, fleet`")
    grants: dict[str, frozenset[str] | None] = {}
    for n, (key, value) in enumerate(data.items(), 1):
        if not isinstance(key, str) or not key:
            raise AelstmError(f"tokens file {path}: entry {n} has an empty or non-text token")
        fleets = [f.strip() for f in value.split(",")] if isinstance(value, str) else value
        if not isinstance(fleets, list) or not fleets or not all(isinstance(f, str) and f for f in fleets):
            raise AelstmError(f"tokens file {path}: entry {n} must name at least one fleet (or \"*\")")
        matched = _DIGEST.fullmatch(key)
        grants[matched.group(1).lower() if matched else digest(key)] = (
            None if ALL_FLEETS in fleets else frozenset(fleets))
    return grants


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Rejects calls whose `authorization` metadata is not `Bearer <a known token>` (scheme case-insensitive, RFC
    6750) with UNAUTHENTICATED; lets the others through with their token's fleets (`granted_fleets()`)."""

    def __init__(self, tokens: Iterable[str] = (), grants: dict[str, frozenset[str] | None] | None = None,
                 on_denied: Denied | None = None) -> None:
        tokens = list(tokens)
        self._on_denied = on_denied
        if any(not t for t in tokens):
            raise AelstmError("bearer tokens must be non-empty strings")
        self._grants: dict[str, frozenset[str] | None] = dict(grants or {})
        for token in tokens:
            self._grants[digest(token)] = None
        if not self._grants:
            raise AelstmError("bearer tokens must be non-empty strings")

    def grant_of(self, metadata) -> tuple[bool, frozenset[str] | None]:
        """(known token?, its fleets)."""
        for key, value in metadata or ():
            if key != "authorization" or not isinstance(value, str):
                continue
            scheme, _, offered = value.partition(" ")
            if scheme.lower() != "bearer" or not offered.strip():
                return False, None
            offered_digest = digest(offered.strip())
            found, fleets = False, None
            for known, grant in self._grants.items():  # compare with every digest: no early exit
                if hmac.compare_digest(offered_digest, known):
                    found, fleets = True, grant
            return found, fleets
        return False, None

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(OPEN_SERVICES):
            return handler
        known, fleets = self.grant_of(handler_call_details.invocation_metadata)
        if not known:
            if self._on_denied is not None:
                self._on_denied("UNAUTHENTICATED")
            return _rejecting(handler)
        return handler if fleets is None else _granting(handler, fleets, self._on_denied)


def token_interceptors(tokens: Iterable[str], tokens_file: str | None,
                       on_denied: Denied | None = None) -> list[grpc.aio.ServerInterceptor]:
    """The interceptor for the configured tokens, or none when no token is configured (no authentication);
    `on_denied` counts the calls it refuses and the fleets it denies."""
    tokens = list(tokens)
    if not tokens and not tokens_file:
        return []
    grants = read_tokens_file(tokens_file) if tokens_file else None
    return [BearerTokenInterceptor(tokens, grants, on_denied)]


def _kind(handler: grpc.RpcMethodHandler) -> str:
    """`unary_unary`, `unary_stream`, `stream_unary` or `stream_stream`: grpc's names for the four call shapes."""
    return f"{'stream' if handler.request_streaming else 'unary'}_{'stream' if handler.response_streaming else 'unary'}"


def _like(handler: grpc.RpcMethodHandler, answering, streaming) -> grpc.RpcMethodHandler:
    """A handler of the same shape as `handler`: `streaming` (an async generator) where it streams responses,
    `answering` (a coroutine) where it answers once."""
    behaviour = streaming if handler.response_streaming else answering
    return getattr(grpc, f"{_kind(handler)}_rpc_method_handler")(
        behaviour, request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer)


def _granting(handler: grpc.RpcMethodHandler, fleets: frozenset[str],
              on_denied: Denied | None) -> grpc.RpcMethodHandler:
    """The same handler, run with `fleets` as the call's grant (tasks it starts inherit it)."""
    original = getattr(handler, _kind(handler))

    async def answering(request, context):
        _GRANT.set(fleets)
        _ON_DENIED.set(on_denied)
        return await original(request, context)

    async def streaming(request, context):
        _GRANT.set(fleets)
        _ON_DENIED.set(on_denied)
        async for response in original(request, context):
            yield response

    return _like(handler, answering, streaming)


def _rejecting(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """A handler of the same shape that fails with UNAUTHENTICATED."""
    message = "missing or invalid token: send metadata `authorization: Bearer <token>`"

    async def answering(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def streaming(request, context):
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - makes this an async generator

    return _like(handler, answering, streaming)
