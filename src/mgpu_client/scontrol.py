"""``scontrol``: the subset of Slurm's scontrol that users and their tools call: ``show job|node|
partition|config|hostnames|hostlist``, ``hold``, ``release``, ``requeue``, ``update JobId=N
KEY=VALUE...``; what mgpu does not do (``suspend``, ``reconfigure``, reservations) is refused in
one line. Rendering is :mod:`mgpu_core.slurm.scontrol_fmt`'s."""

from __future__ import annotations

import sys
import time

from mgpu_client.cmdline import SLURM_VERSION
from mgpu_client.exits import run_command
from mgpu_core.errors import UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# scontrol update JobId=N KEY=VALUE: Slurm's key -> the update verb's field.
UPDATE_KEYS = {
    "timelimit": "time_limit_s",
    "qos": "qos",
    "nice": "nice",
    "priority": "priority",
    "numgpus": "gpus",
    "gres": "gpus",
    "tresperjob": "gpus",
}
REFUSED = {
    "suspend": "suspending jobs is not supported",
    "resume": "suspending jobs is not supported",
    "reconfigure": "the master reads its config at start (restart it)",
    "create": "reservations and partitions are configured in the master's config file",
    "delete": "reservations and partitions are configured in the master's config file",
    "reboot": "mgpu never reboots a node",
    "shutdown": "stop the master with its service manager",
    "takeover": "there is one master",
    "uhold": "use scontrol hold",
    "top": "use scontrol update JobId=N Nice=...",
    "notify": "not supported",
}
USAGE = (
    "usage: scontrol [-o] show job|node|partition|config|hostnames|hostlist [ID] | "
    "hold|release|requeue JOB_LIST | update JobId=N KEY=VALUE..."
)


def _ids(words: list[str]) -> list[int | str]:
    from mgpu_client.scancel import _refs

    if not words:
        raise UsageError("give a job id")
    return _refs(words)


def _per_job(client: Any, verb: str, words: list[str], prog: str) -> int:
    from mgpu_core.models import JobResult

    failed = 0
    for wire in client.request(verb, job_ids=_ids(words))["results"]:
        result = JobResult.from_wire(wire)
        err = result.error()
        if err is not None:
            failed = 1
            sys.stderr.write(f"{prog}: error: job {result.job_id}: {err}\n")
    return failed


def _update(client: Any, words: list[str]) -> int:
    pairs = [w.partition("=") for w in words]
    job_id = None
    changes: dict[str, Any] = {}
    for key, eq, value in pairs:
        if not eq:
            raise UsageError(f"Invalid input: {key}: expected KEY=VALUE")
        lower = key.lower()
        if lower in ("jobid", "job"):
            if not value.isdigit():
                raise UsageError(f"Invalid job id specified: {value}")
            job_id = int(value)
        elif lower in UPDATE_KEYS:
            changes[UPDATE_KEYS[lower]] = _update_value(lower, value)
        else:
            raise UsageError(f"Update of {key} is not supported")
    if job_id is None:
        raise UsageError("No job id specified: update JobId=N KEY=VALUE")
    client.request("update", job_id=job_id, changes=changes)
    return 0


def _update_value(key: str, value: str) -> Any:
    from mgpu_client.cmdline import number
    from mgpu_client.jobspec import time_limit_s

    if key == "timelimit":
        return time_limit_s(value)
    if key == "qos":
        return value
    if key == "nice":
        sign = -1 if value.startswith("-") else 1
        return sign * number("Nice", value.lstrip("+-"), 0, 10_000)
    if key in ("gres", "tresperjob"):
        value = value.rpartition(":")[2] if value.startswith("gpu") else value
    return number(key, value, 0, 2**31)


