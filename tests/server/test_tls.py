"""TLS and mutual TLS on the ingress, with certificates made on the fly for 127.0.0.1."""

from __future__ import annotations

import datetime
import ipaddress

import grpc
import pytest
import pytest_asyncio

from aelstm.server.app import ScoringServer
from aelstm.server.config import ServeConfig
from aelstm.server.registry import publish
from aelstm.v1 import scoring_pb2 as pb
from aelstm.v1 import scoring_pb2_grpc as pb_grpc

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402


def _certificate(name: str, key, issuer=None, issuer_key=None, ca: bool = False):
    subject = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer.subject if issuer else subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if not ca:
        local = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        builder = builder.add_extension(local, critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(item) -> bytes:
    if hasattr(item, "private_bytes"):
        return item.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption())
    return item.public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files and bytes."""
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("test CA", ca_key, ca=True)
    files = {"ca.pem": _pem(ca)}
    for name in ("server", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        files[f"{name}.pem"] = _pem(_certificate(name, key, ca, ca_key))
        files[f"{name}.key"] = _pem(key)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, files


@pytest_asyncio.fixture
async def registry(tmp_path, ec2_bundle):
    publish(ec2_bundle.path, tmp_path, "ec2")
    return tmp_path


async def _list(address: str, credentials) -> int:
    async with grpc.aio.secure_channel(address, credentials) as channel:
        reply = await pb_grpc.AnomalyScorerStub(channel).ListModels(pb.ListModelsRequest(), timeout=10)
    return len(reply.models)


async def _start(registry, folder, mutual: bool) -> ScoringServer:
    server = ScoringServer(ServeConfig(
        port=0, backend="inprocess", registry=str(registry), metrics_port=0, tls_cert=str(folder / "server.pem"),
        tls_key=str(folder / "server.key"), tls_client_ca=str(folder / "ca.pem") if mutual else None))
    await server.start()
    return server


async def test_tls_serves_clients_that_trust_the_ca(registry, pki):
    folder, files = pki
    server = await _start(registry, folder, mutual=False)
    try:
        assert await _list(server.address, grpc.ssl_channel_credentials(files["ca.pem"])) == 1
        async with grpc.aio.insecure_channel(server.address) as channel:
            with pytest.raises(grpc.aio.AioRpcError):
                await pb_grpc.AnomalyScorerStub(channel).ListModels(pb.ListModelsRequest(), timeout=5)
    finally:
        await server.stop(0)


async def test_mutual_tls_needs_a_client_certificate(registry, pki):
    folder, files = pki
    server = await _start(registry, folder, mutual=True)
    try:
        with_cert = grpc.ssl_channel_credentials(files["ca.pem"], files["client.key"], files["client.pem"])
        assert await _list(server.address, with_cert) == 1
        with pytest.raises(grpc.aio.AioRpcError):
            await _list(server.address, grpc.ssl_channel_credentials(files["ca.pem"]))
    finally:
        await server.stop(0)
