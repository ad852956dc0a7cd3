"""Nobody can take the master from everyone else (issue 12, items 3 and 4), against a real
master, agents and clients: a flood of strangers' connections keeps out neither a node nor a
user; strangers' frames and a client that never reads cannot swell the master; one user's
stream of requests does not slow another's; per-user limits refuse in one line; an array's
spec is stored once."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import statistics
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from mgpu_client.client import Client
from mgpu_client.launch import PLAINTEXT_FLAG
from mgpu_core.config import parse_address
from mgpu_core.models import JobSpec
from mgpu_core.protocol import encode_frame
from tests.helpers.cluster import PY, Cluster, running_cluster, stop_process, wait_for
from tests.helpers.fake_master import FakeMaster
from tests.helpers.wire import (
    client_hello,
    closed_after_error,
    connect_unix,
    frame,
    header,
    pack,
    read_frame,
)

pytestmark = pytest.mark.timeout(180)

MiB = 1024 * 1024


def rss(cluster: Cluster) -> int:
    assert cluster.master is not None
    return int(psutil.Process(cluster.master.pid).memory_info().rss)


def still_serving(cluster: Cluster) -> None:
    result = cluster.cli("mgpu_queue", "--json")
    assert result.returncode == 0, result.stderr


# ---- strangers' connections ---------------------------------------------------------------------


class Flood:
    """Strangers on other loopback addresses: each opens connections to the master and holds
    them, silent, opening another whenever the master closes (or refuses) one."""

    def __init__(self, port: int, addresses: list[str], *, per_address: int) -> None:
        self.port = port
        self.per_address = per_address
        self.stop = threading.Event()
        self.opened = 0
        self.threads = [threading.Thread(target=self._run, args=(a,)) for a in addresses]

    def __enter__(self) -> Flood:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=20)

    def _run(self, address: str) -> None:
        held: list[socket.socket] = []
        try:
            while not self.stop.is_set():
                held = [s for s in held if _open(s)]
                if len(held) >= self.per_address:
                    self.stop.wait(0.005)  # a flooder's pace, not a wait for anything
                    continue
                try:
                    sock = socket.create_connection(
                        ("127.0.0.1", self.port), timeout=5, source_address=(address, 0)
                    )
                except OSError:
                    continue
                held.append(sock)
                self.opened += 1
        finally:
            for sock in held:
                sock.close()


def _open(sock: socket.socket) -> bool:
    """Whether the master still holds ``sock`` open (closing ours if it does not)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if readable:
        try:
            data = sock.recv(4096)
        except OSError:
            data = b""
        if not data:
            sock.close()
            return False
    return True


def test_a_flood_of_strangers_keeps_out_neither_a_node_nor_a_user(tmp_path: Path) -> None:
    # 64 connections, 16 of them for unauthenticated peers: six flooding addresses could
    # take every place on main, where each address had 512 and nobody was told apart.
    with running_cluster(tmp_path, "--max-connections", "64") as c:
        c.start_node("n1", 1)
        flooders = [f"127.0.0.{i}" for i in range(2, 8)]
        with Flood(c.port, flooders, per_address=20) as flood:
            c.wait_for(
                lambda: any(e["event"] == "connection_refused" for e in c.audit()),
                30,
                "the strangers' share full",
            )
            # The node reconnects (a restarted agent) in the middle of the flood.
            stop_process(c.nodes.pop("n1"))
            c.start_node("n1", 1)
            log = c.log_text("node-n1")
            assert "too_many_connections" not in log
            # A user on another address is served every time, each time a new connection.
            for _ in range(10):
                with c.client("alice") as alice:
                    assert alice.queue()["jobs"] == []
            print(f"\nstrangers' connections opened: {flood.opened}")
            assert flood.opened > 6 * 20, "the flood did not go on"
        assert c.node_up("n1")


def test_a_refused_peer_on_plain_tcp_is_told_why(tmp_path: Path) -> None:
    """On the TLS port a refused peer is just closed (no handshake: that is the point); on a
    plain TCP port it gets the error first."""
    with running_cluster(tmp_path, PLAINTEXT_FLAG, "--max-connections-per-address", "1") as c:
        with socket.create_connection(("127.0.0.1", c.port), timeout=10) as first:
            with socket.create_connection(("127.0.0.1", c.port), timeout=10) as second:
                assert closed_after_error(second) == "too_many_connections"
            first.sendall(frame(client_hello()))
            assert closed_after_error(first) == "authentication_failed"  # read, as ever
        still_serving(c)


