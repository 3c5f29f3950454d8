"""How the client reaches a server: channel options (TLS, mTLS, token), and gRPC failures as exit codes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path

import grpc

from aelstm.core.errors import AelstmError
from aelstm.v1 import scoring_pb2_grpc

STREAM_SCORE = "/aelstm.v1.AnomalyScorer/StreamScore"
SCORE = "/aelstm.v1.AnomalyScorer/Score"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


class ExitCode(IntEnum):
    """Exit statuses scripts can rely on (listed in `aelstm-client --help`)."""

    OK = 0
    BAD_INPUT = 1
    USAGE = 2
    UNREACHABLE = 3
    TLS = 4
    AUTH = 5
    REJECTED = 6
    CHECK_FAILED = 7
    NOT_SERVING = 8


EXIT_MEANINGS = {
    ExitCode.OK: "success",
    ExitCode.BAD_INPUT: "bad input: a file, option value or data the client cannot use",
    ExitCode.USAGE: "wrong command line (unknown option, missing argument)",
    ExitCode.UNREACHABLE: "server unreachable: down, gone away (watch), wrong --target, or no answer within the "
                          "deadline",
    ExitCode.TLS: "TLS failed: handshake, certificate, or TLS on one side only",
    ExitCode.AUTH: "token missing or refused (UNAUTHENTICATED / PERMISSION_DENIED)",
    ExitCode.REJECTED: "the server refused the request (unknown fleet, bad shape, ...)",
    ExitCode.CHECK_FAILED: "the run finished but messages were lost, messages or items were answered with errors "
                           "(WARMING_UP is none), or no rate met the SLO",
    ExitCode.NOT_SERVING: "health: the server answered but is not SERVING (starting, no model, or no scoring "
                          "backend)",
}


class ClientError(AelstmError):
    """A failure the CLI prints as one line and turns into `exit_code`."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class ConnectionOptions:
    """Everything needed to open a channel to one server."""

    target: str = "127.0.0.1:50051"
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    token: str | None = None
    deadline_s: float = 10.0

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    @property
    def uses_tls(self) -> bool:
        return self.tls or any(p is not None for p in (self.ca, self.cert, self.key))

    def credentials(self) -> grpc.ChannelCredentials | None:
        """TLS credentials (server verified against --ca or the system roots; client cert for mTLS), or None."""
        if not self.uses_tls:
            return None
        if (self.cert is None) != (self.key is None):
            raise ClientError("--cert and --key go together (client certificate for mutual TLS)")
        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca, "--ca"),
            private_key=_read(self.key, "--key"),
            certificate_chain=_read(self.cert, "--cert"),
        )

    def channel(self) -> grpc.aio.Channel:
        """A grpc.aio channel to the target; the caller closes it."""
        if not self.target or self.target.startswith(":") or self.target.endswith(":"):
            raise ClientError(f"bad --target {self.target!r}: expected host:port", ExitCode.BAD_INPUT)
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        credentials = self.credentials()
        if credentials is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        return grpc.aio.secure_channel(self.target, credentials, options=options)


def _read(path: Path | None, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read {option} file {path}: {exc.strerror}") from exc


def stub(channel: grpc.aio.Channel) -> scoring_pb2_grpc.AnomalyScorerStub:
    return scoring_pb2_grpc.AnomalyScorerStub(channel)


_TLS_HINTS = ("ssl", "tls handshake", "certificate", "x509", "wrong_version_number")


def rpc_failure(exc: grpc.RpcError, options: ConnectionOptions, what: str) -> ClientError:
    """One line saying what went wrong and what to check, with the exit code that class of failure gets."""
    code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
    details = (exc.details() if hasattr(exc, "details") else None) or code.name
    details = details.splitlines()[0]
    lowered, target = details.lower(), options.target
    if code == grpc.StatusCode.UNAVAILABLE:
        if any(hint in lowered for hint in _TLS_HINTS):
            if "wrong_version_number" in lowered:
                hint = "the server does not seem to speak TLS" if options.uses_tls else "does it expect --tls?"
            else:
                hint = "check --ca/--cert/--key" if options.uses_tls else "does the server expect --tls?"
            return ClientError(f"TLS with {target} failed ({hint}): {details}", ExitCode.TLS)
        if "socket closed" in lowered:
            hint = "does the server speak TLS?" if options.uses_tls else "the server may expect TLS: add --tls"
            return ClientError(f"{target} closed the connection during set-up ({hint}): {details}", ExitCode.TLS)
        return ClientError(f"cannot reach {target} (is the server running, is --target right?): {details}",
                           ExitCode.UNREACHABLE)
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ClientError(f"{what}: no answer from {target} within the deadline", ExitCode.UNREACHABLE)
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        hint = "pass --token" if options.token is None else "the token was refused"
        return ClientError(f"{what}: {code.name} from {target} ({hint}): {details}", ExitCode.AUTH)
    return ClientError(f"{what}: {code.name} from {target}: {details}", ExitCode.REJECTED)
