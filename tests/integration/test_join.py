"""One command joins a host: `mgpu_master join-token` prints `mgpu_node join HOST:PORT --token
ID.SECRET --ca-hash sha256:HEX`; run on the new host, it gets the node's own key over a channel
pinned by the CA's hash, stores it, and starts the agent. Real master, real `mgpu_node join`
processes; every refusal is one line and the master keeps serving."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mgpu_client.client import Client
from mgpu_client.launch import agent_command, spawn
from mgpu_core.config import parse_address
from mgpu_core.models import JobSpec
from mgpu_node import service
from tests.helpers.cluster import NODE_CPUS, START_TIMEOUT_S, Cluster, running_cluster, wait_for

pytestmark = pytest.mark.timeout(120)

PY = sys.executable
# The test agents' usual options (tests/helpers/cluster.py), passed through the join.
AGENT_OPTIONS = (
    *("--gpu-count", "1", "--cpus", str(NODE_CPUS), "--heartbeat-interval", "0.5"),
    *("--stop-jobs-on-exit", "--job-user", "agent", "--allow-root-jobs"),
)


def join_token(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PY, "-m", "mgpu_server", "join-token", "--state-dir", str(c.master_state), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def new_command(c: Cluster, *args: str) -> list[str]:
    """The printed join command's arguments after `mgpu_node join`."""
    made = join_token(c, "--host", "127.0.0.1", *args)
    assert made.returncode == 0, made.stderr
    (line,) = made.stdout.splitlines()
    words = line.split()
    assert words[:2] == ["mgpu_node", "join"] and words[2] == f"127.0.0.1:{c.port}", line
    assert words[3] == "--token" and words[5] == "--ca-hash" and len(words) == 7, line
    return words[2:]


def token_id(command: list[str]) -> str:
    return command[2].split(".")[0]