def test_an_agent_refused_by_a_full_master_retries(tmp_path: Path) -> None:
    """A refusal the agent cannot verify (anyone may send one) or that passes (a full
    master) is never a reason to stop: it says why and comes back (on main it exited)."""
    master = FakeMaster(tmp_path)
    agent = master.start_agent("--allow-root-jobs")
    try:
        for code in ("too_many_connections", "authentication_failed", "registration_refused"):
            link = master.accept()
            link.send(frame({"t": "error", "id": 1, "code": code, "message": f"no ({code})"}))
            link.close()
        master.connect()
        log = master.log_text()
        for code in ("too_many_connections", "authentication_failed", "registration_refused"):
            assert f"master refused registration: {code}: no ({code}); retrying in" in log
        assert agent.poll() is None
    finally:
        stop_process(agent)
        master.close()


# ---- what strangers send ---------------------------------------------------------------------


def empty_arrays_frame(body_bytes: int) -> bytes:
    """One frame of a hello map holding an array of empty arrays: each byte of it ~64 bytes
    once decoded."""
    head = pack({"t": "hello", "x": None})[:-1]  # the map up to the value of "x"
    count = body_bytes - len(head) - 5
    return header(body_bytes) + head + b"\xdd" + struct.pack("!I", count) + b"\x90" * count


def junk_hello(body_bytes: int) -> bytes:
    """A hello map padded with 2-character strings (within every length limit): the most a
    frame a stranger may send can decode to."""
    head = {"t": "hello", "id": 1, "version": 1, "role": "client"}
    lists, strings = [], (body_bytes - 200) // 3
    while strings > 0:
        lists.append(["ab"] * min(strings, 10_000))
        strings -= 10_000
    return encode_frame({**head, "pad": lists})


def send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # the master may close the connection midway
        sock.sendall(data)


def test_frames_from_strangers_cannot_swell_the_master(cluster: Cluster) -> None:
    before = rss(cluster)
    # What drove main to 1.2 GB: eight 2 MiB frames of empty arrays (x75 once decoded).
    socks = [cluster.connect_tcp() for _ in range(8)]
    for sock in socks:
        send_quietly(sock, empty_arrays_frame(2 * MiB))
    for sock in socks:
        assert closed_after_error(sock) == "frame_too_large"
        sock.close()
    # The largest frames a stranger may send, built to cost the most: refused or dropped.
    for build in (empty_arrays_frame, junk_hello):
        socks = [cluster.connect_tcp() for _ in range(8)]
        for sock in socks:
            send_quietly(sock, build(256 * 1024))
        for sock in socks:
            assert closed_after_error(sock) in ("bad_message", "authentication_failed")
            sock.close()
    # Half-sent frames held open: the unread bytes of strangers are counted and bounded.
    held = [cluster.connect_tcp() for _ in range(16)]
    for sock in held:
        send_quietly(sock, empty_arrays_frame(256 * 1024)[:-1000])
    still_serving(cluster)
    growth_mb = (rss(cluster) - before) / MiB
    for sock in held:
        sock.close()
    print(f"\nmaster RSS growth: {growth_mb:.1f} MB")
    assert growth_mb < 100, f"the master grew by {growth_mb:.0f} MB"
    still_serving(cluster)


# ---- clients that never read, and clients that never stop -----------------------------------


def hello_on_socket(cluster: Cluster) -> socket.socket:
    """A session on the master's socket, played by hand (as the test's own user)."""
    sock = connect_unix(cluster.socket_address)
    sock.sendall(frame(client_hello()))
    reply = read_frame(sock)
    assert reply is not None and reply["t"] == "ok", reply
    return sock


def test_a_client_that_never_reads_its_replies_costs_a_bounded_backlog(cluster: Cluster) -> None:
    with Client(parse_address(cluster.socket_address)) as admin:
        admin.submit_many([JobSpec(argv=["true"], hold=True, cwd="/") for _ in range(1000)])
    before = rss(cluster)
    # 400 queue requests of ~400 KB replies each, sent at once and never read: on main the
    # master answered them all into its buffers (+160 MB here, +691 MB in the review).
    sock = hello_on_socket(cluster)
    sock.sendall(b"".join(encode_frame({"t": "queue", "id": i}) for i in range(2, 402)))
    # Everyone else is still served while it waits for that client to read.
    still_serving(cluster)
    growth_mb = (rss(cluster) - before) / MiB
    sock.close()
    print(f"\nmaster RSS growth: {growth_mb:.1f} MB")
    assert growth_mb < 60, f"the master grew by {growth_mb:.0f} MB"
    still_serving(cluster)


