"""``mgpu_master``: command line -> ServerConfig -> Server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import click

from mgpu_core import __version__, auth, constants
from mgpu_core.cliutil import LOG_LEVELS, StartupFailure, configure_logging, run_click
from mgpu_core.config import unix_address
from mgpu_core.daemons import ServerConfig, default_master_state_dir
from mgpu_core.errors import MgpuError
from mgpu_core.protocol import DEFAULT_PORT
from mgpu_core.units import parse_size
from mgpu_server.net.server import Server
from mgpu_server.scheduling.policy import PolicyConfig
from mgpu_server.settings import MasterSettings, load_master_settings
from mgpu_server.storage.sqlite_store import SqliteStore, earlier_state, open_store


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="TCP port (0 picks a free one; see --port-file).",
)
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Where state lives [default: {constants.SYSTEM_STATE_DIR} as root, else "
    f"~/.local/state/mgpu/{constants.MASTER_DIR}].",
)
@click.option(
    "--port-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the bound port here once listening (for --port 0).",
)
@click.option(
    "--socket",
    "socket_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Unix socket for clients on this host, who need no token there "
    f"[default: STATE_DIR/{constants.SOCKET_FILE}].",
)
@click.option(
    "--no-socket", is_flag=True, help="Do not listen on a Unix socket (TCP clients only)."
)
@click.option(
    "--node-timeout",
    "node_timeout_s",
    type=click.FloatRange(min=0.1),
    default=constants.NODE_TIMEOUT_S,
    show_default=True,
    help="Seconds of node silence before it is marked not responding (no new jobs there).",
)
@click.option(
    "--fence-timeout",
    "fence_timeout_s",
    type=click.FloatRange(min=0.1),
    default=constants.FENCE_TIMEOUT_S,
    show_default=True,
    help="Seconds a node without word from the master lets its jobs run before it kills them; "
    "the master requeues a silent node's jobs only after this plus the kill grace and a margin.",
)
@click.option(
    "--kill-grace",
    "kill_grace_s",
    type=click.FloatRange(min=0.0),
    default=constants.KILL_GRACE_S,
    show_default=True,
    help="Seconds between SIGTERM and SIGKILL on cancel.",
)
@click.option(
    "--hello-timeout",
    "hello_timeout_s",
    type=click.FloatRange(min=0.01),
    default=constants.HELLO_TIMEOUT_S,
    show_default=True,
    help="Seconds a new connection has to say hello.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=constants.MAX_CONNECTIONS,
    show_default=True,
    help="Open connections in total (nodes and clients).",
)
@click.option(
    "--max-connections-per-address",
    type=click.IntRange(min=1),
    default=constants.MAX_CONNECTIONS_PER_ADDRESS,
    show_default=True,
    help="Open connections from one address.",
)
@click.option(
    "--max-client-backlog",
    "max_client_backlog",
    metavar="SIZE",
    default="64M",
    show_default=True,
    callback=lambda ctx, param, value: _size(value, param),
    help="Job output a following client (srun, attach) may fall behind by (bytes, or with "
    "K, M, G) before it is told it reads too slowly; it then re-attaches from what it printed.",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML file: scheduling weights, QoS, admins (see docs/scheduling.md).",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default="info",
    show_default=True,
)
@click.option(
    "--reset-state",
    is_flag=True,
    help="If the state database is missing, empty or corrupt, move it aside "
    f"({constants.DB_FILE}.broken-<time>) and start with no jobs (without this the master "
    "refuses to start).",
)
@click.version_option(__version__, prog_name="mgpu_master")
def cli(
    *,
    host: str,
    port: int,
    state_dir: Path | None,
    port_file: Path | None,
    socket_path: Path | None,
    no_socket: bool,
    node_timeout_s: float,
    fence_timeout_s: float,
    kill_grace_s: float,
    hello_timeout_s: float,
    config_file: Path | None,
    max_connections: int,
    max_connections_per_address: int,
    max_client_backlog: int,
    log_level: str,
    reset_state: bool,
) -> None:
    """The mgpu master: job queue, node registry and scheduler."""
    configure_logging(log_level)
    state = state_dir or default_master_state_dir()
    try:
        state.mkdir(parents=True, exist_ok=True)
        if not no_socket:
            socket_path = (socket_path or state / constants.SOCKET_FILE).absolute()
            unix_address(socket_path)  # refuses a path too long for a socket
        config = ServerConfig(
            host=host,
            port=port,
            state_dir=state,
            port_file=port_file,
            socket_path=None if no_socket else socket_path,
            node_timeout_s=node_timeout_s,
            fence_timeout_s=fence_timeout_s,
            kill_grace_s=max(kill_grace_s, 0.01),
            hello_timeout_s=hello_timeout_s,
            max_connections=max_connections,
            max_connections_per_address=max_connections_per_address,
            max_client_backlog_bytes=max_client_backlog,
        ).validate()
    except (OSError, MgpuError) as exc:
        raise StartupFailure(f"cannot start: {exc}") from None
    with _startup_errors("cannot start"):
        settings = (
            load_master_settings(config_file) if config_file else MasterSettings(PolicyConfig())
        )
        # Before anything else is created here: a key or an audit log next to no database
        # means the history was lost (see open_store).
        store = open_store(state, reset=reset_state)
        # Created on first start, mode 0600: copy it to each node (--key-file there).
        cluster_key = auth.load_or_create_key(state / constants.KEY_FILE)
        _audit_to(state / constants.AUDIT_FILE)
    config = dataclasses.replace(
        config,
        admins=settings.admins,
        private_commands=settings.private_commands,
        tls_cert=settings.tls_cert,
        tls_key=settings.tls_key,
    )
    with _startup_errors(f"cannot listen on {host}:{port}"):
        asyncio.run(_serve(config, store, settings.policy, cluster_key))


def _size(text: str, param: click.Parameter) -> int:
    try:
        size = parse_size(text, default_unit="B")
    except ValueError as exc:
        raise click.BadParameter(str(exc), param=param) from None
    if size < 1024:
        raise click.BadParameter(f"{text!r} is under 1K", param=param)
    return size


@contextlib.contextmanager
def _startup_errors(what: str) -> Iterator[None]:
    """An OSError or MgpuError while starting: one line naming the file or address, and the
    daemons' start-failure exit code."""
    try:
        yield
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise StartupFailure(f"{what}: {where}{exc.strerror or exc}") from None
    except MgpuError as exc:
        raise StartupFailure(f"{what}: {exc}") from None


