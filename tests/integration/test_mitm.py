"""An attacker on the network path, against the default (TLS) master: a frame injected into a
relayed TLS stream is refused, a relay that terminates TLS cannot reuse a client's or a node's
proofs even with a certificate from the cluster's own CA (the proofs are bound to the master's
certificate), and a fake master with its own CA gets nothing from a client or an agent."""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mgpu_client.client import Client
from mgpu_core.config import Address
from mgpu_core.errors import AuthenticationFailed, ConnectionClosed, MasterUnreachable
from mgpu_core.tls import client_context, server_context
from mgpu_server.tlsinit import make_cluster_certs
from tests.helpers.cluster import Cluster, running_cluster, wait_for
from tests.helpers.wire import frame

pytestmark = pytest.mark.timeout(120)

Wrap = Callable[[socket.socket], socket.socket]


class Relay:
    """A man in the middle: accepts a connection (through ``accept_wrap``, e.g. its own TLS),
    opens one to the master (through ``connect_wrap``) and copies bytes both ways."""

    def __init__(self, master_port: int, accept_wrap: Wrap, connect_wrap: Wrap) -> None:
        self.master_port = master_port
        self.accept_wrap, self.connect_wrap = accept_wrap, connect_wrap
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.upstream: socket.socket | None = None
        self.up_ready = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        try:
            raw, _ = self.listener.accept()
            client = self.accept_wrap(raw)
            self.upstream = self.connect_wrap(
                socket.create_connection(("127.0.0.1", self.master_port), timeout=10)
            )
        except OSError:
            self.listener.close()
            return
        finally:
            self.up_ready.set()
        threading.Thread(target=_pipe, args=(self.upstream, client), daemon=True).start()
        _pipe(client, self.upstream)

    def close(self) -> None:
        self.listener.close()


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (src, dst):  # the other direction's copy then ends too
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as c:
        yield c


def test_a_frame_injected_into_a_relayed_tls_stream_is_refused(cluster: Cluster) -> None:
    relay = Relay(cluster.port, accept_wrap=lambda s: s, connect_wrap=lambda s: s)  # raw bytes
    ca = str(cluster.ca_file)
    # The relay passes TLS through untouched: the session works ...
    with Client(Address("127.0.0.1", relay.port, tls_ca=ca), token=cluster.token("alice")) as c:
        assert c.user == "alice"
        assert relay.up_ready.wait(10) and relay.upstream is not None
        # ... until a plaintext frame is slipped into the stream: the master's TLS layer
        # finds a record it cannot authenticate and drops the connection.
        submit = {"t": "submit", "id": 99, "job": {"argv": ["touch", "/tmp/pwned"], "cwd": "/"}}
        relay.upstream.sendall(frame(submit))
        with pytest.raises(ConnectionClosed):
            c.queue()
    relay.close()
    assert cluster.jobs() == {}  # nothing was submitted
    with cluster.client("bob") as bob:  # and the master serves everyone else
        assert bob.queue()["jobs"] == []


def _rogue_cert(cluster: Cluster, tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by the cluster's own CA (as if the CA had mis-issued
    one): trusted by clients, but not the master's."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    tls_dir = cluster.master_state / "tls"
    ca_cert = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((tls_dir / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "rogue.pem", tmp_path / "rogue.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_relay_with_a_trusted_certificate_cannot_reuse_the_proofs(
    cluster: Cluster, tmp_path: Path
) -> None:
    cert, key = _rogue_cert(cluster, tmp_path)
    rogue = server_context(cert, key)
    to_master = client_context(Path(str(cluster.ca_file)))
    relay = Relay(
        cluster.port,
        accept_wrap=lambda s: rogue.wrap_socket(s, server_side=True),
        connect_wrap=lambda s: to_master.wrap_socket(s, server_hostname="127.0.0.1"),
    )
    address = Address("127.0.0.1", relay.port, tls_ca=str(cluster.ca_file))
    # The client's TLS check passes (same CA), but the master's proof is bound to the
    # master's certificate, not the relay's: the client refuses, and sends no proof of its own.
    with pytest.raises(AuthenticationFailed, match="does not know token"):
        Client(address, token=cluster.token("alice"))
    relay.close()
    audit = (cluster.master_state / "audit.log").read_text()
    assert '"client_auth"' not in audit and "event=client_auth" not in audit


def test_a_fake_master_with_its_own_ca_gets_nothing(cluster: Cluster, tmp_path: Path) -> None:
    fake_tls = tmp_path / "fake"
    make_cluster_certs(fake_tls, ["127.0.0.1"], days=1, force=False)
    fake = server_context(fake_tls / "master.pem", fake_tls / "master.key")
    listener = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                raw, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                with fake.wrap_socket(raw, server_side=True) as sock:
                    received.append(sock.recv(65536))
            except (OSError, ssl.SSLError):
                raw.close()  # the peer refused our certificate

    threading.Thread(target=serve, daemon=True).start()
    port = listener.getsockname()[1]
    address = Address("127.0.0.1", port, tls_ca=str(cluster.ca_file))
    with pytest.raises(MasterUnreachable, match=r"CERTIFICATE_VERIFY_FAILED|TLS with the master"):
        Client(address, token=cluster.token("alice"))
    # A node pointed at it stays out, and says why.
    cluster.start_node("n1", 1, master_port=port, wait=False)
    wait_for(lambda: "CERTIFICATE_VERIFY_FAILED" in cluster.log_text("node-n1"), 20, "the refusal")
    listener.close()
    assert received == []  # not even a hello
    assert cluster.nodes_json() == []
