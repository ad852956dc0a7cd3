"""``mgpu_client``: every verb under one roof."""

from __future__ import annotations

import json
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

import click

from mgpu_client import (
    accounting,
    admin,
    control,
    details,
    follow,
    gpu,
    logs,
    queue,
    sbatch,
    scancel,
    sessions,
    srun,
    workspaces,
)
from mgpu_client._common import (
    CONTEXT,
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    connect,
    handles_errors,
    master_option,
)
from mgpu_client.exits import run_command
from mgpu_core import __version__
from mgpu_core.cliutil import run_click
from mgpu_core.errors import UsageError
from mgpu_core.protocol import DEFAULT_PORT
from mgpu_core.text import escape_controls

PROG = "mgpu_client"


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name=PROG)
def cli() -> None:
    """mgpu: a Slurm-like scheduler for GPU machines."""


# The job commands parse their own options (mgpu_client.cmdline, from the one table in
# mgpu_client.optable): these verbs hand them their arguments untouched.
_PASS = {
    "ignore_unknown_options": True,
    "allow_extra_args": True,
    "allow_interspersed_args": False,
    "help_option_names": [],
}


def _pass_through(name: str, summary: str, body: Any) -> None:
    @cli.command(name, context_settings=_PASS, help=summary, add_help_option=False)
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def verb(args: tuple[str, ...]) -> None:
        prog = f"{PROG} {name}"
        run_command(prog, lambda: body(list(args), prog))


def _submit(argv: list[str], prog: str) -> int:
    """mgpu_client submit [OPTIONS] CMD...: the job ``mgpu_sbatch --wrap CMD`` submits, with
    several words joined as a shell would quote them."""
    from mgpu_client.cmdline import parse
    from mgpu_client.optable import B, table_for

    _, rest = parse(argv, table_for(B))
    if not rest:
        raise UsageError("give a command to run")
    options = argv[: len(argv) - len(rest)]
    if options and options[-1] == "--":  # it ended the options: --wrap must come before it
        options.pop()
    line = rest[0] if len(rest) == 1 else shlex.join(rest)
    return sbatch.submit([*options, "--wrap", line], prog, slurm=False)


_pass_through("submit", "Submit a shell command as a batch job (sbatch --wrap).", _submit)
_pass_through(
    "sbatch", "Submit a batch script (mgpu_sbatch).", lambda a, p: sbatch.submit(a, p, slurm=False)
)
_pass_through(
    "run",
    "Run a command as a job and stream its output (mgpu_srun).",
    lambda a, p: srun.run(a, p, slurm=False),
)


@cli.command("slurm-commands")
@click.option("--force", is_flag=True, help="Replace files that are not mgpu's.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@handles_errors(f"{PROG} slurm-commands")
def slurm_commands(*, directory: Path, force: bool) -> None:
    """Write Slurm's command names (sbatch, srun, salloc, squeue, scancel, sacct, sinfo,
    scontrol) into DIRECTORY; put it first on PATH to use them. Nothing else is shadowed."""
    from mgpu_client.slurmcmds import write_commands

    for line in write_commands(directory, force=force):
        click.echo(line)


cli.add_command(queue.build_cli(), "queue")
_pass_through("cancel", "Cancel or signal jobs (scancel).", scancel.cancel)
for _command in control.COMMANDS:
    cli.add_command(_command)
cli.add_command(gpu.gpu)
cli.add_command(details.show)
cli.add_command(logs.log_command)
cli.add_command(accounting.history)
cli.add_command(accounting.report)
cli.add_command(workspaces.workspace)
cli.add_command(sessions.session)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--gpus/--no-gpus", "show_gpus", default=True, show_default=True, help="One line per GPU."
)
@master_option
@handles_errors(f"{PROG} nodes")
def nodes(*, as_json: bool, show_gpus: bool, master: str | None) -> None:
    """Nodes, their GPUs, and what occupies each GPU."""
    from mgpu_core.tables import NODE_HEADERS, gpu_lines, node_row, table

    with connect(master) as client:
        rows = client.nodes()
    if as_json:
        click.echo(json.dumps({"nodes": rows}, indent=2))
        return
    lines = table(NODE_HEADERS, [node_row(n) for n in rows]).splitlines()
    click.echo(lines[0])
    for line, node in zip(lines[1:], rows, strict=True):
        click.echo(line)
        if show_gpus:
            for gpu_line in gpu_lines(node):
                click.echo(gpu_line)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@master_option
@handles_errors(f"{PROG} info")
def info(*, as_json: bool, master: str | None) -> None:
    """Cluster summary (sinfo-like)."""
    with connect(master) as client:
        data = client.info()
        address = client.address
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    states = ", ".join(f"{n} {s}" for s, n in sorted(data["node_states"].items())) or "none"
    jobs = data["jobs"]
    click.echo(f"master   {address} (mgpu {data['server']})")
    click.echo(f"nodes    {data['nodes_total']} ({states})")
    click.echo(
        f"gpus     {data['gpus_alloc']} allocated / {data['gpus_up']} up"
        f" / {data['gpus_total']} total"
    )
    click.echo(f"cpus     {data['cpus_alloc']} allocated / {data['cpus_total']} up")
    click.echo(f"jobs     {jobs.get('RUNNING', 0)} running, {jobs.get('PENDING', 0)} pending")


