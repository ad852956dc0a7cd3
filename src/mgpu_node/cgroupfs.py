"""The host's cgroup hierarchies and their control files: where the controllers mgpu uses
are mounted (cgroup v1, v2, or some of each), the writes that limit a group, and the removal
of one.

Everything here acts on the paths it is given, so that the tests run it against a fake tree;
the job groups themselves, and why they are made as they are, are cgroups.py's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CONTROLLERS = ("devices", "memory", "cpu")  # the order a summary names them in
V2_CONTROLLERS = ("memory", "cpu")  # v2 has no devices controller (eBPF instead)
CPU_PERIOD_US = 100_000
V1_SHARES_PER_CPU = 1024  # cpu.shares' default, for one CPU
V2_WEIGHT_PER_CPU = 100  # cpu.weight's default, for one CPU ...
V2_MAX_WEIGHT = 10_000  # ... up to its maximum


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """A cgroup hierarchy mgpu uses: its version, the controllers of ours it carries, and the
    group mgpu's groups go under."""

    version: int
    controllers: tuple[str, ...]
    base: Path


def find_hierarchies(mountinfo: str, own_groups: str) -> list[Hierarchy]:
    """The hierarchies that carry our controllers, from the text of /proc/self/mountinfo and
    /proc/self/cgroup: each controller from the v1 hierarchy mounted with it, else from v2 if
    its root offers it (read from the v2 mount's ``cgroup.controllers``)."""
    own = _own_groups(own_groups)
    found: list[Hierarchy] = []
    taken: set[str] = set()
    v2_root: Path | None = None
    for fstype, root, mountpoint, options in _cgroup_mounts(mountinfo):
        if fstype == "cgroup2":
            if root == "/" and v2_root is None:
                v2_root = mountpoint
            continue
        ours = tuple(c for c in CONTROLLERS if c in options and c not in taken)
        if ours:  # (a hierarchy mounted twice is taken once)
            found.append(Hierarchy(1, ours, _inside(mountpoint, root, own.get(ours[0], "/"))))
            taken.update(ours)
    if v2_root is not None:
        try:
            offered = (v2_root / "cgroup.controllers").read_text().split()
        except OSError:
            offered = []
        ours = tuple(c for c in V2_CONTROLLERS if c in offered and c not in taken)
        if ours:
            found.append(Hierarchy(2, ours, v2_root))
    return found


def _cgroup_mounts(mountinfo: str) -> Iterator[tuple[str, str, Path, set[str]]]:
    """(fstype, root, mount point, super options) of each cgroup mount in mountinfo's text:
    ``ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS``."""
    for line in mountinfo.splitlines():
        fields = line.split()
        if "-" not in fields[6:]:
            continue
        tail = fields[fields.index("-", 6) + 1 :]
        if len(tail) == 3 and tail[0] in ("cgroup", "cgroup2"):
            yield tail[0], _unescape(fields[3]), Path(_unescape(fields[4])), set(tail[2].split(","))


def _unescape(field: str) -> str:
    """mountinfo writes a space in a path as \\040 (and tab, newline, backslash likewise)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)


def _own_groups(text: str) -> dict[str, str]:
    """Controller -> the agent's group in its v1 hierarchy, from /proc/self/cgroup's
    ``ID:CONTROLLERS:PATH`` lines (v2's line, ``0::PATH``, names no controller)."""
    groups: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                groups[controller] = parts[2]
    return groups


def _inside(mountpoint: Path, root: str, group: str) -> Path:
    """Where ``group`` of a hierarchy is, given that ``mountpoint`` shows it from ``root``."""
    try:
        return mountpoint / PurePosixPath(group).relative_to(root)
    except ValueError:  # our group is outside what is mounted here: use what is
        return mountpoint


def write(path: Path, value: str) -> None:
    """One value into a control file, in one write (the kernel takes one rule per write)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{value}\n".encode())
    finally:
        os.close(fd)


def limit_memory(version: int, path: Path, mem_bytes: int) -> None:
    """Limit the group at ``path`` to ``mem_bytes``, swap included (0: no limit)."""
    if version == 2:
        write(path / "memory.max", str(mem_bytes) if mem_bytes else "max")
        if (path / "memory.swap.max").exists():
            write(path / "memory.swap.max", "0" if mem_bytes else "max")
        return
    limit = str(mem_bytes) if mem_bytes else "-1"
    memsw = path / "memory.memsw.limit_in_bytes"  # only where swap is accounted
    swap = memsw.exists()
    if swap:
        write(memsw, "-1")  # never below the memory limit: lifted first (a reused group)
    write(path / "memory.limit_in_bytes", limit)
    if swap:
        write(memsw, limit)


def limit_cpu(version: int, path: Path, cpus: int) -> None:
    """Limit the group at ``path`` to ``cpus`` CPUs' worth of time, and weigh it as many."""
    quota_us = cpus * CPU_PERIOD_US
    if version == 2:
        write(path / "cpu.max", f"{quota_us} {CPU_PERIOD_US}")
        write(path / "cpu.weight", str(min(cpus * V2_WEIGHT_PER_CPU, V2_MAX_WEIGHT)))
        return
    write(path / "cpu.cfs_period_us", str(CPU_PERIOD_US))
    try:
        write(path / "cpu.cfs_quota_us", str(quota_us))
    except OSError as exc:
        # v1 refuses a quota above an ancestor's (the agent's service's, say): that one, the
        # tighter, holds the job already.
        if exc.errno != errno.EINVAL:
            raise
    write(path / "cpu.shares", str(cpus * V1_SHARES_PER_CPU))


def oom_kills(version: int, path: Path) -> int:
    """How many processes of the group at ``path`` the kernel's OOM killer killed (its limit
    reached, or the host out of memory): ``oom_kill N`` in v2's ``memory.events`` or v1's
    ``memory.oom_control`` (kernels since 4.13); 0 where neither says."""
    try:
        text = (path / ("memory.events" if version == 2 else "memory.oom_control")).read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def kill_and_remove(path: Path) -> bool:
    """SIGKILL every process in the group at ``path`` and remove it; True if it is gone (the
    killed take a moment to leave it: until then, False)."""
    try:
        members = (path / "cgroup.procs").read_text().split()
    except FileNotFoundError:
        return True
    except OSError:
        members = []
    for pid in members:
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    try:
        os.rmdir(path)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return True
