"""Users are who the master can trust: the kernel's word on its Unix socket, a token (proven,
never sent) over TCP; admins issue and revoke tokens, and a revoked token stops at once."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mgpu_client.client import Client
from mgpu_core import auth
from mgpu_core.config import parse_address
from mgpu_core.errors import AuthenticationFailed, ConnectionClosed, PermissionDenied
from mgpu_core.models import JobSpec
from tests.helpers.cluster import Cluster, running_cluster, wait_for
from tests.helpers.wire import client_hello, frame, read_frame

pytestmark = pytest.mark.timeout(90)

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("useradd") is None, reason="creates users: root only"
)


@contextlib.contextmanager
def system_user() -> Iterator[str]:
    """A real user on this host, removed afterwards."""
    name = f"mgpu-t-{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


def test_the_socket_names_the_user_and_a_claimed_name_is_ignored(cluster: Cluster) -> None:
    with Client(parse_address(cluster.socket_address), user="alice") as client:
        assert client.user == "root"
    result = cluster.cli("mgpu_client", "whoami", check=True)
    assert result.stdout.startswith("root (via Unix socket")


def test_tcp_without_a_token_is_refused_in_one_line(cluster: Cluster, tmp_path: Path) -> None:
    env = {"MGPU_MASTER": cluster.address, "HOME": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "mgpu_client.queue"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**cluster.env, **env},
    )
    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("mgpu_queue: error: no token file") and "need a user token" in line
    # A client claiming to be root over TCP gets nothing either.
    with pytest.raises(AuthenticationFailed):
        Client(cluster.tcp_address, user="root")


def test_token_cli_create_use_list_revoke(cluster: Cluster, tmp_path: Path) -> None:
    token_file = tmp_path / "alice.token"
    created = cluster.cli(
        "mgpu_client", "admin", "token", "create", "--output", str(token_file), "alice"
    )
    assert created.returncode == 0, created.stderr
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = auth.load_token(token_file)
    tcp = {**cluster.env, "MGPU_MASTER": cluster.address, "MGPU_TOKEN_FILE": str(token_file)}

    def as_alice(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "mgpu_client", *args],
            capture_output=True,
            text=True,
            timeout=30,
            env=tcp,
            cwd=tmp_path,
        )

    whoami = as_alice("whoami")
    assert whoami.stdout.startswith("alice (via token"), whoami.stderr
    submitted = as_alice("submit", "--hold", "true")
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(submitted.stdout.split()[-1])
    assert cluster.job(job_id)["user"] == "alice"
    # Not an admin: cannot issue tokens or drain nodes.
    refused = as_alice("admin", "token", "create", "alice")
    assert refused.returncode == 1 and "only an admin" in refused.stderr
    refused = as_alice("node", "drain", "n1")
    assert refused.returncode == 1 and "only an admin" in refused.stderr

    listing = cluster.cli("mgpu_client", "admin", "token", "list", check=True).stdout
    assert token.token_id in listing and "alice" in listing
    assert token.secret.hex() not in listing
    cluster.cli("mgpu_client", "admin", "token", "revoke", "alice", check=True)
    after = as_alice("whoami")
    assert after.returncode == 1 and f"token {token.token_id} is unknown or revoked" in after.stderr
    events = cluster.audit()
    assert any(
        e["event"] == "client_auth"
        and e["peer"].startswith("127.0.0.1:")
        and e["token"] == token.token_id
        for e in events
    )
    assert any(e["event"] == "token" and e["action"] == "revoke" for e in events)
    assert token.secret.hex() not in (cluster.master_state / "audit.log").read_text()


def test_tokens_are_not_created_over_plain_tcp(tmp_path: Path) -> None:
    config = tmp_path / "master.toml"
    config.write_text('admins = ["erin"]\n')
    plain = ("--config", str(config), "--insecure-plaintext")
    with running_cluster(tmp_path, *plain) as c, c.client("erin") as erin:
        with pytest.raises(PermissionDenied, match="in the clear"):
            erin.request("token", action="create", user="frank")
        assert erin.request("token", action="list")["tokens"]  # reading them is fine
    audit = c.master_state / "audit.log"
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600


def test_a_revoked_token_ends_open_sessions_at_once(cluster: Cluster) -> None:
    with cluster.client("bob") as bob, cluster.client("carol") as carol:
        bob.queue()
        cluster.cli("mgpu_client", "admin", "token", "revoke", "bob", check=True)
        with pytest.raises(ConnectionClosed):
            bob.queue()
        carol.queue()  # another user's session is untouched
    with pytest.raises(AuthenticationFailed, match="unknown or revoked"):
        Client(cluster.tcp_address, token=cluster.tokens["bob"])


def test_a_token_for_bob_cannot_cancel_alices_job(cluster: Cluster) -> None:
    with cluster.client("alice") as alice, cluster.client("bob") as bob:
        job_id = alice.submit(JobSpec(argv=["true"], hold=True, cwd="/"))
        (result,) = bob.cancel([job_id])
        assert isinstance(result.error(), PermissionDenied)
        with pytest.raises(PermissionDenied):
            bob.request("node_update", node_id="n1", action="drain")
    assert cluster.job(job_id)["state"] == "PENDING"


def test_a_forged_secret_or_an_unknown_id_is_refused_and_audited(cluster: Cluster) -> None:
    real = cluster.token("alice")
    forged = auth.Token(real.token_id, bytes(32))
    with pytest.raises(AuthenticationFailed):
        Client(cluster.tcp_address, token=forged)
    with pytest.raises(AuthenticationFailed, match="unknown or revoked"):
        Client(cluster.tcp_address, token=auth.Token("0" * 16, bytes(32)))
    assert any(
        e["event"] == "auth_failure" and e.get("client") == real.token_id for e in cluster.audit()
    )


def test_a_replayed_proof_is_refused(cluster: Cluster) -> None:
    """An eavesdropper who saw a whole exchange cannot answer a new challenge with it."""
    token = cluster.token("alice")

    def attempt(proof_for: bytes | None) -> tuple[dict[str, object], dict[str, object]]:
        with cluster.connect_tcp() as sock:
            nonce = b"n" * 32
            sock.sendall(frame(client_hello(token=token.token_id, nonce=nonce)))
            challenge = read_frame(sock)
            assert challenge is not None
            theirs = challenge["nonce"]
            assert isinstance(theirs, bytes)
            proof = proof_for or auth.proof(
                token.secret, "client", token.token_id, theirs, nonce, cluster.binding
            )
            sock.sendall(frame({"t": "auth", "proof": proof}))
            answer = read_frame(sock)
            assert answer is not None
            return challenge, answer

    first_challenge, ok = attempt(None)
    assert ok["t"] == "ok"
    nonce = first_challenge["nonce"]
    assert isinstance(nonce, bytes)
    recorded = auth.proof(token.secret, "client", token.token_id, nonce, b"n" * 32, cluster.binding)
    _, refused = attempt(recorded)  # same client nonce, but the master's nonce is new
    assert refused["t"] == "error" and refused["code"] == "authentication_failed"


def test_tokens_survive_a_master_restart(cluster: Cluster) -> None:
    token = cluster.token("dave")
    cluster.kill_master()
    cluster.start_master(port=cluster.port)
    with Client(cluster.tcp_address, token=token) as client:
        assert client.user == "dave"
    db = cluster.master_state / "mgpu.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600  # it holds the token secrets


def test_admins_from_the_config_may_manage_tokens(tmp_path: Path) -> None:
    config = tmp_path / "master.toml"
    config.write_text('admins = ["erin"]\n')
    with running_cluster(tmp_path, "--config", str(config)) as c, c.client("erin") as erin:
        frank = c.token("frank")  # made on the master's host; erin manages them remotely
        listed = erin.request("token", action="list", user="frank")["tokens"]
        assert [t["token_id"] for t in listed] == [frank.token_id]
        assert erin.request("token", action="revoke", user="frank")["revoked"]
        with pytest.raises(AuthenticationFailed):
            Client(c.tcp_address, token=frank)
        with c.client("gina") as gina:
            assert gina.user == "gina"
            with pytest.raises(PermissionDenied):
                gina.request("token", action="list")


def test_a_token_file_readable_by_others_is_refused(cluster: Cluster, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(str(cluster.token("alice")) + "\n")
    token_file.chmod(0o644)
    env = {**cluster.env, "MGPU_MASTER": cluster.address, "MGPU_TOKEN_FILE": str(token_file)}
    result = subprocess.run(
        [sys.executable, "-m", "mgpu_client", "whoami"],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 1
    assert result.stderr.strip().endswith(f"is accessible by others: chmod 600 {token_file}")


def test_socket_is_refused_to_a_second_master(cluster: Cluster, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mgpu_server",
            "--port",
            "0",
            "--host",
            "127.0.0.1",
            "--state-dir",
            str(tmp_path / "other"),
            "--socket",
            cluster.socket_address.removeprefix("unix:"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 3
    assert "another master is listening on" in result.stderr


def as_user(name: str, sock_path: Path, requests: list[dict[str, object]]) -> list[object]:
    """Talk to the master's socket from a child process that has become ``name`` (the
    interpreter under /root is not executable by others, so no new Python is started)."""
    import json
    import pwd

    entry = pwd.getpwnam(name)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(10)
                sock.connect(str(sock_path))
                answers = []
                for request in requests:
                    sock.sendall(frame(request))
                    answers.append(read_frame(sock))
            os.write(write_end, json.dumps(answers, default=repr).encode())
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return list(json.loads(data))


@needs_root
def test_another_users_socket_connection_is_that_user(tmp_path: Path) -> None:
    """SO_PEERCRED with a real second user: the master hears the kernel, not the client."""
    shared = Path(f"/tmp/mgpu-sock-{secrets.token_hex(4)}")
    shared.mkdir(mode=0o755)
    try:
        sock = shared / "master.sock"
        with running_cluster(tmp_path, "--socket", str(sock)) as c, system_user() as name:
            hello = client_hello(user="root")
            drain = {"t": "node_update", "id": 2, "node_id": "x", "action": "drain"}
            ok, refused = as_user(name, sock, [hello, drain])
            assert isinstance(ok, dict) and ok["t"] == "ok" and ok["data"]["user"] == name
            assert isinstance(refused, dict) and refused["code"] == "permission_denied"
            assert c.master is not None and c.master.poll() is None
    finally:
        shutil.rmtree(shared, ignore_errors=True)


@needs_root
def test_root_installs_a_token_into_the_users_home(cluster: Cluster) -> None:
    with system_user() as name:
        result = cluster.cli("mgpu_client", "admin", "token", "create", "--install", name)
        assert result.returncode == 0, result.stderr
        home = Path(os.path.expanduser(f"~{name}"))
        token_file = home / ".config" / "mgpu" / "token"
        info = token_file.stat()
        assert stat.S_IMODE(info.st_mode) == 0o600
        import pwd

        assert info.st_uid == pwd.getpwnam(name).pw_uid
        with Client(cluster.tcp_address, token=auth.load_token(token_file)) as client:
            assert client.user == name
    wait_for(lambda: not home.exists(), 10, "the test user's home removed")