def join(command: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    """A join that stores the credentials (or is refused) and starts no agent."""
    return subprocess.run(
        [PY, "-m", "mgpu_node", "join", *command, "--no-start", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )


def start_join(c: Cluster, command: list[str], node_id: str, *args: str) -> Path:
    """`mgpu_node join` as the process that goes on as the node's agent; returns its config
    directory once the node is up."""
    config_dir = c.tmp / f"etc-{node_id}"
    argv = [PY, "-m", "mgpu_node", "join", *command, "--node-id", node_id]
    argv += ["--config-dir", str(config_dir), *args, *AGENT_OPTIONS]
    argv += ["--state-dir", str(c.tmp / f"node-{node_id}")]
    c.nodes[node_id] = spawn(argv, log=c.log(f"node-{node_id}"), env=_env())
    c.wait_for(lambda: c.node_up(node_id), START_TIMEOUT_S, f"{node_id} to join", node_id)
    return config_dir


def _env() -> dict[str, str]:
    """No master named by the environment: the join's own address must be what counts."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MGPU_")}


def one_line_error(result: subprocess.CompletedProcess[str], code: int, words: str) -> None:
    assert result.returncode == code, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith("mgpu_node join: error: ") and words in line, line


def test_one_command_joins_a_host_once_per_use(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as c:
        command = new_command(c)
        config_dir = start_join(c, command, "j1")
        key, ca = config_dir / "node.key", config_dir / "ca.pem"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(ca.stat().st_mode) == 0o644
        assert ca.read_text() == (c.master_state / "tls" / "ca.pem").read_text()
        assert (config_dir / "node.toml").read_text() == (
            f'master = "127.0.0.1:{c.port}"\nnode_id = "j1"\n'
        )
        with Client(parse_address(c.socket_address)) as admin:
            job_id = admin.submit(JobSpec(argv=["true"], cwd="/"))
        assert c.wait_state(job_id, "COMPLETED")["node"] == "j1"

        # A single-use token is spent: the next host is refused, in one line.
        again = join(command, "--node-id", "j2", "--config-dir", str(tmp_path / "etc-j2"))
        one_line_error(again, 1, f"join token {token_id(command)} is unknown: used up")
        assert not (tmp_path / "etc-j2").exists()

        events = c.audit()
        joined = [e for e in events if e["event"] == "node_join"]
        assert [(e["node"], e["token"]) for e in joined] == [("j1", token_id(command))]
        assert {"event": "node_auth", "node": "j1", "credential": "node key"}.items() <= next(
            e for e in events if e["event"] == "node_auth"
        ).items()
        assert any(e["event"] == "join_refused" and e["node"] == "j2" for e in events)
        listed = join_token(c, "--list")
        assert listed.returncode == 0 and "j1" in listed.stdout.split("NODE", 1)[1]
        assert c.master is not None and c.master.poll() is None


def test_a_node_key_registers_its_own_node_id_only(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as c:
        command = new_command(c, "--uses", "2")
        for node_id in ("j1", "j2"):
            done = join(command, "--node-id", node_id, "--config-dir", str(tmp_path / node_id))
            assert done.returncode == 0, done.stderr
        j1_key = tmp_path / "j1" / "node.key"

        def register(node_id: str, key_file: Path) -> int:
            argv = agent_command(
                master_port=c.port,
                node_id=node_id,
                gpus=1,
                state_dir=tmp_path / f"state-{node_id}",
                key_file=key_file,
                tls_ca=c.ca_file,
                extra=("--stop-jobs-on-exit",),
            )
            # A refused agent exits at once (3); one that registers runs until stopped.
            proc = spawn(argv, log=c.log(f"node-{node_id}"))
            c.nodes[node_id] = proc
            wait_for(
                lambda: proc.poll() is not None or c.node_up(node_id), 30, f"{node_id} to settle"
            )
            code = proc.poll()
            return 0 if code is None else code

        # Node j1's key passes neither for an id of the legacy path nor for another joined node.
        assert register("intruder", j1_key) == 3
        assert register("j2", j1_key) == 3
        # The shared cluster key no longer registers an id that has a key of its own ...
        assert register("j1", c.key_file) == 3
        # ... but still registers one that has none (the legacy path).
        assert register("legacy", c.key_file) == 0
        assert sorted(n["node_id"] for n in c.nodes_json()) == ["legacy"]

        # A plain `mgpu_node --config-dir` finds the joined master, node id, key and CA.
        argv = [PY, "-m", "mgpu_node", "--config-dir", str(tmp_path / "j1"), *AGENT_OPTIONS]
        argv += ["--state-dir", str(tmp_path / "state-j1b")]
        c.nodes["j1b"] = spawn(argv, log=c.log("node-j1b"), env=_env())
        c.wait_for(lambda: c.node_up("j1"), START_TIMEOUT_S, "j1 to register", "j1b")


def test_tokens_expire_and_are_revoked(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as c:
        command = new_command(c)
        listed = join_token(c, "--list")
        assert listed.returncode == 0 and token_id(command) in listed.stdout
        revoked = join_token(c, "--revoke", token_id(command))
        assert (
            revoked.returncode == 0
            and revoked.stdout == f"revoked join token {token_id(command)}\n"
        )
        refused = join(command, "--node-id", "r1", "--config-dir", str(tmp_path / "r1"))
        one_line_error(refused, 1, "is unknown")
        twice = join_token(c, "--revoke", token_id(command))
        assert twice.returncode == 1 and "no join token" in twice.stderr

        short = new_command(c, "--ttl", "1s")
        made_by = time.time()
        wait_for(lambda: time.time() > made_by + 1.2, 10, "the token to expire")
        expired = join(short, "--node-id", "e1", "--config-dir", str(tmp_path / "e1"))
        one_line_error(expired, 1, f"join token {token_id(short)} expired")
        assert not (tmp_path / "e1").exists()

        # The admin's own mistakes: one line each.
        for args, words in (
            (("--ttl", "soon"), "invalid duration"),
            (("--host", "elsewhere.lab"), "not for elsewhere.lab"),
            (("--list", "--revoke", "x"), "do not go together"),
        ):
            wrong = join_token(c, *args)
            (line,) = wrong.stderr.splitlines()
            assert wrong.returncode != 0 and words in line, line
        # The token made for a host its certificate does not name was taken back.
        assert token_id(short) not in join_token(c, "--list").stdout
        assert len(join_token(c, "--list").stdout.splitlines()) == 1  # the header only


def test_a_wrong_ca_hash_or_master_costs_nothing(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as c:
        command = new_command(c)
        config_dir = tmp_path / "etc"
        wrong_hash = [*command[:4], "sha256:" + "0" * 64]
        refused = join(wrong_hash, "--node-id", "w1", "--config-dir", str(config_dir))
        one_line_error(refused, 1, "does not match --ca-hash")
        assert not config_dir.exists()

        with socket.socket() as probe:  # a port nobody listens on
            probe.bind(("127.0.0.1", 0))
            free_port = probe.getsockname()[1]
        away = join([f"127.0.0.1:{free_port}", *command[1:]], "--config-dir", str(config_dir))
        one_line_error(away, 2, "cannot reach the master")
        typo = join(command, "--node-id", "w1", "--config-dir", str(config_dir), "--gpu-cont", "2")
        one_line_error(typo, 64, "No such option '--gpu-cont'")
        assert not config_dir.exists()

        # None of that spent the token: it still joins a host.
        done = join(command, "--node-id", "w1", "--config-dir", str(config_dir))
        assert done.returncode == 0, done.stderr
        assert (config_dir / "node.key").exists()
        assert c.master is not None and c.master.poll() is None
        assert c.nodes_json() == []  # --no-start: no agent


@pytest.mark.skipif(
    service.systemd_running(), reason="systemd runs here: the test would enable a real service"
)
def test_install_service_writes_a_unit_systemd_accepts(tmp_path: Path) -> None:
    unit_dir = tmp_path / "systemd"
    unit_dir.mkdir()
    with running_cluster(tmp_path) as c:
        config_dir = start_join(
            c, new_command(c), "s1", "--install-service", "--systemd-dir", str(unit_dir)
        )
        unit = unit_dir / "mgpu-node.service"
        text = unit.read_text()
        (exec_start,) = [line for line in text.splitlines() if line.startswith("ExecStart=")]
        assert f"--node-id s1 --key-file {config_dir / 'node.key'}" in exec_start
        assert f"--master-port {c.port}" in exec_start and "--gpu-count 1" in exec_start
        assert "systemd is not running on this host" in c.log_text("node-s1")
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            pytest.skip("systemd-analyze is not installed")
        checked = subprocess.run(
            [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 0 and checked.stderr == "", checked.stderr