def _audit_to(path: Path) -> None:
    # Who did what from where: for the admins' eyes only.
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
    path.chmod(0o600)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logging.getLogger("mgpu.audit").addHandler(handler)


async def _serve(
    config: ServerConfig, store: SqliteStore, policy: PolicyConfig, cluster_key: bytes
) -> None:
    server = Server(config, store, policy, cluster_key=cluster_key)
    loop = asyncio.get_running_loop()
    # Handlers only set a flag; the loop does the work (never I/O inside a signal handler).
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.should_exit.set)
    await server.serve_forever()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The master's state directory; certificates go to its tls/ [default: as mgpu_master].",
)
@click.option(
    "--host",
    "hosts",
    multiple=True,
    help="A name or address clients and nodes use for the master (repeatable) "
    "[default: this host's names and loopback].",
)
@click.option(
    "--days", type=click.IntRange(1, 36500), default=3650, show_default=True, help="Validity."
)
@click.option("--force", is_flag=True, help="Replace existing certificates.")
def init_cli(*, state_dir: Path | None, hosts: tuple[str, ...], days: int, force: bool) -> None:
    """Prepare a cluster: the cluster key, a self-signed CA and the master's TLS certificate."""
    from mgpu_server.tlsinit import default_hosts, make_cluster_certs

    state = state_dir or default_master_state_dir()
    tls = (state / constants.TLS_DIR).absolute()
    try:
        state.mkdir(parents=True, exist_ok=True)
        if not earlier_state(state):
            # The database with the key: a key without one means a lost history to the master.
            SqliteStore(state).close()
        auth.load_or_create_key(state / constants.KEY_FILE)
        make_cluster_certs(tls, list(hosts) or default_hosts(), days=days, force=force)
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or state}: {exc.strerror or exc}") from None
    except MgpuError as exc:
        raise click.ClickException(str(exc)) from None
    ca_copy = f"{constants.SYSTEM_CONFIG_DIR}/{constants.CA_CERT_FILE}"
    click.echo(
        f"""cluster key: {(state / constants.KEY_FILE).absolute()} (copy to each node, mode 0600)
CA certificate: {tls / constants.CA_CERT_FILE} (copy to every node and client host, e.g. {ca_copy})
CA key: {tls / constants.CA_KEY_FILE} (keep it here)

Turn TLS on in the master's config file (mgpu_master --config FILE):
  [tls]
  cert = "{tls / constants.MASTER_CERT_FILE}"
  key = "{tls / constants.MASTER_KEY_FILE}"
Nodes: mgpu_node --tls-ca {ca_copy} ...
Clients: {constants.CONFIG_TLS_CA} = "{ca_copy}" in ~/.config/mgpu/{constants.USER_CONFIG_FILE} \
or {constants.SYSTEM_CONFIG}"""
    )


def main() -> None:
    if sys.argv[1:2] == ["init"]:
        run_click(init_cli, "mgpu_master init", sys.argv[2:])
    run_click(cli, "mgpu_master")


if __name__ == "__main__":
    main()
