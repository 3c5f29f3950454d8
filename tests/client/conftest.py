"""Fixtures: the fake AnomalyScorer on 127.0.0.1 (own thread), and a throw-away TLS certificate."""

from __future__ import annotations

import datetime
import ipaddress
import sys
from pathlib import Path

import pytest

# The fake scorer lives next to these tests (also run standalone by the generator benchmark).
sys.path.insert(0, str(Path(__file__).parent))
from fake_server import FakeBehaviour, FakeServerThread


@pytest.fixture
def behaviour() -> FakeBehaviour:
    return FakeBehaviour()


@pytest.fixture
def fake(behaviour: FakeBehaviour):
    """A running fake; tests change `behaviour` to make it slow, drop an answer or demand a token."""
    with FakeServerThread(behaviour) as server:
        yield server


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost that is its own CA; returns (cert, key) PEM paths.

    Needs the `cryptography` package (installed with grpc's and Ray's dependencies); skips the test without it.
    """
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1)).not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
