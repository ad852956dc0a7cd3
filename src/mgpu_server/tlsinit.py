"""``mgpu_master init``: a self-signed CA and the master's certificate for a small cluster.

Uses the ``cryptography`` package (Python's ssl module can use certificates but not make
them). The CA key stays on the master's host; only ``ca.pem`` is copied to nodes and clients,
which trust nothing else for the master's TCP port. Keys are EC P-256 (small and fast; every
TLS 1.2+ peer accepts them).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPublicKeyTypes

from mgpu_core.constants import CA_CERT_FILE, CA_KEY_FILE, MASTER_CERT_FILE, MASTER_KEY_FILE
from mgpu_core.errors import ConfigError

FILES = (CA_CERT_FILE, CA_KEY_FILE, MASTER_CERT_FILE, MASTER_KEY_FILE)


def default_hosts() -> list[str]:
    """Names a client may use for this host: its name, FQDN, and loopback."""
    names = {socket.gethostname(), socket.getfqdn(), "localhost", "127.0.0.1", "::1"}
    return sorted(n for n in names if n)


def make_cluster_certs(directory: Path, hosts: list[str], *, days: int, force: bool) -> None:
    """Write ca.pem/ca.key and master.pem/master.key (keys 0600) into ``directory``."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    existing = [name for name in FILES if (directory / name).exists()]
    if existing and not force:
        raise ConfigError(f"{directory / existing[0]} exists: use --force to replace it")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    until = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"mgpu CA ({socket.gethostname()})")
    ca_cert = (
        _builder(ca_name, ca_name, ca_key.public_key(), now, until)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _builder(_name(hosts[0]), ca_name, key.public_key(), now, until)
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    for file_name, data, private in (
        (CA_CERT_FILE, ca_cert.public_bytes(pem), False),
        (CA_KEY_FILE, _key_bytes(ca_key), True),
        (MASTER_CERT_FILE, cert.public_bytes(pem), False),
        (MASTER_KEY_FILE, _key_bytes(key), True),
    ):
        _write(directory / file_name, data, 0o600 if private else 0o644)


def ensure_cluster_certs(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """The master's certificate and key in ``directory``, made with the cluster CA on first
    start (as the cluster key is). Files from ``mgpu_master init`` are kept as they are; a
    partial set (a CA without the master's certificate) is refused rather than replaced."""
    cert, key = directory / MASTER_CERT_FILE, directory / MASTER_KEY_FILE
    if cert.exists() and key.exists():
        return cert, key
    present = [name for name in FILES if (directory / name).exists()]
    if present:
        raise ConfigError(
            f"{directory} holds {', '.join(present)} but not the master's certificate and key: "
            "restore them, or run mgpu_master init --force (nodes and clients then need the "
            "new ca.pem)"
        )
    make_cluster_certs(directory, hosts, days=3650, force=False)
    return cert, key


def _name(common: str) -> x509.Name:
    from cryptography.x509.oid import NameOID

    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "mgpu cluster"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: CertificateIssuerPublicKeyTypes,
    now: datetime.datetime,
    until: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(minutes=5))  # tolerate clock skew
        .not_valid_after(until)
    )


def _ca_key_usage() -> x509.KeyUsage:
    """A CA that signs certificates (and CRLs), nothing else."""
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _key_bytes(key: object) -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)
