"""TLS on the master's TCP port, by default: the master makes its CA and certificate at first
start (or `mgpu_master init` beforehand), nodes and token clients verify the master against
the CA, plaintext and foreign CAs are refused, and plain TCP is an explicit, warned choice."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mgpu_client.client import Client
from mgpu_core.config import parse_address, with_tls
from mgpu_core.errors import MasterUnreachable
from mgpu_core.models import JobSpec
from tests.helpers.cluster import running_cluster, wait_for

pytestmark = pytest.mark.timeout(120)


def init(state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mgpu_server", "init", "--state-dir", str(state), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_init_makes_a_ca_a_certificate_and_the_key(tmp_path: Path) -> None:
    state = tmp_path / "state"
    made = init(state, "--host", "127.0.0.1", "--host", "master.lab")
    assert made.returncode == 0, made.stderr
    tls = state / "tls"
    for name, mode in (("ca.key", 0o600), ("master.key", 0o600), ("ca.pem", 0o644)):
        assert stat.S_IMODE((tls / name).stat().st_mode) == mode, name
    assert stat.S_IMODE((state / "cluster.key").stat().st_mode) == 0o600
    assert f"mgpu_master --state-dir {state} uses them" in made.stdout
    again = init(state)
    assert again.returncode == 1
    assert again.stderr.strip() == (
        f"mgpu_master init: error: {tls / 'ca.pem'} exists: use --force to replace it"
    )
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((tls / "master.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "master.lab" in names.get_values_for_type(x509.DNSName)


def test_a_tls_cluster_end_to_end(tmp_path: Path) -> None:
    state = tmp_path / "master"
    assert init(state, "--host", "127.0.0.1").returncode == 0
    ca = state / "tls" / "ca.pem"
    config = tmp_path / "master.toml"
    config.write_text('[tls]\ncert = "master/tls/master.pem"\nkey = "master/tls/master.key"\n')
    with running_cluster(tmp_path, "--config", str(config), state_dir=state) as c:
        c.start_node("n1", 1, "--tls-ca", str(ca))
        address = with_tls(parse_address(c.address), str(ca))
        with Client(address, token=c.token("alice")) as alice:
            assert alice.user == "alice"
            job_id = alice.submit(JobSpec(argv=["true"], cwd="/"))
        assert c.wait_state(job_id, "COMPLETED")

        # The command-line clients: the CA from $MGPU_TLS_CA, the token from its file.
        token_file = tmp_path / "alice.token"
        token_file.write_text(str(c.token("alice")))
        token_file.chmod(0o600)
        env = {**c.env, "MGPU_MASTER": c.address, "MGPU_TOKEN_FILE": str(token_file)}
        ok = subprocess.run(
            [sys.executable, "-m", "mgpu_client", "whoami"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, "MGPU_TLS_CA": str(ca)},
        )
        assert ok.returncode == 0 and ok.stdout.startswith("alice (via token"), ok.stderr

        # Plaintext at a TLS port gets nowhere, in one line.
        env.pop("MGPU_TLS_CA")
        plain = subprocess.run(
            [sys.executable, "-m", "mgpu_client", "whoami"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, "MGPU_INSECURE_PLAINTEXT": "1"},
        )
        assert plain.returncode != 0 and len(plain.stderr.splitlines()) == 1, plain.stderr
        assert c.master is not None and c.master.poll() is None

        # A master whose certificate another CA signed is not believed.
        other = tmp_path / "other"
        assert init(other, "--host", "127.0.0.1").returncode == 0
        with pytest.raises(MasterUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            Client(with_tls(parse_address(c.address), str(other / "tls" / "ca.pem")))

        # A name the certificate does not carry is not believed either.
        by_name = with_tls(parse_address(f"localhost:{c.port}"), str(ca))
        with pytest.raises(MasterUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            Client(by_name)

        # The Unix socket stays as it was: no TLS, no token.
        assert c.cli("mgpu_client", "whoami", check=True).stdout.startswith("root")


def test_bad_tls_settings_stop_the_master_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "master.toml"
    config.write_text('[tls]\ncert = "missing.pem"\nkey = "missing.key"\n')
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mgpu_server",
            "--port",
            "0",
            "--state-dir",
            str(tmp_path / "s"),
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ},
    )
    assert result.returncode == 3
    (line,) = result.stderr.splitlines()[-1:]
    assert "cannot load TLS certificate" in line and "missing.pem" in line


def test_a_node_that_does_not_trust_the_master_stays_out(tmp_path: Path) -> None:
    state = tmp_path / "master"
    assert init(state, "--host", "127.0.0.1").returncode == 0
    other = tmp_path / "other"
    assert init(other, "--host", "127.0.0.1").returncode == 0
    config = tmp_path / "master.toml"
    config.write_text('[tls]\ncert = "master/tls/master.pem"\nkey = "master/tls/master.key"\n')
    with running_cluster(tmp_path, "--config", str(config), state_dir=state) as c:
        c.start_node("n1", 1, "--tls-ca", str(other / "tls" / "ca.pem"), wait=False)
        log = tmp_path / "node-n1.log"
        wait_for(
            lambda: "CERTIFICATE_VERIFY_FAILED" in log.read_text(errors="replace"),
            20,
            "the agent to reject the master's certificate",
        )
        assert c.nodes_json() == []
        assert c.nodes["n1"].poll() is None  # it keeps retrying: the admin may fix the CA


def test_tls_is_the_default_and_a_client_without_the_ca_sends_nothing(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as c:
        ca = c.master_state / "tls" / "ca.pem"
        assert ca.read_text().startswith("-----BEGIN CERTIFICATE")
        assert "(TLS)" in c.log_text("master")
        token_file = tmp_path / "alice.token"
        token_file.write_text(str(c.token("alice")))
        token_file.chmod(0o600)
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path / "home"),  # no ~/.config/mgpu/ca.pem there
            "MGPU_MASTER": c.address,
            "MGPU_TOKEN_FILE": str(token_file),
        }
        audit_before = c.audit()
        result = subprocess.run(
            [sys.executable, "-m", "mgpu_client.queue"],
            capture_output=True,
            text=True,
            timeout=30,
            env=env,
        )
        assert result.returncode != 0
        (line,) = result.stderr.splitlines()
        assert "no cluster CA to verify the master" in line, line
        assert c.audit() == audit_before  # not even a hello reached the master
        # With the CA the same command works.
        ok = subprocess.run(
            [sys.executable, "-m", "mgpu_client.queue"],
            capture_output=True,
            text=True,
            timeout=30,
            env={**env, "MGPU_TLS_CA": str(ca)},
        )
        assert ok.returncode == 0, ok.stderr


def test_plain_tcp_is_an_explicit_choice_warned_at_every_start(tmp_path: Path) -> None:
    with running_cluster(tmp_path, "--insecure-plaintext") as c:
        c.start_node("n1", 1)  # the agent needs --insecure-plaintext too (the helper adds it)
        with c.client("alice") as alice:
            assert alice.user == "alice"
        c.kill_master()
        c.start_master("--insecure-plaintext", port=c.port)
        warnings = c.log_text("master").count("plain TCP on the port (--insecure-plaintext)")
        assert warnings == 2
        assert not (c.master_state / "tls").exists()
