"""The check a joining host makes of a master before it proves anything (mgpu_node.pinning):
the pinned CA, a certificate from it, current, for the name dialled."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509

from mgpu_core.errors import AuthenticationFailed
from mgpu_core.joining import ca_hash
from mgpu_core.tls import cert_der
from mgpu_node.pinning import check_master
from mgpu_server.tlsinit import make_cluster_certs


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A cluster CA and a master certificate for master.lab and 127.0.0.1; another cluster's."""
    ours, theirs = tmp_path_factory.mktemp("ours"), tmp_path_factory.mktemp("theirs")
    make_cluster_certs(ours, ["master.lab", "127.0.0.1"], days=1, force=False)
    make_cluster_certs(theirs, ["master.lab", "127.0.0.1"], days=1, force=False)
    return ours, theirs


def test_the_pinned_master_passes(certs: tuple[Path, Path]) -> None:
    ours, _ = certs
    pem = (ours / "ca.pem").read_text()
    leaf = cert_der(ours / "master.pem")
    for host in ("master.lab", "MASTER.LAB.", "127.0.0.1"):
        check_master(pem, leaf, host=host, pinned=ca_hash(pem))


def test_a_master_that_is_not_the_pinned_one_is_refused(certs: tuple[Path, Path]) -> None:
    ours, theirs = certs
    pem, their_pem = (ours / "ca.pem").read_text(), (theirs / "ca.pem").read_text()
    leaf, their_leaf = cert_der(ours / "master.pem"), cert_der(theirs / "master.pem")
    pinned = ca_hash(pem)
    # Another CA than the pinned one (another cluster, or someone on the master's address).
    with pytest.raises(AuthenticationFailed, match="does not match --ca-hash"):
        check_master(their_pem, their_leaf, host="master.lab", pinned=pinned)
    # The pinned CA sent along, but the TLS channel showed another CA's certificate.
    with pytest.raises(AuthenticationFailed, match=r"not (from|signed by) its CA"):
        check_master(pem, their_leaf, host="master.lab", pinned=pinned)
    # The right certificate, dialled by a name it is not for.
    with pytest.raises(AuthenticationFailed, match=r"not for other\.lab"):
        check_master(pem, leaf, host="other.lab", pinned=pinned)
    with pytest.raises(AuthenticationFailed, match=r"not for 10\.0\.0\.1"):
        check_master(pem, leaf, host="10.0.0.1", pinned=pinned)


def test_an_expired_master_certificate_is_refused(certs: tuple[Path, Path]) -> None:
    """A certificate from the pinned CA, but past its end (re-signed here with the CA key)."""
    from cryptography.hazmat.primitives import hashes, serialization

    ours, _ = certs
    ca = x509.load_pem_x509_certificate((ours / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((ours / "ca.key").read_bytes(), None)
    leaf = x509.load_pem_x509_certificate((ours / "master.pem").read_bytes())
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)
    builder = (
        x509.CertificateBuilder()
        .subject_name(leaf.subject)
        .issuer_name(ca.subject)
        .public_key(leaf.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(past - datetime.timedelta(days=1))
        .not_valid_after(past)
        .add_extension(
            leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value, False
        )
    )
    expired = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    pem = (ours / "ca.pem").read_text()
    with pytest.raises(AuthenticationFailed, match="not valid now"):
        check_master(
            pem,
            expired.public_bytes(serialization.Encoding.DER),
            host="master.lab",
            pinned=ca_hash(pem),
        )
