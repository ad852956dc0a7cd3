"""What a job asks for of its node, from the job options: tasks, CPUs, GPUs (a count, and a
type: a model or a MIG profile) and memory, with Slurm's spellings of each (``-G``, ``--gres``,
``--gpus-per-node``, ``--gpus-per-task``, ``--mem-per-cpu`` ...). jobspec.py builds the rest
of the job."""

from __future__ import annotations

from mgpu_client.cmdline import number
from mgpu_core.errors import UsageError

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from typing import Any

MAX_GPUS = 64
MAX_CPUS = 65536
MAX_TASKS = 65536
MAX_BYTES = 2**60  # mgpu_core.limits.MAX_BYTES: the most memory a job may ask for


def resources(opts: dict[str, Any]) -> dict[str, Any]:
    """The job's ``ntasks``, ``cpus``, ``gpus``, ``gpu_type`` and ``mem_bytes``; UsageError in
    one line for a value no node could give or Slurm would refuse."""
    ntasks = _tasks(opts)
    per_task = opts.get("cpus_per_task")
    cpus = ntasks * (number("-c/--cpus-per-task", per_task, 1, MAX_CPUS) if per_task else 1)
    if opts.get("mincpus") is not None:
        cpus = max(cpus, number("--mincpus", opts["mincpus"], 1, MAX_CPUS))
    gpu_type, gpus = _gpus(opts, ntasks)
    if opts.get("cpus_per_gpu") is not None:
        cpus = max(cpus, gpus * number("--cpus-per-gpu", opts["cpus_per_gpu"], 1, MAX_CPUS))
    if cpus > MAX_CPUS:
        raise UsageError(f"{cpus} CPUs is more than a job may ask for ({MAX_CPUS})")
    mem_bytes = _memory(opts, cpus, gpus)
    return {
        "gpus": gpus,
        "gpu_type": gpu_type,
        "cpus": cpus,
        "ntasks": ntasks,
        "mem_bytes": mem_bytes,
    }


def gpu_count(option: str, text: str) -> tuple[str, int]:
    """``[TYPE:]N`` -> (type, N): -G/--gpus, --gpus-per-node, --gpus-per-task."""
    kind, _, count = str(text).rpartition(":")
    if kind.startswith("gpu:"):
        kind = kind[4:]
    return _gpu_type(option, kind, text), number(option, count, 0, MAX_GPUS)


def _gpu_type(option: str, kind: str, text: object) -> str:
    if not kind:
        return ""
    from mgpu_core.gputypes import valid_type

    kind = kind.lower()
    if not valid_type(kind):
        raise UsageError(f"invalid GPU type '{kind}' in {option} {text}")
    return kind


def _gres(text: str) -> tuple[str, int]:
    """``--gres=gpu:N``, ``gpu:TYPE:N``, ``gpu`` (one), ``none``; other resources refused."""
    kind, total = "", 0
    for item in str(text).split(","):
        parts = item.strip().split(":")
        if parts == ["none"]:
            continue
        if parts[0] != "gpu" or len(parts) > 3:
            raise UsageError(f"unsupported gres '{item}': mgpu schedules GPUs (gpu[:TYPE]:N)")
        if len(parts) == 3 and not parts[2].isdigit():
            raise UsageError(f"invalid GPU count in --gres {item}: gpu:TYPE:N")
        count = parts[-1] if len(parts) > 1 and parts[-1].isdigit() else "1"
        named = parts[1] if len(parts) == 3 or (len(parts) == 2 and not parts[1].isdigit()) else ""
        kind = _gpu_type("--gres", named, text) or kind
        total += number("--gres", count, 0, MAX_GPUS)
    return kind, total


def size(option: str, text: str) -> int:
    from mgpu_core.units import parse_size

    try:
        return parse_size(str(text))
    except ValueError as exc:
        raise UsageError(f"invalid {option}: {exc}") from None


def _tasks(opts: dict[str, Any]) -> int:
    nodes = str(opts.get("nodes") or "1")
    low = nodes.split("-")[0].split(",")[0].split(":")[0]
    if number("-N/--nodes", low, 0, 1 << 20) > 1:
        raise UsageError(
            f"multi-node jobs are not supported (-N {nodes}): an mgpu job runs on one node"
        )
    ntasks = opts.get("ntasks")
    per_node = opts.get("ntasks_per_node")
    tasks = number("-n/--ntasks", ntasks, 1, MAX_TASKS) if ntasks is not None else 0
    if per_node is not None:
        on_node = number("--ntasks-per-node", per_node, 1, MAX_TASKS)
        if tasks > on_node:
            raise UsageError(
                f"{tasks} tasks at {on_node} per node need several nodes: multi-node jobs are "
                "not supported"
            )
        tasks = tasks or on_node
    return tasks or 1


def _gpus(opts: dict[str, Any], ntasks: int) -> tuple[str, int]:
    """(GPU type, GPUs for the whole job) from -G, --gres, --gpus-per-node, --gpus-per-task."""
    asked: list[tuple[str, int]] = []
    if opts.get("gpus") is not None:
        asked.append(gpu_count("-G/--gpus", opts["gpus"]))
    if opts.get("gpus_per_node") is not None:
        asked.append(gpu_count("--gpus-per-node", opts["gpus_per_node"]))
    if opts.get("gres") is not None:
        asked.append(_gres(opts["gres"]))
    if opts.get("gpus_per_task") is not None:
        kind, per_task = gpu_count("--gpus-per-task", opts["gpus_per_task"])
        asked.append((kind, per_task * ntasks))
    types = {kind for kind, _ in asked if kind}
    if len(types) > 1:
        raise UsageError(f"conflicting GPU types: {', '.join(sorted(types))}")
    count = max((n for _, n in asked), default=0)
    if count > MAX_GPUS:
        raise UsageError(f"{count} GPUs is more than a node may have ({MAX_GPUS})")
    return (types.pop() if types else ""), count


def _memory(opts: dict[str, Any], cpus: int, gpus: int) -> int:
    given = [k for k in ("mem", "mem_per_cpu", "mem_per_gpu") if opts.get(k) is not None]
    if len(given) > 1:
        raise UsageError("--mem, --mem-per-cpu and --mem-per-gpu are mutually exclusive")
    if not given:
        return 0
    key = given[0]
    option = "--" + key.replace("_", "-")
    each = size(option, opts[key])
    if key == "mem_per_cpu":
        each *= cpus
    elif key == "mem_per_gpu":
        each *= max(gpus, 1)
    if each > MAX_BYTES:
        raise UsageError(
            f"invalid {option}: {opts[key]} is more memory than a job may ask for (1 EiB)"
        )
    return each