def control(argv: list[str], prog: str) -> int:
    args = [a for a in argv if a not in ("-o", "--oneliner", "-d", "--details", "-Q", "--quiet")]
    one_line = "-o" in argv or "--oneliner" in argv
    if not args or args[0] in ("-h", "--help", "help", "--usage"):
        sys.stdout.write(USAGE + "\n")
        return 0
    if args[0] in ("-V", "--version", "version"):
        sys.stdout.write(f"{SLURM_VERSION} (mgpu)\n")
        return 0
    verb, words = args[0].lower(), args[1:]
    if verb in REFUSED:
        raise UsageError(f"{verb} is not supported: {REFUSED[verb]}")
    if verb == "show" and words and words[0].lower() in ("hostnames", "hostname", "hostlist"):
        return _hosts(words)
    from mgpu_client.client import connect

    with connect(None) as client:
        if verb == "show":
            return _show(client, words, one_line)
        if verb in ("hold", "release", "requeue"):
            return _per_job(client, verb, words, prog)
        if verb == "update":
            return _update(client, words)
        if verb == "ping":
            client.request("info")
            sys.stdout.write("Slurmctld(primary) at mgpu_master is UP\n")
            return 0
    raise UsageError(f"invalid keyword: {args[0]}")


def _hosts(words: list[str]) -> int:
    import os

    from mgpu_core.hostlist import compress_hostlist, expand_hostlist

    text = words[1] if len(words) > 1 else os.environ.get("SLURM_JOB_NODELIST", "")
    try:
        names = expand_hostlist(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if words[0].lower() == "hostlist":
        sys.stdout.write(compress_hostlist(names) + "\n")
    else:
        sys.stdout.write("".join(n + "\n" for n in names))
    return 0


def _show(client: Any, words: list[str], one_line: bool) -> int:
    from mgpu_core.slurm import scontrol_fmt

    if not words:
        raise UsageError("show what? job, node, partition or config")
    what, name = words[0].lower(), (words[1] if len(words) > 1 else None)
    if what in ("job", "jobs", "jobid"):
        refs = _ids([name]) if name else []
        rows = client.request(
            "queue", job_ids=refs, include_finished=bool(refs), steps=True, fields=[]
        )["jobs"]
        if refs and not rows:
            raise UsageError("Invalid job id specified")
        now = time.time()
        text = "\n".join(scontrol_fmt.show_job(r, now=now, one_liner=one_line) for r in rows)
    elif what in ("node", "nodes"):
        nodes = client.nodes()
        if name:
            nodes = [n for n in nodes if n["node_id"] == name]
            if not nodes:
                raise UsageError(f"Node {name} not found")
        text = "\n".join(scontrol_fmt.show_node(n, one_liner=one_line) for n in nodes)
    elif what in ("partition", "partitions"):
        parts = client.request("partitions")["partitions"]
        if name:
            parts = [p for p in parts if p["name"] == name]
            if not parts:
                raise UsageError(f"Partition {name} not found")
        nodes = client.nodes()
        text = "\n".join(scontrol_fmt.show_partition(p, nodes, one_liner=one_line) for p in parts)
    elif what == "config":
        info = client.info()
        pairs = [
            ("ClusterName", str(info.get("cluster_name") or "mgpu")),
            ("SlurmctldHost[0]", str(client.address)),
            ("SLURM_VERSION", f"{SLURM_VERSION.split()[-1]} (mgpu {info.get('server', '')})"),
            ("SchedulerType", "mgpu (event-driven, multifactor priority, backfill)"),
            ("SelectType", "mgpu (whole GPUs, CPUs and memory per node)"),
        ]
        text = scontrol_fmt.show_config(pairs, updated=time.time())
    else:
        raise UsageError(f"invalid entity: {words[0]} (job, node, partition, config)")
    sys.stdout.write(text)
    return 0


def main(prog: str = "scontrol", *, slurm: bool = True) -> None:
    run_command(prog, lambda: control(sys.argv[1:], prog), slurm=slurm, exit_now=True)


def slurm_main() -> None:
    main("scontrol", slurm=True)


if __name__ == "__main__":
    main()
