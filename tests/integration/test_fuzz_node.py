"""A node agent under a flood of hostile frames from its master: it stays up, keeps running
jobs and heartbeating throughout, and its memory and descriptors stay bounded.

The test plays the master (tests/helpers/fake_master.py). The agent obeys what passes the
master->node schema and drops the link on anything else (docs/protocol.md §3), then
reconnects. So each link carries a *body* the agent must digest -- random and mutated
messages that pass the schema: kills and acks of unknown jobs, launches that cannot start or
misbehave, replies nobody asked for, frames near the size limit -- with well-behaved probe
launches mixed in, and ends with one *terminator* that must make the agent hang up: random
bytes, a byte-mutated frame, random msgpack, a schema error, an unknown type, a wild or
empty length, a truncated frame. Every fifth link is attacked during the handshake instead.
The flood is seeded.

The agent runs as the test's user (root in CI), so nothing here lets a generated message run
a command, or write a file, outside a fixed harmless set: commands come from lists, working
directories are the test's, and a mutated frame the agent would obey is never sent.
"""

from __future__ import annotations

import itertools
import os
import pwd
import random
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mgpu_core.errors import ProtocolError
from mgpu_core.messages import MASTER_TO_NODE, validate
from mgpu_core.protocol import MAX_FRAME_BYTES, FrameDecoder
from mgpu_node.guard import running_guard
from tests.helpers.cluster import stop_process
from tests.helpers.fake_master import FakeMaster, Link
from tests.helpers.wire import frame, header

pytestmark = pytest.mark.timeout(120)

SEED = 20261123
TOTAL_FRAMES = 100_000
BODY_FRAMES = 5_000
PROBES_PER_LINK = 2
HOSTILE_LAUNCHES_PER_LINK = 4
HEARTBEAT_S = 0.2
MAX_HEARTBEAT_GAP_S = 2.0
RSS_GROWTH_LIMIT_MB = 50
# Probes (well-behaved launches) get small ids; nothing hostile touches an id below this.
HOSTILE_ID_BASE = 10**9

WILD: list[Any] = [
    None,
    True,
    0,
    -1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    0.5,
    -1e308,
    float("nan"),
    float("inf"),
    "",
    "x" * 300,
    "x" * 5000,
    "é€😀\x00",
    b"",
    b"\xff" * 65,
    [],
    [1, "a", None],
    {},
    {"a": {"b": [1]}},
    [[[[[[[[]]]]]]]],
]
UNKNOWN_TYPES = ["hello", "auth", "heartbeat", "job_exited", "submit", "", "x" * 300]
TYPES = [*MASTER_TO_NODE, *UNKNOWN_TYPES]
FIELDS = ["id", "job_id", "launch", "reason", "data", "code", "message", "nonce", "proof", "t"]
REASONS = ["", "unknown to master", "x" * 1024, "ünïcødé"]
LAUNCH_FIELDS = ["job_id", "user", "spec", "gpu_indices", "kill_grace_s", "restart_count"]
SPEC_FIELDS = ["argv", "script", "interactive", "gpus", "time_limit_s", "env", "cwd", "name"]
# Jobs run as their submitter (a root agent switches to them): the test's own user, allowed
# to be root by --allow-root-jobs.
USER = pwd.getpwuid(os.getuid()).pw_name
SAFE_ARGV = [["true"], ["false"], ["echo", "hi"], ["sh", "-c", "exit 3"]]


def agent_would_obey(data: bytes) -> bool:
    """Whether the agent would act on the first message in ``data``: decoded and checked as
    the agent does it."""
    try:
        msgs = FrameDecoder().feed(data)
        if msgs:
            validate(msgs[0], MASTER_TO_NODE)
            return True
    except ProtocolError:
        pass
    return False


def valid(msg: dict[str, Any]) -> bool:
    return agent_would_obey(frame(msg))


