"""``mgpu_node join HOST:PORT --token ID.SECRET --ca-hash sha256:HEX``: one command joins a
host. It gets the node's own key from the master over a channel pinned by the CA's hash
(mgpu_core.joining), stores it with the CA in the node's config directory (nodeconf.py), and
starts the agent with them, or has systemd do it (``--install-service``, service.py).

Everything that can be checked here is checked before the master is asked (the agent options
passed through, the directories written to): a join token may have one use only.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from mgpu_core import constants
from mgpu_core.cliutil import run_click
from mgpu_core.config import Address, parse_address
from mgpu_core.conn import BlockingConnection
from mgpu_core.errors import (
    ConfigError,
    MasterUnreachable,
    MgpuError,
    ProtocolError,
    error_from_wire,
)
from mgpu_core.exitcodes import EXIT_UNREACHABLE
from mgpu_core.handshake import Initiator
from mgpu_core.joining import (
    JOIN_CHALLENGE,
    JOIN_ROLE,
    JOIN_WELCOME,
    NODE_KEY_BYTES,
    JoinToken,
    node_id_problem,
    parse_ca_hash,
    parse_join_token,
)
from mgpu_core.protocol import MAX_FRAME_BYTES, PROTOCOL_VERSION
from mgpu_core.text import escape_controls
from mgpu_core.tls import binding
from mgpu_node import nodeconf, service
from mgpu_node.pinning import check_master, discovery_context

PROG = "mgpu_node join"
T = TypeVar("T")
TIMEOUT_S = 10.0
# Options the join sets on the agent itself: passed through as well, they would contradict it.
OWN_AGENT_OPTIONS = (
    "--master-host",
    "--master-port",
    "--node-id",
    "--key-file",
    "--tls-ca",
    "--insecure-plaintext",
    "--config-dir",
)


class Unreachable(click.ClickException):
    exit_code = EXIT_UNREACHABLE  # as every client's: nothing was done, try again later


def _parsed(parse: Callable[[str], T]) -> Callable[[click.Context, click.Parameter, str], T]:
    """A click callback: ``parse``'s ConfigError becomes the option's one-line usage error."""

    def callback(ctx: click.Context, param: click.Parameter, value: str) -> T:
        try:
            return parse(value)
        except MgpuError as exc:
            raise click.BadParameter(exc.message) from None

    return callback


def _tcp_address(text: str) -> Address:
    address = parse_address(text)
    if address.path:
        raise ConfigError("a host joins over the master's TCP port: use HOST:PORT")
    return address


def main(agent: click.Command, args: list[str]) -> None:
    """Run ``mgpu_node join ARGS``; ``agent`` is the agent's command, which checks the options
    passed through to it before the join spends its token."""
    join_cli.context_settings["obj"] = agent
    run_click(join_cli, PROG, args)


@click.command(
    context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True}
)
@click.argument("master", metavar="HOST:PORT", callback=_parsed(_tcp_address))
@click.option(
    "--token", required=True, callback=_parsed(parse_join_token), help="ID.SECRET, as printed."
)
@click.option(
    "--ca-hash", required=True, callback=_parsed(parse_ca_hash), help="sha256:HEX, as printed."
)
@click.option("--node-id", default=None, help="Name of this node [default: hostname].")
@nodeconf.config_dir_option
@click.option(
    "--install-service",
    is_flag=True,
    help="Write the agent's systemd unit and enable it (systemctl enable --now) instead of "
    "running the agent here.",
)
@click.option(
    "--systemd-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=constants.SYSTEMD_UNIT_DIR,
    show_default=True,
    help="Where --install-service writes the unit.",
)
@click.option("--no-start", is_flag=True, help="Store the credentials; do not start the agent.")
@click.argument("agent_options", nargs=-1, type=click.UNPROCESSED)
@click.pass_obj
def join_cli(
    agent: click.Command,
    *,
    master: Address,
    token: JoinToken,
    ca_hash: str,
    node_id: str | None,
    config_dir: Path | None,
    install_service: bool,
    systemd_dir: Path,
    no_start: bool,
    agent_options: tuple[str, ...],
) -> None:
    """Join this host to a cluster and run its agent; any other options (--gpu-count,
    --state-dir, ...) go to the agent (mgpu_node --help), and into the systemd unit as given
    (use absolute paths)."""
    name = node_id or socket.gethostname().split(".")[0]
    problem = node_id_problem(name)
    if problem:
        raise click.BadParameter(problem, param_hint="'--node-id'")
    joined = nodeconf.JoinedNode(config_dir or nodeconf.default_config_dir(), str(master), name)
    argv = agent_argv(joined, agent_options)
    _check_agent_options(agent, argv, agent_options)
    try:
        _check_writable(joined.directory)
        if install_service:
            service.check_writable(systemd_dir)
        ca_pem, key = fetch_node_key(master, token, ca_hash=ca_hash, node_id=name)
        nodeconf.save(joined, ca_pem=ca_pem, key=key)
        click.echo(
            f"joined the cluster at {master} as node {name}: key in {joined.key_file}", err=True
        )
        if install_service and _install(systemd_dir, service.render(argv), start=not no_start):
            return
    except MasterUnreachable as exc:
        raise Unreachable(escape_controls(exc.message)) from None
    except MgpuError as exc:
        # Printed as text from a peer: whoever answers on the master's address wrote it.
        raise click.ClickException(escape_controls(exc.message)) from None
    if not no_start:
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(argv[0], argv)


def agent_argv(joined: nodeconf.JoinedNode, options: tuple[str, ...]) -> list[str]:
    """The agent's command line for a joined node: its program, then every credential named."""
    master = parse_address(joined.master)
    return [
        *agent_program(),
        *("--master-host", master.host, "--master-port", str(master.port)),
        *("--node-id", joined.node_id),
        *("--key-file", str(joined.key_file.absolute())),
        *("--tls-ca", str(joined.ca_file.absolute())),
        *options,
    ]


