"""``mgpu_master``: command line -> ServerConfig -> Server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from mgpu_core import __version__, auth, constants
from mgpu_core.cliutil import StartupFailure, configure_logging, log_options, run_click
from mgpu_core.config import unix_address
from mgpu_core.daemons import ServerConfig, default_master_state_dir
from mgpu_core.errors import MgpuError
from mgpu_core.logformat import reopen_logs
from mgpu_core.protocol import DEFAULT_PORT
from mgpu_core.units import parse_size
from mgpu_server.api import audit
from mgpu_server.joincmd import join_token_cli
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
    help="Open connections in total (nodes and clients); a quarter of them, at most 256, for "
    "peers not yet authenticated. Lowered to fit the open files limit (ulimit -n).",
)
@click.option(
    "--max-connections-per-address",
    type=click.IntRange(min=1),
    default=constants.MAX_CONNECTIONS_PER_ADDRESS,
    show_default=True,
    help="Open connections from one network: an IPv4 /24 or IPv6 /64 (each loopback address "
    "and each Unix socket user counts apart), at most 128 of them not yet authenticated.",
)
@click.option(
    "--tls-name",
    "tls_names",
    multiple=True,
    help="A name or address nodes and clients use for the master (repeatable), put in the "
    "TLS certificate made at first start [default: this host's names and loopback].",
)
@click.option(
    "--insecure-plaintext",
    is_flag=True,
    help="Plain TCP instead of TLS on the port: anyone on the network can read and inject "
    "traffic. Only for a trusted, isolated network or a benchmark.",
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
@log_options
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
    tls_names: tuple[str, ...],
    insecure_plaintext: bool,
    log_level: str,
    log_format: str,
    log_file: Path | None,
    reset_state: bool,
) -> None:
    """The mgpu master: job queue, node registry and scheduler."""
    configure_logging(log_level, log_format, log_file)
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
            insecure_plaintext=insecure_plaintext,
        ).validate()
    except (OSError, MgpuError) as exc:
        raise StartupFailure(f"cannot start: {exc}") from None
    with _startup_errors("cannot start"):
        settings = (
            load_master_settings(config_file) if config_file else MasterSettings(PolicyConfig())
        )
        # Before anything else is created here: a key or an audit log next to no database
        # means the history was lost (see open_store).
        store = open_store(state, reset=reset_state, keep_finished_s=settings.keep_finished_s)
        # Created on first start, mode 0600: copy it to each node (--key-file there).
        cluster_key = auth.load_or_create_key(state / constants.KEY_FILE)
        # Who did what from where: for the admins' eyes only (mode 0600).
        audit.open_log(state / constants.AUDIT_FILE)
        tls_cert, tls_key = settings.tls_cert, settings.tls_key
        if tls_cert is None and not insecure_plaintext:
            from mgpu_server.tlsinit import default_hosts, ensure_cluster_certs

            names = [*tls_names, *default_hosts()]
            if host not in ("0.0.0.0", "::", ""):
                names.insert(0, host)
            tls_dir = (state / constants.TLS_DIR).absolute()
            tls_cert, tls_key = ensure_cluster_certs(tls_dir, list(dict.fromkeys(names)))
    config = dataclasses.replace(
        config,
        admins=settings.admins,
        private_commands=settings.private_commands,
        keep_finished_s=settings.keep_finished_s,
        history_retention_s=settings.history_retention_s,
        **_http_config(settings),
        tls_cert=None if insecure_plaintext else tls_cert,
        tls_key=None if insecure_plaintext else tls_key,
    )
    with _startup_errors(f"cannot listen on {host}:{port}"):
        asyncio.run(_serve(config, store, settings, cluster_key))


def _http_config(settings: MasterSettings) -> dict[str, Any]:
    """ServerConfig's http_* fields from [http] (none: the API stays off)."""
    http = settings.http
    if http is None:
        return {}
    return {
        "http_listen": (http.host, http.port),
        "http_tls": http.tls,
        "http_max_body_bytes": http.max_body_bytes,
        "http_rate_per_s": http.rate_per_s,
        "http_burst": http.burst,
        "http_loopback_read": http.loopback_read,
    }


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


def _reopen_logs() -> None:
    """SIGHUP: the audit log and --log-file, each opened anew at its path."""
    reopen_logs()
    audit.reopen()


async def _serve(
    config: ServerConfig, store: SqliteStore, settings: MasterSettings, cluster_key: bytes
) -> None:
    server = Server(
        config,
        store,
        settings.policy,
        cluster_key=cluster_key,
        limits=settings.limits,
        notify=settings.notify,
    )
    loop = asyncio.get_running_loop()
    # Handlers only set a flag; the loop does the work (never I/O inside a signal handler).
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, server.should_exit.set)
    # logrotate moves the audit log away, then sends SIGHUP: the next line goes to a new file.
    # (add_signal_handler runs this in the loop, not in the signal handler: I/O is safe.)
    loop.add_signal_handler(signal.SIGHUP, _reopen_logs)
    try:
        await server.serve_forever()
    finally:
        audit.flush_failures(everything=True)  # the counts of a flood not yet told


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
    """Prepare a cluster: the cluster key, a self-signed CA and the master's TLS certificate
    (the master makes them at its first start too; this chooses the names and validity)."""
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
        f"""cluster key: {(state / constants.KEY_FILE).absolute()} (legacy: joined nodes need none)
CA certificate: {tls / constants.CA_CERT_FILE} (copy to every client host, e.g. {ca_copy})
CA key: {tls / constants.CA_KEY_FILE} (keep it here)

mgpu_master --state-dir {state.absolute()} uses them for TLS on its port (the default).
Nodes: mgpu_master join-token prints the one command that joins a host (key and CA included)
Clients: {constants.CONFIG_TLS_CA} = "{ca_copy}" in ~/.config/mgpu/{constants.USER_CONFIG_FILE} \
or {constants.SYSTEM_CONFIG}"""
    )


def main() -> None:
    if sys.argv[1:2] == ["init"]:
        run_click(init_cli, "mgpu_master init", sys.argv[2:])
    if sys.argv[1:2] == ["join-token"]:
        run_click(join_token_cli, "mgpu_master join-token", sys.argv[2:])
    run_click(cli, "mgpu_master")


if __name__ == "__main__":
    main()
