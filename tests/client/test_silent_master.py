"""A master that accepts a connection but never answers (stopped with SIGSTOP, or swamped) is
"unreachable" to a client, which every command turns into one line and exit 2
(tests/client/test_exit_codes.py), never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mgpu_client.client import Client
from mgpu_core.auth import Token
from mgpu_core.config import Address
from mgpu_core.errors import MasterUnreachable
from mgpu_server.tlsinit import make_cluster_certs


@pytest.fixture
def silent_port() -> socket.socket:
    """A listener whose connections the kernel accepts (the backlog) and nobody reads."""
    return socket.create_server(("127.0.0.1", 0))


@pytest.mark.parametrize("tls", [False, True])
def test_the_client_gives_up_with_master_unreachable(
    silent_port: socket.socket, tls: bool, tmp_path: Path
) -> None:
    with silent_port:
        port = silent_port.getsockname()[1]
        if tls:  # silent in the TLS handshake
            make_cluster_certs(tmp_path, ["127.0.0.1"], days=1, force=False)
            address = Address("127.0.0.1", port, tls_ca=str(tmp_path / "ca.pem"))
        else:  # silent after the connection (plain TCP: the hello is never answered)
            address = Address("127.0.0.1", port, plaintext=True)
        with pytest.raises(MasterUnreachable, match=r"no answer from the master|timed out"):
            Client(address, timeout_s=0.3, token=Token("0" * 16, bytes(32)))