class InfoStream:
    """One client sending ``info`` requests as fast as the master takes them (thousands in
    each write), reading every reply so that the master never waits for it."""

    def __init__(self, cluster: Cluster) -> None:
        self.sock = hello_on_socket(cluster)
        self.stop = threading.Event()
        self.replies = 0
        self._writer = threading.Thread(target=self._write)
        self._reader = threading.Thread(target=self._read)

    def __enter__(self) -> InfoStream:
        self._writer.start()
        self._reader.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.sock.shutdown(socket.SHUT_RDWR)
        self._writer.join(timeout=20)
        self._reader.join(timeout=20)
        self.sock.close()

    def _write(self) -> None:
        batch = encode_frame({"t": "info", "id": 7}) * 5000
        with contextlib.suppress(OSError):
            while not self.stop.is_set():
                self.sock.sendall(batch)

    def _read(self) -> None:
        frame_bytes = len(encode_frame({"t": "ok", "id": 7, "data": {}}))
        with contextlib.suppress(OSError):
            while data := self.sock.recv(1 << 20):
                self.replies += len(data) // frame_bytes  # a lower bound is enough


def test_one_users_stream_of_requests_does_not_slow_another(cluster: Cluster) -> None:
    cluster.start_node("n1", 4)
    with InfoStream(cluster) as stream, cluster.client("bob") as bob:
        wait_for(lambda: stream.replies > 10_000, 30, "the stream under way")
        latencies_s = []
        for _ in range(20):
            started = time.perf_counter()
            bob.request("info")
            latencies_s.append(time.perf_counter() - started)
        assert stream.replies > 10_000 and not stream.stop.is_set()
    median_ms = statistics.median(latencies_s) * 1000
    print(f"\nbob's info: median {median_ms:.1f} ms, max {max(latencies_s) * 1000:.1f} ms")
    assert median_ms < 100, f"bob waited {median_ms:.0f} ms (median) behind the stream"


# ---- per-user limits --------------------------------------------------------------------------


@contextlib.contextmanager
def limited_cluster(tmp_path: Path, limits: str) -> Iterator[Cluster]:
    config = tmp_path / "master.toml"
    config.write_text(f"[limits]\n{limits}\n")
    with running_cluster(tmp_path, "--config", str(config)) as c:
        yield c


def as_user(cluster: Cluster, user: str, *args: str) -> subprocess.CompletedProcess[str]:
    """A client command run as ``user`` over TCP with that user's token (not an admin)."""
    token_file = cluster.tmp / f"{user}.token"
    if not token_file.exists():
        token_file.write_text(f"{cluster.token(user)}\n")
        token_file.chmod(0o600)
    env = {**cluster.env, "MGPU_MASTER": cluster.address, "MGPU_TOKEN_FILE": str(token_file)}
    return subprocess.run(
        [PY, "-m", "mgpu_client.sbatch", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=cluster.tmp,
    )


def test_per_user_limits_refuse_in_one_line(tmp_path: Path) -> None:
    limits = "max_pending_jobs_per_user = 5\nsubmit_rate = 0.01\nsubmit_burst = 3"
    with limited_cluster(tmp_path, limits) as c:
        # An array counts each of its tasks against the cap (refused: no token taken).
        big = as_user(c, "alice", "--hold", "--array", "0-9", "--wrap", "true")
        assert big.returncode == 1 and big.stderr.count("\n") == 1, big.stderr
        assert "alice would have 10 pending jobs, more than the limit of 5" in big.stderr
        for _ in range(3):  # the burst
            assert as_user(c, "alice", "--hold", "--wrap", "true").returncode == 0
        fast = as_user(c, "alice", "--hold", "--wrap", "true")
        assert fast.returncode == 1 and fast.stderr.count("\n") == 1, fast.stderr
        assert "alice submits faster than the limit of 0.01 per second" in fast.stderr
        assert "Traceback" not in big.stderr + fast.stderr
        # Another user has a bucket of their own; an admin (here, over the socket) none.
        assert as_user(c, "bob", "--hold", "--wrap", "true").returncode == 0
        for _ in range(6):
            c.cli("mgpu_sbatch", "--hold", "--wrap", "true", check=True)
        assert len(c.jobs()) == 3 + 1 + 6


def test_an_array_of_1000_tasks_stores_its_spec_once(cluster: Cluster, tmp_path: Path) -> None:
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/sh\n" + "# padding\n" * 25_000 + "true\n")  # ~250 KB
    cluster.cli("mgpu_sbatch", "--hold", "--array", "0-999", str(script), check=True)
    database = sum(f.stat().st_size for f in cluster.master_state.glob("mgpu.db*") if f.is_file())
    print(f"\ndatabase: {database / MiB:.1f} MiB")
    assert database < 8 * MiB, f"{database / MiB:.0f} MiB"  # on main: ~250 MB
    # A restart reads it back: every task, sharing the one spec.
    assert cluster.master is not None
    stop_process(cluster.master)
    cluster.start_master(port=cluster.port)
    jobs = cluster.jobs()
    assert len(jobs) == 1000 and {j["array_task_id"] for j in jobs.values()} == set(range(1000))
    assert os.path.getsize(cluster.master_state / "mgpu.db") < 8 * MiB
