"""``mgpu_client gpu ...``: the GPU turn queue (show, edit, watch). Registered by main.py."""

from __future__ import annotations

import json
import time
from typing import Any

import click

from mgpu_client._common import connect, handles_errors, master_option
from mgpu_core.text import escape_controls

PROG = "mgpu_client gpu"
MONITOR_INTERVAL_S = 1.0


def _call(master: str | None, action: str, **args: Any) -> dict[str, Any]:
    with connect(master) as client:
        return client.request("turns", action=action, **args)


def render_status(data: dict[str, Any]) -> list[str]:
    rotation = data["rotation"]
    pos = data["position"] % len(rotation) if rotation else 0
    marked = [f"[{u}]" if i == pos else u for i, u in enumerate(rotation)]
    current = data["current"]
    lines = [
        f"mode      {data['mode']}"
        + (" (rotation derived from waiting work)" if data["mode"] == "auto" else ""),
        f"rotation  {' '.join(marked) or '(empty)'}",
        f"position  {pos}" + (f" (next turn: {rotation[pos]})" if rotation else ""),
        f"slice     {data['slice_s']:g} s" if data["slice_s"] else "slice     none",
        "current   " + (f"{current['user']} (job {current['job_id']})" if current else "none"),
        f"next      {data['next_user'] or 'nobody waiting'}",
        "waiting   "
        + (", ".join(f"{u}: {n}" for u, n in sorted(data["waiting"].items())) or "none"),
    ]
    if data["revoked"]:
        lines.append(f"revoked   {', '.join(data['revoked'])}")
    return [escape_controls(line) for line in lines]  # user names are others' text


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo("\n".join(render_status(data)))


@click.group()
def gpu() -> None:
    """The GPU turn queue: an ordered rotation of users who take turns on freed GPUs."""


@gpu.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True)
@master_option
@click.pass_context
@handles_errors(f"{PROG} queue")
def queue(ctx: click.Context, *, as_json: bool, master: str | None) -> None:
    """Show the rotation (or edit it with a subcommand)."""
    if ctx.invoked_subcommand is None:
        _show(_call(master, "status"), as_json)


def _edit(action: str, help_text: str, *params: click.Parameter) -> None:
    def command(*, master: str | None, **args: Any) -> None:
        if "users" in args:
            args["users"] = list(args["users"])
        _show(_call(master, action, **args), False)

    decorated = handles_errors(f"{PROG} queue {action}")(command)
    cmd = click.Command(action, callback=decorated, help=help_text, params=list(params))
    master_option(cmd)
    queue.add_command(cmd)


_edit(
    "set",
    "Replace the rotation: gpu queue set alice bob alice carol.",
    click.Argument(["users"], nargs=-1, required=True),
)
_edit("add", "Append a turn for USER.", click.Argument(["user"]))
_edit("remove", "Remove every turn of USER.", click.Argument(["user"]))
_edit("clear", "Empty the rotation.")
_edit(
    "repeat",
    "Give USER exactly N turns, spread through the rotation.",
    click.Argument(["user"]),
    click.Argument(["count"], type=click.IntRange(0, 1000)),
)


def _simple(name: str, action: str, help_text: str, *params: click.Parameter) -> click.Command:
    def command(*, master: str | None, **args: Any) -> None:
        _show(_call(master, action, **args), False)

    cmd = click.Command(
        name, callback=handles_errors(f"{PROG} {name}")(command), help=help_text, params=[*params]
    )
    master_option(cmd)
    return cmd


gpu.add_command(_simple("status", "status", "Current owner, position and who waits."))
gpu.add_command(_simple("next", "next", "Skip the next turn (move the position on by one)."))
gpu.add_command(
    _simple(
        "force-next",
        "force-next",
        "End the current turn now: its job is requeued, the next turn starts.",
    )
)
gpu.add_command(
    _simple(
        "assign",
        "assign",
        "Give USER GPU access again: their queued GPU jobs may start.",
        click.Argument(["user"]),
    )
)
gpu.add_command(
    _simple(
        "revoke",
        "revoke",
        "Take GPU access from USER: new GPU jobs are refused, queued ones wait (AssocGrpGRES).",
        click.Argument(["user"]),
    )
)


@gpu.command("history")
@click.option("--json", "as_json", is_flag=True)
@master_option
@handles_errors(f"{PROG} history")
def history(*, as_json: bool, master: str | None) -> None:
    """Recent turns: who got a GPU for which job, and how each turn ended."""
    rows = _call(master, "history")["history"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["time"]))
        line = f"{stamp}  {row['event']:<11} {row['user']:<16} job {row['job_id']}"
        click.echo(escape_controls(line))


@gpu.command("monitor")
@click.option("--count", type=click.IntRange(min=1), default=None, help="Stop after N screens.")
@master_option
@handles_errors(f"{PROG} monitor")
def monitor(*, count: int | None, master: str | None) -> None:
    """A live view of the turn queue (Ctrl-C to leave)."""
    from rich.console import Console
    from rich.live import Live
    from rich.text import Text

    console = Console()
    shown = 0
    with connect(master) as client, Live(console=console, auto_refresh=False) as live:
        while count is None or shown < count:
            data = client.request("turns", action="status")
            live.update(Text("\n".join(render_status(data))), refresh=True)
            shown += 1
            if count is None or shown < count:
                time.sleep(MONITOR_INTERVAL_S)  # a display refresh, not synchronisation


@gpu.group()
def policy() -> None:
    """How GPUs are shared: the mode and the per-turn time slice."""


@policy.command("set-mode")
@master_option
@click.argument("mode", type=click.Choice(["queue", "priority", "auto"]))
@handles_errors(f"{PROG} policy set-mode")
def set_mode(*, mode: str, master: str | None) -> None:
    """queue: turns in rotation order; priority: multifactor priority; auto: turns derived
    from each user's waiting GPU work."""
    _show(_call(master, "mode", mode=mode), False)


@policy.command("wait-timeout")
@master_option
@click.argument("seconds", type=click.FloatRange(min=0))
@handles_errors(f"{PROG} policy wait-timeout")
def wait_timeout(*, seconds: float, master: str | None) -> None:
    """The per-turn time slice: a longer turn is ended by requeueing its job (0 = none)."""
    _show(_call(master, "slice", seconds=seconds), False)