@cli.command()
@master_option
@click.argument("job_id", type=click.IntRange(1, 2**53))
@handles_errors(f"{PROG} attach")
def attach(*, job_id: int, master: str | None) -> None:
    """Follow a running job's output and wait for its end (re-attach a lost srun).

    An interactive job's output is shown from its start (what it printed so far, then live).
    A batch job's output file is followed as it grows (as ``log -f``). Ctrl-C detaches and
    leaves the job running (mgpu_cancel cancels it).
    """
    follow.install_signal_handlers()
    client = connect(master)
    row = client.request("attach", job_id=job_id, offset=0)["job"]
    if row["state"] not in ("PENDING", "RUNNING"):
        client.close()
        sys.exit(follow.report_end(row, job_id, f"{PROG} attach", follow.Printer(0)))
    if not row.get("interactive"):  # a batch job: its output is its file, read on its node
        sys.exit(_attach_batch(client, job_id))
    if row["state"] == "PENDING" and row.get("reason"):
        reason, start = row["reason"], float(row.get("expected_start") or 0.0)
        follow.say(follow.pending_note(f"{PROG} attach", job_id, reason, start))
    follower = follow.Follower(client, job_id, f"{PROG} attach")
    code = follower.run(cancel_on_interrupt=False)
    follower.client.close()
    sys.exit(code)


def _attach_batch(client: Any, job_id: int) -> int:
    """``log -f`` of a batch job: its output as it grows, then its exit status; Ctrl-C
    detaches."""
    try:
        return logs.follow(logs.Reader(client, job_id, "stdout"))
    except KeyboardInterrupt:
        follow.say(f"{PROG} attach: detached; job {job_id} keeps running")
        return EXIT_INTERRUPTED
    finally:
        client.close()


cli.add_command(admin.admin, "admin")


@cli.command()
@master_option
@handles_errors(f"{PROG} whoami")
def whoami(*, master: str | None) -> None:
    """The user the master knows you as, and how you reached it."""
    with connect(master) as client:
        how = "Unix socket" if client.address.path else "token"
        click.echo(escape_controls(f"{client.user} (via {how} {client.address})"))


@cli.group()
def node() -> None:
    """Admin verbs for nodes: drain, resume, remove."""


def _node_update(master: str | None, node_id: str, action: str, reason: str = "") -> None:
    with connect(master) as client:
        client.request("node_update", node_id=node_id, action=action, reason=reason)
    click.echo(escape_controls(f"node {node_id}: {action}" + (f" ({reason})" if reason else "")))


@node.command("drain")
@click.option("--reason", default="", help="Shown in the nodes view.")
@master_option
@click.argument("node_id")
@handles_errors(f"{PROG} node drain")
def node_drain(*, node_id: str, reason: str, master: str | None) -> None:
    """Let NODE's running jobs finish but start no new ones there."""
    _node_update(master, node_id, "drain", reason)


@node.command("resume")
@master_option
@click.argument("node_id")
@handles_errors(f"{PROG} node resume")
def node_resume(*, node_id: str, master: str | None) -> None:
    """Undo a drain: NODE takes jobs again."""
    _node_update(master, node_id, "resume")


@node.command("remove")
@master_option
@click.argument("node_id")
@handles_errors(f"{PROG} node remove")
def node_remove(*, node_id: str, master: str | None) -> None:
    """Forget NODE (its agent must be stopped and its jobs ended)."""
    _node_update(master, node_id, "remove")


@cli.group()
def local() -> None:
    """A master and a node on this machine, in the background (task-spooler style)."""


_STATE_OPT = click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Pid files, logs and state [default: ~/.local/state/mgpu/local].",
)


@local.command("start")
@_STATE_OPT
@click.option("--port", type=click.IntRange(1, 65535), default=DEFAULT_PORT, show_default=True)
@click.option(
    "--gpu-count",
    type=click.IntRange(0, 64),
    default=None,
    help="Use N fake GPUs [default: real GPUs via NVML, 2 fake ones if none].",
)
@handles_errors(f"{PROG} local start")
def local_start(*, state_dir: Path | None, port: int, gpu_count: int | None) -> None:
    """Start a local master and node; returns when the node is ready."""
    from mgpu_client import local as local_mode

    state = state_dir or local_mode.default_dir()
    address = local_mode.start(
        state=state, port=port, gpu_count=gpu_count, node_id=socket.gethostname().split(".")[0]
    )
    click.echo(f"local cluster up: master {address}, logs in {state}")
    if state.absolute() != local_mode.default_dir().absolute():
        # Clients look for the default directory's socket only.
        click.echo(f"use it with: export MGPU_MASTER={address}")


@local.command("stop")
@_STATE_OPT
@handles_errors(f"{PROG} local stop")
def local_stop(*, state_dir: Path | None) -> None:
    """Stop the local node (its jobs end) and master."""
    from mgpu_client import local as local_mode

    stopped = local_mode.stop(state=state_dir or local_mode.default_dir())
    click.echo("stopped " + ", ".join(stopped) if stopped else "no local cluster was running")


@local.command("status")
@_STATE_OPT
def local_status(*, state_dir: Path | None) -> None:
    """Whether the local master and node run."""
    from mgpu_client import local as local_mode

    pids = local_mode.status(state=state_dir or local_mode.default_dir())
    for name, pid in pids.items():
        click.echo(f"{name:7} {'running (pid ' + str(pid) + ')' if pid else 'stopped'}")
    if not all(pids.values()):
        sys.exit(EXIT_ERROR)


def main() -> None:
    run_click(cli, PROG)


if __name__ == "__main__":
    main()
