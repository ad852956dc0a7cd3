"""``mgpu_client workspace list|rm``: users' persistent workspaces on the nodes (each job's
``MGPU_WORKSPACE``), listed and removed through the master, which asks the nodes. A node that
is away or refuses gets one line of its own on stderr (and the exit status 1); the others are
listed or removed all the same."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from mgpu_client._common import EXIT_ERROR, connect, handles_errors, master_option
from mgpu_core.errors import UsageError
from mgpu_core.tables import table
from mgpu_core.text import escape_controls
from mgpu_core.units import format_size

PROG = "mgpu_client workspace"
HEADERS = ("NODE", "USER", "USED", "QUOTA", "FREE", "PATH")

_NODE = click.option(
    "--node",
    "node_id",
    default="",
    metavar="NODE",
    help="Only on NODE (and the nodes that share its workspace root) [default: every node].",
)
_USER = click.option(
    "--user",
    default="",
    metavar="USER",
    help="USER's workspaces (admins) [default: yours; an admin listing: everyone's].",
)


@click.group("workspace")
def workspace() -> None:
    """Persistent workspaces (MGPU_WORKSPACE in every job): list them, remove one."""


@workspace.command("list")
@_NODE
@_USER
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@master_option
@handles_errors(f"{PROG} list")
def list_command(*, node_id: str, user: str, as_json: bool, master: str | None) -> None:
    """Your workspaces on the nodes, with the space each takes and the space left."""
    with connect(master) as client:
        data = client.request("workspace", action="list", node=node_id, user=user)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        rows = [_row(entry, ws) for entry in data["nodes"] for ws in entry["workspaces"]]
        if rows:
            click.echo(table(HEADERS, rows))  # its cells shown escaped
        elif not any(entry["error"] for entry in data["nodes"]):
            click.echo("no workspaces (one is made on a node when a job starts there)")
    _exit_on_errors(data, "list")


@workspace.command("rm")
@_NODE
@_USER
@click.option("--yes", is_flag=True, help="Do not ask before removing.")
@master_option
@handles_errors(f"{PROG} rm")
def rm_command(*, node_id: str, user: str, yes: bool, master: str | None) -> None:
    """Remove a workspace and everything in it (yours unless --user), on every node or on
    NODE; refused where a job of its user runs."""
    whose = f"{user}'s workspace" if user else "your workspace"
    where = f"node {node_id}" if node_id else "every node"
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"removing {whose} on {where} deletes everything in it: add --yes")
        click.confirm(f"Remove {whose} on {where}, with everything in it?", abort=True)
    with connect(master) as client:
        data = client.request("workspace", action="rm", node=node_id, user=user)
    for entry in data["nodes"]:
        nodes = ",".join(entry["nodes"])
        if entry["removed"]:
            click.echo(escape_controls(f"removed {entry['removed']} (node {nodes})"))
        elif not entry["error"]:
            click.echo(escape_controls(f"no workspace of {data['user']} on node {nodes}"))
    _exit_on_errors(data, "rm")


def _row(entry: dict[str, Any], ws: dict[str, Any]) -> list[str]:
    used = format_size(ws["used_bytes"])
    quota = format_size(entry["quota_bytes"]) if entry["quota_bytes"] else "-"
    free = format_size(entry["free_bytes"]) if entry["free_bytes"] >= 0 else "?"
    return [
        ",".join(entry["nodes"]),
        ws["user"],
        used if ws["complete"] else f">={used}",  # measuring was cut short: at least this
        f"{quota} (over)" if ws["over_quota"] else quota,
        free,
        ws["path"],
    ]


def _exit_on_errors(data: dict[str, Any], verb: str) -> None:
    """One line on stderr per node that failed, and exit status 1 if one did."""
    failed = [entry for entry in data["nodes"] if entry["error"]]
    for entry in failed:
        message = f"{PROG} {verb}: node {entry['node']}: {entry['error']}"
        sys.stderr.write(escape_controls(message) + "\n")
    if failed:
        sys.exit(EXIT_ERROR)
