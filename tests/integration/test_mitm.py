"""An attacker on the network path, against the default (TLS) master: a frame injected into a
relayed TLS stream is refused, a relay that terminates TLS cannot reuse a client's or a node's
proofs even with a certificate from the cluster's own CA (the proofs are bound to the master's
certificate), and a fake master with its own CA gets nothing from a client or an agent."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
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


class Relay:
    """A man in the middle: accepts one connection (with ``accept_tls``, its own TLS, or raw),
    opens one to the master (with ``connect_tls``, or raw) and copies bytes both ways.

    It runs on one asyncio loop in its own thread: an SSL socket read in one thread while
    written in another is not safe in OpenSSL (the relay itself hung that way under load)."""

    def __init__(
        self,
        master_port: int,
        accept_tls: ssl.SSLContext | None = None,
        connect_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.master_port = master_port
        self.accept_tls, self.connect_tls = accept_tls, connect_tls
        self.up_ready = threading.Event()
        self._upstream: asyncio.StreamWriter | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self._thread.start()
        assert started.wait(10), "the relay did not start"
        assert self._server is not None
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _run(self, started: threading.Event) -> None:
        async def listen() -> None:
            self._server = await asyncio.start_server(
                self._relay, "127.0.0.1", 0, ssl=self.accept_tls
            )
            started.set()

        self._loop.run_until_complete(listen())
        self._loop.run_forever()

    async def _relay(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        assert self._server is not None
        self._server.close()  # one connection only
        self._writers.append(client_w)
        try:
            up_r, up_w = await asyncio.open_connection(
                "127.0.0.1",
                self.master_port,
                ssl=self.connect_tls,
                server_hostname="127.0.0.1" if self.connect_tls else None,
            )
        except OSError:
            client_w.close()
            return
        finally:
            self.up_ready.set()
        self._upstream = up_w
        self._writers.append(up_w)
        await asyncio.gather(_pipe(client_r, up_w), _pipe(up_r, client_w))

    def inject(self, data: bytes) -> None:
        """Slip ``data`` into the stream towards the master, as the attacker."""
        assert self.up_ready.wait(10) and self._upstream is not None
        upstream = self._upstream
        asyncio.run_coroutine_threadsafe(_write(upstream, data), self._loop).result(10)

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            for writer in self._writers:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Relay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def _write(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    except (OSError, asyncio.CancelledError):
        pass
    finally:
        dst.close()  # the other direction's copy then ends too


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path) as c:
        yield c


def test_a_frame_injected_into_a_relayed_tls_stream_is_refused(cluster: Cluster) -> None:
    ca = str(cluster.ca_file)
    relay = Relay(cluster.port)  # raw bytes: the relay passes TLS through untouched
    address = Address("127.0.0.1", relay.port, tls_ca=ca)
    # The session works through it ...
    with relay, Client(address, token=cluster.token("alice")) as c:
        assert c.user == "alice"
        # ... until a plaintext frame is slipped into the stream: the master's TLS layer
        # finds a record it cannot authenticate and drops the connection.
        submit = {"t": "submit", "id": 99, "job": {"argv": ["touch", "/tmp/pwned"], "cwd": "/"}}
        relay.inject(frame(submit))
        with pytest.raises(ConnectionClosed):
            c.queue()
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
    with Relay(cluster.port, accept_tls=rogue, connect_tls=to_master) as relay:
        address = Address("127.0.0.1", relay.port, tls_ca=str(cluster.ca_file))
        # The client's TLS check passes (same CA), but the master's proof is bound to the
        # master's certificate, not the relay's: the client refuses, sending no proof of its own.
        with pytest.raises(AuthenticationFailed, match="does not know token"):
            Client(address, token=cluster.token("alice"))
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
