"""A master that accepts a connection but never answers (stopped with SIGSTOP, or swamped) is
"unreachable" to a client, which every command turns into one line and exit 2
(tests/client/test_exit_codes.py), never a traceback."""

from __future__ import annotations

import socket

import pytest

from mgpu_client.client import Client
from mgpu_core.config import parse_address
from mgpu_core.errors import MasterUnreachable


@pytest.fixture
def silent_port() -> socket.socket:
    """A listener whose connections the kernel accepts (the backlog) and nobody reads."""
    return socket.create_server(("127.0.0.1", 0))


def test_the_client_gives_up_with_master_unreachable(silent_port: socket.socket) -> None:
    with silent_port:
        port = silent_port.getsockname()[1]
        with pytest.raises(MasterUnreachable, match="no answer from the master"):
            Client(parse_address(f"127.0.0.1:{port}"), timeout_s=0.3)