def launch_msg(job_id: int, work: Path, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A launch of ``true`` in ``work`` as the test's user, unless ``spec``/``extra`` say
    otherwise."""
    spec = {"argv": ["true"], "cwd": str(work), **spec}
    return {"t": "launch", "launch": {"job_id": job_id, "user": USER, "spec": spec, **extra}}


@dataclass
class Flood:
    """Seeded frames for the agent, and what it must do with them."""

    rng: random.Random
    work: Path
    probe_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    hostile_ids: Iterator[int] = field(default_factory=lambda: itertools.count(HOSTILE_ID_BASE))
    launched: list[int] = field(default_factory=list)  # hostile launches: each must exit
    reusable: list[int] = field(default_factory=list)  # ids to launch again
    stuck: list[int] = field(default_factory=list)  # stopped jobs ended by the time limit
    never: list[int] = field(default_factory=list)  # launches the agent must not obey
    invalid: list[bytes] = field(default_factory=list)  # schema failures, to end links with

    def launch(self, job_id: int, spec: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return launch_msg(job_id, self.work, spec, **extra)

    def probe(self) -> tuple[int, bytes]:
        job_id = next(self.probe_ids)
        return job_id, frame(self.launch(job_id, {}))

    # ---- bodies --------------------------------------------------------------------------

    def body(self, n: int, *, huge: bool = False) -> tuple[list[bytes], list[int]]:
        """``n`` frames the agent must digest without dropping the link, and the ids of the
        probes among them; the last frame is a probe, so its exit says all were digested."""
        frames = [self.admissible_frame() for _ in range(n)]
        if huge:  # a valid frame of 15 MiB (the unknown field is dropped)
            pad = {"t": "exit_ack", "job_id": self.unknown_id(), "pad": "x" * (15 << 20)}
            frames.insert(self.rng.randrange(n), frame(pad))
        for _ in range(HOSTILE_LAUNCHES_PER_LINK):
            at = self.rng.randrange(len(frames) + 1)
            frames[at:at] = self.hostile_launch()
        probes = []
        for _ in range(PROBES_PER_LINK):
            job_id, data = self.probe()
            frames.insert(self.rng.randrange(len(frames) + 1), data)
            probes.append(job_id)
        job_id, data = self.probe()
        return [*frames, data], [*probes, job_id]

    def admissible_frame(self) -> bytes:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            msg = {"t": "kill", "job_id": self.unknown_id(), "reason": rng.choice(REASONS)}
        elif roll < 0.5:
            msg = {"t": "exit_ack", "job_id": self.unknown_id()}
        elif roll < 0.6:
            msg = {"t": "ok", "id": rng.randrange(2**53), "data": {"x": rng.choice(WILD)}}
        elif roll < 0.67:
            nonce, proof = rng.randbytes(rng.randrange(65)), rng.randbytes(32)
            msg = {"t": "challenge", "nonce": nonce, "proof": proof}
        elif roll < 0.68:  # each is a log line: keep them rare
            text = rng.choice(["", "boom", "é" * 4096])
            msg = {"t": "error", "id": None, "code": rng.choice(["", "x" * 256]), "message": text}
        else:
            return self.random_frame()
        if rng.random() < 0.2:
            msg[rng.choice(["pad", "extra", "zz"])] = rng.choice(WILD)  # unknown: dropped
        return frame(msg)  # valid by construction

    def random_frame(self) -> bytes:
        """A random message if it is admissible; else it is kept to end a link with."""
        msg = self.random_message()
        data = frame(msg)
        if self.admissible(msg):
            return data
        if not agent_would_obey(data):
            self.keep_invalid(data)
        return frame({"t": "exit_ack", "job_id": self.unknown_id()})

    def admissible(self, msg: dict[str, Any]) -> bool:
        """Valid, and harmless: no launch, no kill, signal or ack of a probe."""
        if not valid(msg) or msg["t"] == "launch":
            return False
        return msg["t"] not in ("kill", "signal", "exit_ack") or msg["job_id"] >= HOSTILE_ID_BASE

    def keep_invalid(self, data: bytes) -> None:
        if len(self.invalid) < 500:
            self.invalid.append(data)
        else:
            self.invalid[self.rng.randrange(500)] = data

    def unknown_id(self) -> int:
        return self.rng.randrange(HOSTILE_ID_BASE + 10**6, 2**53)

    def random_message(self) -> dict[str, Any]:
        """A valid message with a field broken (wrong type, huge, missing), or random fields."""
        rng = self.rng
        msg: dict[str, Any]
        if rng.random() < 0.5:
            msg = {"t": rng.choice(TYPES)}
            for _ in range(rng.randrange(5)):
                msg[rng.choice(FIELDS)] = rng.choice(WILD)
            return msg
        templates: list[dict[str, Any]] = [
            {"t": "kill", "job_id": self.unknown_id(), "reason": "r"},
            {"t": "exit_ack", "job_id": self.unknown_id()},
            {"t": "error", "code": "c", "message": "m"},
            {"t": "challenge", "nonce": b"n", "proof": b"p"},
            self.launch(self.unknown_id(), {"argv": ["true"]}),
        ]
        msg = rng.choice(templates)
        target: dict[str, Any] = msg
        keys = FIELDS
        if msg["t"] == "launch":
            target, keys = rng.choice(
                [
                    (msg, FIELDS),
                    (msg["launch"], LAUNCH_FIELDS),
                    (msg["launch"]["spec"], SPEC_FIELDS),
                ]
            )
        key = rng.choice(keys)
        if rng.random() < 0.3:
            target.pop(key, None)
        else:
            target[key] = rng.choice(WILD)
        return msg

    def hostile_launch(self) -> list[bytes]:
        """A launch that passes the schema but cannot start, or starts and misbehaves; plus,
        for a job that would run on, the kill that ends it."""
        rng = self.rng
        kill = False
        if len(self.stuck) < 4 and rng.random() < 0.05:
            # Stopped at once (SIGSTOP is its --signal warning): its time limit still ends it.
            spec = {"argv": ["sleep", "30"], "time_limit_s": 1, "warn_before_s": 3600}
            spec["warn_signal"] = int(signal.SIGSTOP)
            extra: dict[str, Any] = {"kill_grace_s": 0.2}
            self.stuck.append(job_id := next(self.hostile_ids))
        elif rng.random() < 0.05:
            # Killed at once, and no SIGKILL ever follows. A SIGTERM that reaches the wrapper
            # before its command starts is lost (wrapper.py): 3 s bounds the job if so.
            spec, extra, kill = {"argv": ["sleep", "3"]}, {"kill_grace_s": 1e300}, True
            job_id = next(self.hostile_ids)
        else:
            spec, extra = rng.choice(self.short_variants())
            if self.reusable and rng.random() < 0.1:
                job_id = rng.choice(self.reusable)  # a duplicate, or a relaunch of an ended job
            else:
                self.reusable.append(job_id := next(self.hostile_ids))
        msg = self.launch(job_id, spec, **extra)
        assert valid(msg), msg
        self.launched.append(job_id)
        if kill:
            return [frame(msg), frame({"t": "kill", "job_id": job_id, "reason": "fuzz"})]
        return [frame(msg)]

    def short_variants(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """(spec, launch fields) of launches that fail to start, or run a short while."""
        rng, work = self.rng, str(self.work)
        return [
            ({"cwd": f"{work}/missing"}, {}),
            ({"argv": ["no-such-program-mgpu"]}, {}),
            ({"argv": ["/nonexistent/program", "x"]}, {}),
            ({"argv": [work]}, {}),  # a directory
            ({"argv": ["-x"]}, {}),
            ({}, {"gpu_indices": [rng.randrange(2, 64)]}),
            ({"env": {"A=B": "x"}}, {}),
            ({"argv": ["true", "a\x00b"]}, {}),
            ({"stdout_path": "missing/%j.out"}, {}),
            ({"name": "a/b", "stdout_path": "%x-%j.out"}, {}),
            ({"argv": rng.choice(SAFE_ARGV), "interactive": rng.random() < 0.5}, {}),
            ({"argv": rng.choice(SAFE_ARGV)}, {"user": rng.choice(["nobody", "no-such-user"])}),
            ({"script": "exit 4\n", "argv": ["a", "b"]}, {"restart_count": 2**31}),
            ({"env": {f"V{i}": "v" * 100 for i in range(2000)}}, {"gpu_indices": [0, 1]}),
            ({"time_limit_s": 10 * 365 * 86_400, "warn_signal": 64}, {"kill_grace_s": -1e300}),
        ]

    # ---- terminators ---------------------------------------------------------------------

    def terminator(self, link_index: int) -> tuple[str, bytes]:
        """(kind, bytes) after which the agent must hang up (the test then closes its side)."""
        rng = self.rng
        if link_index in (3, 13):
            # A body of exactly the limit is allowed: the agent buffers it, then refuses it.
            return "frame at the size limit", header(MAX_FRAME_BYTES) + (b"\xc1" * MAX_FRAME_BYTES)
        kind = rng.choice(
            [
                "random bytes",
                "random msgpack",
                "schema error",
                "schema error",
                "unknown type",
                "mutated frame",
                "mutated frame",
                "wild length",
                "empty frame",
                "truncated frame",
                "clean close",
            ]
        )
        if kind == "random bytes":
            return kind, rng.randbytes(rng.randrange(1, 300))
        if kind == "random msgpack":
            value = rng.choice([*WILD, {1: 2}, {"t": 5}, {"x": "no t"}, [{"t": "kill"}]])
            return kind, frame(value)
        if kind == "schema error" and self.invalid:
            return kind, self.invalid.pop(rng.randrange(len(self.invalid)))
        if kind == "unknown type":
            return kind, frame({"t": rng.choice(UNKNOWN_TYPES), "id": 1})
        if kind == "mutated frame":
            return kind, self.mutated_frame()
        if kind == "wild length":
            return kind, header(rng.randrange(MAX_FRAME_BYTES + 1, 2**32)) + b"x" * 9
        if kind == "empty frame":  # the launch after it must not be obeyed either
            self.never.append(job_id := next(self.hostile_ids))
            return kind, header(0) + frame(self.launch(job_id, {}))
        if kind == "truncated frame":
            data = frame(self.launch(1, {}))
            return kind, data[: rng.randrange(1, len(data))]
        return "clean close", b""

    def mutated_frame(self) -> bytes:
        """A frame with 1-4 bytes changed, that the agent would not obey (those are not sent:
        a mutated launch could run anything)."""
        rng = self.rng
        for _ in range(100):
            job_id = self.unknown_id()
            msg = rng.choice(
                [
                    self.launch(job_id, {"argv": rng.choice(SAFE_ARGV)}),
                    {"t": "kill", "job_id": job_id, "reason": "r"},
                    {"t": "exit_ack", "job_id": job_id},
                ]
            )
            data = bytearray(frame(msg))
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            if not agent_would_obey(bytes(data)):
                return bytes(data)
        return b"\xff" * 8


# ---- the agent -----------------------------------------------------------------------------


@dataclass
class Node:
    """The agent under test, its fake master, and a directory for its jobs."""

    master: FakeMaster
    proc: subprocess.Popen[bytes]
    work: Path
    link: Link | None = None  # the current link, for tests that reconnect as they go
    job_ids: Iterator[int] = field(default_factory=lambda: itertools.count(HOSTILE_ID_BASE))
    probe_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    unreported: list[int] = field(default_factory=list)  # launches whose exit is awaited

    def current_link(self) -> Link:
        if self.link is None or self.link.eof.is_set():
            self.link = self.master.connect()
        return self.link

    def probe(self, link: Link) -> None:
        """A well-behaved launch: it must start and exit 0."""
        job_id = next(self.probe_ids)
        link.send(frame(launch_msg(job_id, self.work, {})))
        self.assert_probes_ok([job_id], link)

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.proc.pid)

    def assert_healthy(self) -> None:
        log = self.master.log_text()
        assert self.proc.poll() is None, f"the agent died:\n{log[-3000:]}"
        if "Traceback" in log:
            at = log.index("Traceback")
            raise AssertionError(f"a traceback in the agent's log:\n{log[at - 300 : at + 3000]}")
        assert not self.master.bad, self.master.bad[:5]

    def wait_exits(self, job_ids: list[int], timeout_s: float = 20.0) -> None:
        exited = self.master.exited
        self.master.wait(lambda: all(j in exited for j in job_ids), timeout_s, f"exits {job_ids}")

    def assert_probes_ok(self, job_ids: list[int], link: Link | None = None) -> None:
        """The probes started and exited 0 (on ``link``, if given: it must stay up)."""
        exited = self.master.exited
        self.master.wait(
            lambda: all(j in exited for j in job_ids) or (link is not None and link.eof.is_set()),
            20,
            f"the exits of probes {job_ids}",
        )
        if link is not None and link.eof.is_set():
            self.assert_healthy()
            hang_ups = [line for line in self.master.log_text().splitlines() if "link:" in line]
            raise AssertionError(f"the agent hung up on valid frames: {hang_ups[-1:]}")
        for job_id in job_ids:
            assert job_id in self.master.started, f"no job_started for probe {job_id}"
            exit_msg = self.master.exited[job_id]
            assert (exit_msg["exit_code"], exit_msg["signal"], exit_msg["reason"]) == (
                0,
                None,
                "",
            ), exit_msg


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    master = FakeMaster(tmp_path)
    work = tmp_path / "jobs"
    work.mkdir()
    proc = master.start_agent("--heartbeat-interval", str(HEARTBEAT_S), "--allow-root-jobs")
    try:
        yield Node(master, proc, work)
    finally:
        stop_process(proc)
        master.close()


def hang_up(link: Link, data: bytes, what: str) -> None:
    """Send the last bytes of a link, close our side, and expect the agent to close its own."""
    link.send(data)
    link.end_writing()
    assert link.eof.wait(10), f"the agent did not hang up after: {what}"
    link.close()


def attack_handshake(master: FakeMaster, flood: Flood) -> str:
    """Answer the agent's next hello with something other than a proper registration."""
    rng = flood.rng
    link = master.accept()
    flood.never.append(never := next(flood.hostile_ids))
    launch = frame(flood.launch(never, {}))
    when = rng.choice(["before challenge", "after auth"])
    if when == "after auth":
        master.verify(link, master.challenge(link))
    garbage = rng.choice(
        [
            ("launch", launch),
            ("second challenge", frame({"t": "challenge", "nonce": b"n" * 32, "proof": b"p"})),
            ("random bytes", rng.randbytes(rng.randrange(1, 100))),
            ("bad challenge", frame({"t": "challenge", "nonce": "n", "proof": 5})),
            ("unknown type", frame({"t": "heartbeat", "gpus": []})),
            ("wild length", header(2**32 - 1)),
            ("empty frame", header(0)),
        ]
    )
    if when == "before challenge" and garbage[0] == "second challenge":
        garbage = ("launch", launch)  # a valid challenge with a wrong proof is fatal, rightly
    link.start_reading()
    hang_up(link, garbage[1], f"{garbage[0]} {when}")
    return f"{garbage[0]} {when}"


# ---- the tests -----------------------------------------------------------------------------


def test_agent_survives_a_flood_of_hostile_frames(node: Node) -> None:
    master, flood = node.master, Flood(random.Random(SEED), node.work)
    link = master.connect()
    frames, probes = flood.body(200)
    link.send(b"".join(frames))
    node.assert_probes_ok(probes, link)
    node.wait_exits(flood.launched)  # idle: no job holds a descriptor of the agent's
    rss_before, fds_before = node.ps.memory_info().rss, node.ps.num_fds()
    hang_up(link, b"", "warm-up")

    sent, endings = len(frames), []
    while sent < TOTAL_FRAMES:
        if len(master.links) % 5 == 4:
            endings.append(attack_handshake(master, flood))
            sent += 1
            continue
        link = master.connect()
        frames, probes = flood.body(BODY_FRAMES, huge=link.index in (2, 12))
        link.send(b"".join(frames))
        node.assert_probes_ok(probes, link)  # served throughout the flood
        kind, data = flood.terminator(link.index)
        hang_up(link, data, kind)
        endings.append(kind)
        sent += len(frames) + 1
        node.assert_healthy()

    # After the flood: still registers, still runs jobs, every launch was answered.
    link = master.connect()
    job_id, data = flood.probe()
    link.send(data)
    node.assert_probes_ok([job_id])
    node.wait_exits(flood.launched)
    for job_id in flood.stuck:
        assert master.exited[job_id]["timed_out"], master.exited[job_id]
    for job_id in flood.never:
        assert job_id not in master.started and job_id not in master.exited
    node.assert_healthy()
    guard = running_guard(master.state_dir)  # the fence guard is the agent's child too
    assert [c for c in node.ps.children() if c.pid != guard] == [], "jobs left running"
    rss_growth_mb = (node.ps.memory_info().rss - rss_before) / 2**20
    fds_after = node.ps.num_fds()

    registered = {link.index for link in master.links if link.registered}
    beats: dict[int, list[float]] = {}
    for index, at in master.heartbeats:
        beats.setdefault(index, []).append(at)
    gaps = [b - a for times in beats.values() for a, b in itertools.pairwise(times)]
    log = master.log_text()
    probe_count = sum(1 for job_id in master.exited if job_id < HOSTILE_ID_BASE)
    print(
        f"\nframes sent: {sent}, links: {len(master.links)} ({len(registered)} registered), "
        f"hang-ups: {len(endings)} of {len(set(endings))} kinds, launches: "
        f"{len(flood.launched)} hostile ({len(flood.stuck)} stopped) + {probe_count} probes, "
        f"heartbeats: {len(master.heartbeats)} (max gap {max(gaps):.2f} s), "
        f"RSS growth: {rss_growth_mb:.1f} MB, fds: {fds_before} -> {fds_after}"
    )
    assert rss_growth_mb < RSS_GROWTH_LIMIT_MB
    assert fds_after <= fds_before, "file descriptors leaked"
    assert max(gaps) < MAX_HEARTBEAT_GAP_S
    assert registered <= set(beats), "a registered link without heartbeats"
    # Each hang-up is a log line naming why.
    assert log.count("master link:") >= len(endings)


def test_agent_refuses_a_master_that_does_not_prove_the_key(node: Node) -> None:
    master = node.master
    link = master.accept()
    master.register(link)  # "ok" straight away: no challenge, so no proof of the key
    link.send(frame(launch_msg(7, node.work, {})))
    # Never obeyed; and not a reason to stop for good either (over plain TCP anyone on the
    # path can send an "ok"): the agent says why and comes back for a real master.
    again = master.connect()
    assert "did not prove that it holds our cluster key" in master.log_text()
    assert master.started == {} and master.exited == {}
    assert again.hello["node"]["node_id"] and node.proc.poll() is None
    node.probe(again)


@pytest.mark.parametrize("user", [USER, "nobody"])  # as the agent's user, or switched
def test_a_launch_without_a_command_fails_only_that_job(node: Node, user: str) -> None:
    master = node.master
    link = master.connect()
    no_command = launch_msg(5, node.work, {"argv": []}, user=user)  # and no script
    link.send(frame(no_command))
    master.wait(lambda: 5 in master.exited or link.eof.is_set(), 10, "the launch's outcome")
    node.assert_healthy()
    assert not link.eof.is_set(), "the agent dropped the link"
    assert master.exited[5]["exit_code"] not in (0, None) and master.exited[5]["reason"]
    node.probe(link)


# ---- hypothesis: generated master->node messages -------------------------------------------

WIRE_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
WILD_ST = st.one_of(
    st.none(),
    st.booleans(),
    WIRE_INTS,
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=70),
    st.lists(WIRE_INTS, max_size=3),
    st.dictionaries(st.text(max_size=3), WIRE_INTS, max_size=2),
)
# Never valid where used: for the fields that decide what runs, where, and for how long, a
# generated value of the right type could run anything or never end.
MISTYPED_ST = st.one_of(st.none(), st.binary(max_size=3), st.lists(WIRE_INTS, max_size=2))
RISKY = {"launch", "spec", "argv", "script", "cwd", "stdout_path", "name", "time_limit_s"}
RISKY |= {"kill_grace_s"}
BREAKABLE = [
    ("t",),
    ("id",),
    ("job_id",),
    ("reason",),
    ("data",),
    ("code",),
    ("message",),
    ("nonce",),
    ("proof",),
    ("launch",),
    *[("launch", key) for key in LAUNCH_FIELDS],
    *[("launch", "spec", key) for key in [*SPEC_FIELDS, "warn_signal", "gpus", "requeue"]],
]


