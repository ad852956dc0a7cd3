"""``mgpu_master join-token``: the one command that joins a host, and the tokens behind it.

Run on the master's host, it asks the running master over its Unix socket (as an admin: root or
the master's own user) for a join token, and prints the command to run on the new host::

    mgpu_node join master.lab:6860 --token ID.SECRET --ca-hash sha256:HEX

The master's reply has everything the command needs (its port, its CA's hash, the names in its
certificate). The master's side is not a client library (mgpu_server imports no mgpu_client):
the few messages are spoken here over mgpu_core's blocking connection.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Any

import click

from mgpu_core import constants
from mgpu_core.config import Address, unix_address
from mgpu_core.conn import BlockingConnection
from mgpu_core.daemons import default_master_state_dir
from mgpu_core.errors import (
    MasterUnreachable,
    MgpuError,
    ProtocolError,
    UsageError,
    error_from_wire,
)
from mgpu_core.exitcodes import EXIT_UNREACHABLE
from mgpu_core.protocol import PROTOCOL_VERSION, Message
from mgpu_core.text import escape_controls
from mgpu_core.units import parse_duration_s

PROG = "mgpu_master join-token"
TIMEOUT_S = 30.0
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


class Unreachable(click.ClickException):
    exit_code = EXIT_UNREACHABLE  # is the master running? (nothing was done)


def _ttl(ctx: click.Context, param: click.Parameter, value: str) -> int:
    try:
        ttl_s = parse_duration_s(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if ttl_s < 1:
        raise click.BadParameter("a token must last at least 1s")
    return ttl_s


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--ttl",
    "ttl_s",
    default="1h",
    show_default=True,
    callback=_ttl,
    help="How long the token lasts: 90s, 30m, 1h, 7d, ...",
)
@click.option(
    "--uses", type=click.IntRange(1, 10_000), default=1, show_default=True, help="Hosts it joins."
)
@click.option(
    "--host",
    default=None,
    help="The master's name in the printed command: one its certificate is for "
    "[default: this host's FQDN if it is, else the certificate's first non-loopback name].",
)
@click.option("--list", "listing", is_flag=True, help="List the tokens in force and joined nodes.")
@click.option("--revoke", "revoke_id", metavar="ID", default=None, help="Revoke a token.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The master's state directory, where its socket is [default: as mgpu_master].",
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"The master's Unix socket [default: STATE_DIR/{constants.SOCKET_FILE}].",
)
def join_token_cli(
    *,
    ttl_s: int,
    uses: int,
    host: str | None,
    listing: bool,
    revoke_id: str | None,
    state_dir: Path | None,
    socket_path: Path | None,
) -> None:
    """Make a join token and print the command that joins a host with it (or --list, --revoke).
    Run on the master's host as root or as the master's user."""
    if listing and revoke_id is not None:
        raise click.UsageError("--list and --revoke do not go together")
    path = socket_path or (state_dir or default_master_state_dir()) / constants.SOCKET_FILE
    try:
        if listing:
            _print_listing(_request(path, action="list"))
        elif revoke_id is not None:
            if not _request(path, action="revoke", token_id=revoke_id)["revoked"]:
                raise UsageError(f"no join token {revoke_id} (used up, expired or revoked)")
            click.echo(f"revoked join token {revoke_id}")
        else:
            made = _request(path, action="create", ttl_s=ttl_s, uses=uses)
            try:
                address = _host(host, made["tls_names"])
            except UsageError:
                _request(path, action="revoke", token_id=made["token_id"])  # nobody has it
                raise
            _print_command(made, address)
    except MasterUnreachable as exc:
        raise Unreachable(exc.message) from None
    except MgpuError as exc:
        raise click.ClickException(exc.message) from None


def _request(path: Path, **fields: Any) -> dict[str, Any]:
    """One ``join_token`` request over the master's socket, whose kernel-checked peer is us."""
    conn = BlockingConnection.connect(unix_address(path), timeout_s=TIMEOUT_S)
    try:
        hello: Message = {"t": "hello", "id": 1, "version": PROTOCOL_VERSION, "role": "client"}
        for msg in (hello, {"t": "join_token", "id": 2, **fields}):
            conn.send(msg)
            reply = conn.recv(TIMEOUT_S)
            if reply["t"] == "error":
                raise error_from_wire(reply.get("code"), reply.get("message"))
            if reply["t"] != "ok" or not isinstance(reply.get("data"), dict):
                raise ProtocolError(f"unexpected {reply['t']!r} from the master")
        data: dict[str, Any] = reply["data"]
        return data
    except TimeoutError:
        raise ProtocolError(f"no answer from the master at {path}") from None
    finally:
        conn.close()


def _host(wanted: str | None, names: list[str]) -> str:
    if wanted is not None:
        if wanted not in names:
            raise UsageError(
                f"the master's certificate is not for {wanted}: use one of {', '.join(names)} "
                "(or a certificate made for it: mgpu_master init --host)"
            )
        return wanted
    fqdn = socket.getfqdn()
    if fqdn in names:
        return fqdn
    remote = [n for n in names if n not in LOOPBACK]
    return (remote or names or ["localhost"])[0]


def _print_command(made: dict[str, Any], host: str) -> None:
    address = Address(host, made["port"])  # its str() brackets an IPv6 host
    click.echo(f"mgpu_node join {address} --token {made['token']} --ca-hash {made['ca_hash']}")
    uses = made["uses"]
    click.echo(
        f"# join token {made['token_id']}: {uses} host{'s' if uses > 1 else ''}, until "
        f"{_time(made['expires_s'])}. Run the command above on the new host (as root; "
        "--install-service also runs the agent under systemd).",
        err=True,
    )


def _print_listing(data: dict[str, Any]) -> None:
    click.echo(f"{'TOKEN':<10} {'USES':>5}  {'EXPIRES':<20} BY")
    for row in data["tokens"]:
        expires = _time(row["expires_s"])
        by = escape_controls(row["created_by"])  # a token's user: any name an admin chose
        click.echo(f"{row['token_id']:<10} {row['uses_left']:>5}  {expires:<20} {by}")
    if data["nodes"]:
        click.echo(f"\n{'NODE':<24} {'JOINED':<20} {'TOKEN':<10} FROM")
        for node in data["nodes"]:
            joined = _time(node["joined_s"])
            click.echo(f"{node['node_id']:<24} {joined:<20} {node['token_id']:<10} {node['peer']}")


def _time(when_s: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when_s))