def agent_program() -> list[str]:
    """The agent as a program: the bundle's when frozen (PyInstaller), else this Python's."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "mgpu_node"]
    return [sys.executable, "-m", "mgpu_node"]


def _check_agent_options(agent: click.Command, argv: list[str], options: tuple[str, ...]) -> None:
    """Refuse now what the agent would refuse once started: a typo must not cost the token."""
    for option in options:
        name = option.split("=", 1)[0]
        if name in OWN_AGENT_OPTIONS:
            raise click.UsageError(f"{name} is the join's to set, not the agent's")
    program = len(agent_program())
    with agent.make_context("mgpu_node", argv[program:]):
        pass  # parsed and checked: the command itself does not run


def _check_writable(directory: Path) -> None:
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise ConfigError(f"cannot write into {directory}: run as root, or choose --config-dir")


def _install(unit_dir: Path, unit: str, *, start: bool) -> bool:
    """Write and enable the unit; True if systemd now runs the agent, False if it should be
    started here (systemd is not this host's init: nothing to enable the unit with)."""
    path = service.install(unit_dir, unit)
    if not service.systemd_running():
        then = "starting the agent here instead" if start else "not starting the agent (--no-start)"
        click.echo(
            f"systemd is not running on this host: wrote {path} but did not enable it; {then}",
            err=True,
        )
        return False
    service.enable(start=start)
    runs = "runs" if start else "will run (at the next boot, or systemctl start)"
    click.echo(f"wrote {path}; the agent {runs} as systemd service {service.SERVICE}", err=True)
    return True


def fetch_node_key(
    master: Address, token: JoinToken, *, ca_hash: str, node_id: str
) -> tuple[str, bytes]:
    """The cluster's CA (PEM) and this node's own key, from the master at ``master``."""
    try:
        sock = socket.create_connection((master.host, master.port), timeout=TIMEOUT_S)
    except OSError as exc:
        why = exc.strerror or str(exc) or type(exc).__name__
        raise MasterUnreachable(f"cannot reach the master at {master}: {why}") from None
    try:
        tls = discovery_context().wrap_socket(sock, server_hostname=master.host)
    except OSError as exc:  # ssl.SSLError included: a master without TLS, say
        sock.close()
        raise MasterUnreachable(f"no TLS from the master at {master}: {exc}") from None
    conn = BlockingConnection(tls, master, MAX_FRAME_BYTES)
    try:
        return _exchange(conn, tls.getpeercert(binary_form=True) or b"", token, ca_hash, node_id)
    except TimeoutError:
        raise MasterUnreachable(f"no answer from the master at {master}") from None
    finally:
        conn.close()


def _exchange(
    conn: BlockingConnection, leaf_der: bytes, token: JoinToken, ca_hash: str, node_id: str
) -> tuple[str, bytes]:
    master = conn.address
    handshake = Initiator(
        token.secret,
        JOIN_ROLE,
        token.token_id,
        peer=f"the master at {master}",
        binding=binding(leaf_der),
    )
    hello = {"t": "hello", "id": 1, "version": PROTOCOL_VERSION, "role": JOIN_ROLE}
    conn.send({**hello, "token": token.token_id, "node_id": node_id, **handshake.hello_fields()})
    reply = conn.recv(TIMEOUT_S)
    ca_pem = ""
    if reply.get("t") == "challenge":
        # The pin first: nothing is proven to a master whose CA is not the one we were given.
        ca_pem = JOIN_CHALLENGE.check(reply)["ca_pem"]
        check_master(ca_pem, leaf_der, host=master.host, pinned=ca_hash)
    conn.send(handshake.on_challenge(reply))  # raises the master's error, if it refused
    reply = conn.recv(TIMEOUT_S)
    if reply.get("t") == "error":
        raise error_from_wire(reply.get("code"), reply.get("message"))
    if reply.get("t") != "ok":
        raise ProtocolError(f"expected the master's ok, got {reply.get('t')!r}")
    welcome = JOIN_WELCOME.check(reply.get("data"), "data")
    if welcome["node_id"] != node_id or len(welcome["key"]) < NODE_KEY_BYTES:
        raise ProtocolError(f"the master's answer is not a key for node {node_id}")
    return ca_pem, welcome["key"]
