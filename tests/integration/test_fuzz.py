"""A flood of random and mutated frames at the master: it stays up, keeps serving a
well-behaved client throughout, and its memory stays bounded."""

from __future__ import annotations

import errno
import random
import socket
import ssl
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgpu_core.errors import ERROR_CODES
from mgpu_core.messages import CLIENT_REQUESTS
from tests.helpers.cluster import Cluster
from tests.helpers.wire import client_hello, connect_unix, header, read_frame
from tests.helpers.wire import frame as encode

pytestmark = pytest.mark.timeout(300)

TOTAL_FRAMES = 100_000
FRAMES_PER_CONNECTION = 250
TYPES = [
    "submit",
    "cancel",
    "queue",
    "nodes",
    "info",
    "attach",
    "hold",
    "update",
    "turns",
    "hello",
    "launch",
    "heartbeat",
    "job_exited",
    "node_update",
    "priority",
    "token",
    "auth",
    "x" * 300,
]
VALUES: list[Any] = [
    None,
    True,
    -1,
    0,
    2**63 - 1,
    -(2**63),
    1.5,
    float("nan"),
    "",
    "a" * 5000,
    b"\x00" * 100,
    [],
    [1, "two", None],
    {},
    {"job": {"argv": 3}},
    [[[[[]]]]],
]


def random_message(rng: random.Random) -> dict[str, Any]:
    msg: dict[str, Any] = {"t": rng.choice(TYPES), "id": rng.choice([1, -5, "x", None, 2**64 - 1])}
    for _ in range(rng.randint(0, 6)):
        key = rng.choice(
            [
                "job",
                "job_ids",
                "users",
                "states",
                "action",
                "changes",
                "node_id",
                "argv",
                "gpus",
                "data",
                "job_id",
                "mode",
                "token",
                "nonce",
                "proof",
                rng.choice(VALUES).__class__.__name__,
            ]
        )
        msg[key] = rng.choice(VALUES)
    if msg["t"] == "submit" and rng.random() < 0.5:
        msg["job"] = {"argv": ["true"], "gpus": rng.choice(VALUES), "env": rng.choice(VALUES)}
    return msg


def mutate(frame: bytes, rng: random.Random) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.randrange(256)
    return bytes(data)


def drain_until_closed(sock: socket.socket) -> None:
    sock.settimeout(10)
    try:
        while sock.recv(65536):
            pass
    except (ConnectionError, TimeoutError, ssl.SSLError):
        pass


def connect(cluster: Cluster, rng: random.Random) -> tuple[socket.socket, dict[str, Any]]:
    """Mostly the Unix socket, where a hello is enough to reach the request handlers; else
    TCP, where a hello with a forged token (or none) must be refused."""
    hello = client_hello()
    if rng.random() < 0.7:
        return connect_unix(cluster.socket_address), hello
    sock = cluster.connect_tcp()
    if rng.random() < 0.5:
        hello.update(token=rng.choice(["0" * 16, "x", "a" * 64]), nonce=rng.randbytes(32))
    return sock, hello


def one_connection(cluster: Cluster, rng: random.Random) -> int:
    """One connection: a hello (usually), a batch of random messages in good frames (each is
    decoded and answered: an error reply, or ok for the rare valid one), then often a mutated
    or wildly sized frame that ends the connection. Returns the frames the master processed."""
    sock, hello = connect(cluster, rng)
    with sock:
        parts = []
        if rng.random() < 0.9:
            parts.append(encode(hello))
        parts += [encode(random_message(rng)) for _ in range(FRAMES_PER_CONNECTION)]
        roll = rng.random()
        if roll < 0.3:
            parts.append(mutate(encode(random_message(rng)), rng))
        elif roll < 0.4:
            parts.append(header(rng.randrange(2**32)))  # a wild length
        try:
            sock.sendall(b"".join(parts))
            sock.shutdown(socket.SHUT_WR)
        except ssl.SSLError:
            pass  # closed early over TLS: the master's close arrives as the channel's end
        except OSError as exc:
            # Closed early (no hello, or a hello that is not one): expected. The close may land
            # during sendall (EPIPE, ECONNRESET) or just before the shutdown (ENOTCONN).
            if exc.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                raise
        drain_until_closed(sock)
        return len(parts)


def test_master_survives_a_flood_of_hostile_frames(cluster: Cluster) -> None:
    rng = random.Random(20261122)
    master = psutil.Process(cluster.master.pid if cluster.master else 0)
    cluster.start_node("n1", gpus=1)
    sent = 0
    rss_before = master.memory_info().rss
    while sent < TOTAL_FRAMES:
        sent += one_connection(cluster, rng)
        if sent % 10_000 < FRAMES_PER_CONNECTION + 1:
            # A well-behaved client is served throughout.
            assert cluster.cli("mgpu_queue", "--json").returncode == 0
    assert master.is_running() and cluster.master is not None and cluster.master.poll() is None
    assert cluster.node_state("n1") == "idle"
    job_id = cluster.sbatch("--wrap", "true")
    cluster.wait_state(job_id, "COMPLETED")
    growth_mb = (master.memory_info().rss - rss_before) / 2**20
    assert growth_mb < 100, f"master grew by {growth_mb:.0f} MB under the flood"


# ---- hypothesis: every request type with arbitrary field values ---------------------------

_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=50)
    | st.binary(max_size=50)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)


@st.composite
def client_requests(draw: st.DrawFn) -> dict[str, Any]:
    """A request of a real type (or, rarely, an unknown one) whose fields are the type's own
    names (and a few others) with arbitrary values."""
    kind = draw(st.sampled_from([*CLIENT_REQUESTS, "hello", "auth", "launch", "nope"]))
    names = list(CLIENT_REQUESTS[kind].fields) if kind in CLIENT_REQUESTS else ["x"]
    fields = draw(st.dictionaries(st.sampled_from([*names, "t2", ""]), _VALUES, max_size=6))
    return {**fields, "t": kind, "id": draw(st.integers(0, 2**53))}


def test_every_request_gets_a_reply_with_a_stable_code(cluster: Cluster) -> None:
    sock = connect_unix(cluster.socket_address)
    sock.sendall(encode(client_hello()))
    welcome = read_frame(sock)
    assert welcome is not None and welcome["t"] == "ok"
    seen: set[str] = set()

    @given(client_requests())
    @settings(
        max_examples=400,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    def one(msg: dict[str, Any]) -> None:
        sock.sendall(encode(msg))
        while True:
            reply = read_frame(sock)
            assert reply is not None, f"the master closed the connection after {msg!r}"
            if reply["t"] not in ("job_state", "job_output", "job_ended"):  # attach's events
                break
        assert reply["t"] in ("ok", "error"), reply
        if reply["t"] == "error":
            assert reply["code"] in ERROR_CODES, reply
            seen.add(str(reply["code"]))
        assert reply["id"] == msg["id"] or reply["id"] is None

    one()
    sock.close()
    assert {"bad_message", "unknown_message_type"} <= seen
    assert cluster.master is not None and cluster.master.poll() is None
    assert cluster.cli("mgpu_queue").returncode == 0
