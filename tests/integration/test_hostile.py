"""Hostile input: the master answers with an error or closes that one connection, and keeps
serving everyone else."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.helpers.cluster import Cluster, running_cluster
from tests.helpers.wire import (
    client_hello,
    closed_after_error,
    connect_unix,
    frame,
    header,
    node_hello,
    read_frame,
)

pytestmark = pytest.mark.timeout(60)


def connect(cluster: Cluster, *, tcp: bool = False) -> socket.socket:
    """The master's Unix socket (a hello there is enough to reach the request handlers), or
    its TCP port (where only a hello with a token would be)."""
    if tcp:
        return socket.create_connection(("127.0.0.1", cluster.port), timeout=10)
    return connect_unix(cluster.socket_address)


def hello(sock: socket.socket) -> None:
    sock.sendall(frame(client_hello(user="eve")))
    reply = read_frame(sock)
    assert reply is not None and reply["t"] == "ok"


def still_serving(cluster: Cluster) -> None:
    result = cluster.cli("mgpu_queue", "--json")
    assert result.returncode == 0, result.stderr


def test_four_gib_length_prefix_closes_only_that_connection(cluster: Cluster) -> None:
    bystander = connect(cluster)
    hello(bystander)
    with connect(cluster) as sock:
        sock.sendall(header(0xFFFFFFFF) + b"x" * 100)
        assert closed_after_error(sock) == "frame_too_large"
    still_serving(cluster)
    bystander.sendall(frame({"t": "queue", "id": 2}))
    reply = read_frame(bystander)
    assert reply is not None and reply["t"] == "ok"
    bystander.close()


@pytest.mark.parametrize(
    "payload",
    [
        header(5) + b"\xc1\xc1\xc1\xc1\xc1",  # never-used msgpack byte
        header(3) + b"\x93\x01\x02",  # truncated array
        frame([1, 2, 3]),  # not a map
        frame({"no_type": 1}),  # no 't'
        header(0),  # empty frame
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # a confused HTTP client
    ],
    ids=["garbage", "truncated", "not-a-map", "no-type", "empty", "http"],
)
def test_malformed_frames_before_hello(cluster: Cluster, payload: bytes) -> None:
    for tcp in (True, False):
        with connect(cluster, tcp=tcp) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            closed_after_error(sock)
    still_serving(cluster)


def test_malformed_frame_after_hello(cluster: Cluster) -> None:
    with connect(cluster) as sock:
        hello(sock)
        sock.sendall(header(4) + b"\xc1\xc1\xc1\xc1")
        assert closed_after_error(sock) == "bad_message"
    still_serving(cluster)


def test_first_message_must_be_hello(cluster: Cluster) -> None:
    with connect(cluster) as sock:
        sock.sendall(frame({"t": "queue", "id": 1}))
        assert closed_after_error(sock) == "protocol_error"
    with connect(cluster) as sock:
        sock.sendall(frame(client_hello(version=999)))
        assert closed_after_error(sock) == "version_mismatch"
    still_serving(cluster)


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ({"t": "submit", "id": 5, "job": {"argv": "not-a-list"}}, "bad_message"),
        ({"t": "submit", "id": 5, "job": {"argv": ["true"], "gpus": "two"}}, "bad_message"),
        ({"t": "submit", "id": 5, "job": {"argv": ["true"], "gpus": -1}}, "bad_message"),
        ({"t": "submit", "id": 5, "job": {"argv": ["true"], "cpus": True}}, "bad_message"),
        ({"t": "submit", "id": 5}, "bad_message"),
        ({"t": "cancel", "id": 5, "job_ids": [1, "x"]}, "bad_message"),
        ({"t": "queue", "id": 5, "states": ["BOGUS"]}, "bad_message"),
        ({"t": "launch", "id": 5, "launch": {}}, "unknown_message_type"),
        ({"t": "make_coffee", "id": 5}, "unknown_message_type"),
        ({"t": "submit", "id": 5, "job": {"argv": []}}, "invalid_request"),
    ],
)
def test_wrong_fields_and_unknown_types_get_error_replies(
    cluster: Cluster, message: dict[str, object], code: str
) -> None:
    with connect(cluster) as sock:
        hello(sock)
        sock.sendall(frame(message))
        reply = read_frame(sock)
        assert reply is not None and reply["t"] == "error"
        assert reply["code"] == code and reply["id"] == 5 and reply["message"]
        # The connection stays usable after a schema error.
        sock.sendall(frame({"t": "queue", "id": 6}))
        ok = read_frame(sock)
        assert ok is not None and ok["t"] == "ok" and ok["id"] == 6
    still_serving(cluster)


def test_node_hello_with_bad_registration_is_refused(cluster: Cluster) -> None:
    with connect(cluster, tcp=True) as sock:
        sock.sendall(frame(node_hello("x", gpus=[{"index": 70, "visible_id": "0"}])))
        assert closed_after_error(sock) == "bad_message"
    with connect(cluster, tcp=True) as sock:
        sock.sendall(frame(node_hello("x", gpus=[{"index": 1, "visible_id": "1"}])))
        # A peer without the cluster key gets no further than its hello.
        assert closed_after_error(sock) == "authentication_failed"
    still_serving(cluster)
    assert cluster.nodes_json() == []


def test_silent_peer_is_dropped_after_hello_timeout(tmp_path: Path) -> None:
    with running_cluster(tmp_path, "--hello-timeout", "0.5") as c:
        with connect(c) as sock:
            sock.settimeout(10)
            assert read_frame(sock) is None  # closed by the master, not by our timeout
        still_serving(c)