def launches(work: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid launches whose command, directory, output paths, name and time limits come from
    harmless choices; the other fields are generated within their limits."""
    spec = st.fixed_dictionaries(
        {
            "argv": st.sampled_from([*SAFE_ARGV, ["no-such-program-mgpu"], ["/nonexistent"]]),
            # Never absent ("/") nor an empty string (the agent's own directory).
            "cwd": st.sampled_from([work, f"{work}/missing"]),
        },
        optional={
            "script": st.sampled_from([None, "exit 0\n", "echo $MGPU_JOB_ID\n", "exit 5\n"]),
            "stdout_path": st.sampled_from([None, "out-%j.txt", "missing/x", "%x-%j.out"]),
            "name": st.text(alphabet="ab-_ %", max_size=8),
            "time_limit_s": st.integers(0, 2),
            "interactive": st.booleans(),
            "gpus": st.integers(0, 64),
            "env": st.dictionaries(st.text(max_size=8), st.text(max_size=20), max_size=5),
            "warn_signal": st.sampled_from([0, 10, 15, 19]),  # 19: SIGSTOP
            "warn_before_s": st.integers(0, 65_535),
            "requeue": st.booleans(),
            "nice": st.integers(-10_000, 10_000),
        },
    )
    body = st.fixed_dictionaries(
        {
            "job_id": st.just("fresh"),  # the test puts a new id there (not a probe's)
            "spec": spec,
            "user": st.sampled_from([USER, USER, "nobody", "no-such-user", ""]),
        },
        optional={
            "kill_grace_s": st.floats(-5, 1),
            "gpu_indices": st.lists(st.integers(0, 63), max_size=3),
            "restart_count": st.integers(0, 2**31),
        },
    )
    return st.fixed_dictionaries({"t": st.just("launch"), "launch": body})


def master_messages(work: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid master->node messages: launches, kills and acks of unknown jobs, stray replies."""
    ids = st.integers(0, 2**53)
    # Not a launched job's: an ack would make the agent forget an exit we still wait for.
    unknown = st.integers(2 * HOSTILE_ID_BASE, 2**53)
    return st.one_of(
        launches(work),
        st.fixed_dictionaries(
            {"t": st.just("kill"), "job_id": unknown},
            optional={"reason": st.text(max_size=30)},
        ),
        st.fixed_dictionaries({"t": st.just("exit_ack"), "job_id": unknown}),
        st.fixed_dictionaries(
            {"t": st.just("ok")},
            optional={"id": ids, "data": st.dictionaries(st.text(max_size=5), WILD_ST)},
        ),
        st.fixed_dictionaries(
            {"t": st.just("error")},
            optional={
                "id": st.none() | ids,
                "code": st.text(max_size=256),
                "message": st.text(max_size=100),
            },
        ),
        st.fixed_dictionaries(
            {
                "t": st.just("challenge"),
                "nonce": st.binary(max_size=64),
                "proof": st.binary(max_size=64),
            },
            optional={"id": ids},
        ),
    )


def broken(msg: dict[str, Any], breaks: list[tuple[tuple[str, ...], Any, Any, bool]]) -> Any:
    """``msg`` with fields deleted, or replaced by wild values (by mistyped ones where a
    right-typed value could be harmful); sometimes still valid."""
    for path, wild, mistyped, delete in breaks:
        where: Any = msg
        for key in path[:-1]:
            where = where.get(key) if isinstance(where, dict) else None
        key = path[-1]
        if not isinstance(where, dict):
            continue
        if key in RISKY:
            where[key] = mistyped
        elif delete:
            where.pop(key, None)
        else:
            where[key] = wild
    return msg


def broken_messages(work: str) -> st.SearchStrategy[Any]:
    breaks = st.tuples(st.sampled_from(BREAKABLE), WILD_ST, MISTYPED_ST, st.booleans())
    return st.one_of(
        st.builds(broken, master_messages(work), st.lists(breaks, min_size=1, max_size=3)),
        st.dictionaries(st.sampled_from(FIELDS), WILD_ST, max_size=4),  # any map, even no t
        WILD_ST,  # not even a map
    )


@settings(
    max_examples=40,
    deadline=None,
    # One agent serves all examples, on purpose: it must survive them in sequence.
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(data=st.data())
def test_agent_digests_generated_master_messages(node: Node, data: st.DataObject) -> None:
    """A few valid messages, then often a broken one: the agent obeys the valid ones, hangs
    up on the broken one (or obeys it, if it is valid after all), and serves the next link."""
    work = str(node.work)
    messages = data.draw(st.lists(master_messages(work), max_size=6), label="messages")
    last = data.draw(st.none() | broken_messages(work), label="last")
    link = node.current_link()
    for msg in [*messages, last]:
        body = msg.get("launch") if isinstance(msg, dict) else None
        if isinstance(body, dict) and body.get("job_id") == "fresh":
            body["job_id"] = next(node.job_ids)
    assert all(valid(m) for m in messages), "the strategy made an invalid message"
    obeyed = last is None or valid(last)
    for msg in [*messages, last] if obeyed and last is not None else messages:
        if msg["t"] == "launch":
            node.unreported.append(msg["launch"]["job_id"])
    link.send(b"".join(frame(m) for m in messages))
    if last is not None:
        link.send(frame(last))
    if not obeyed:
        link.end_writing()
        assert link.eof.wait(10), "the agent kept a link that sent an invalid message"
        link = node.current_link()
    node.probe(link)
    node.assert_healthy()
    if len(node.unreported) >= 10 or data.draw(st.booleans(), label="check exits"):
        node.wait_exits(node.unreported)
        node.unreported.clear()
