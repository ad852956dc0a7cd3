"""Job cgroups: finding the hierarchies, the agent's and the jobs' groups and their limits, the
gate that holds a job until it is in its group (against a fake tree in tmp_path), and the
removal of a job's groups (against the host's real cgroups, where the test runs as root)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from mgpu_core.models import JobSpec, Launch
from mgpu_node.cgroupfs import Hierarchy, find_hierarchies
from mgpu_node.cgroups import (
    ENTER_FAILED,
    GATED,
    UNGATED,
    Gate,
    JobCgroups,
    agent_group,
    enter_script,
    setup_isolation,
)
from mgpu_node.nvml import DeviceNumber
from tests.helpers.cluster import pid_alive, wait_for, wait_for_text

GPUS: list[DeviceNumber | None] = [(195, 0), (195, 1), (195, 2)]


def mount(mountpoint: Path, fstype: str, options: str, root: str = "/") -> str:
    """A /proc/self/mountinfo line (a space in the path written as mountinfo does)."""
    path = str(mountpoint).replace(" ", "\\040")
    return f"30 25 0:26 {root} {path} rw,nosuid shared:4 - {fstype} {fstype} rw,{options}\n"


def host_like(tree: Path) -> str:
    """This test host's layout: v1 controllers one per mount, an empty v2 beside them."""
    (tree / "unified").mkdir(parents=True)
    (tree / "unified" / "cgroup.controllers").write_text("hugetlb\n")
    return (
        mount(tree, "tmpfs", "mode=755")
        + mount(tree / "cpu", "cgroup", "cpu,cpuacct")
        + mount(tree / "memory", "cgroup", "memory")
        + mount(tree / "devices", "cgroup", "devices")
        + mount(tree / "devices again", "cgroup", "devices")  # a second mount: taken once
        + mount(tree / "systemd", "cgroup", "xattr,name=systemd")
        + mount(tree / "unified", "cgroup2", "nsdelegate")
    )


OWN_V1 = "9:name=systemd:/\n5:devices:/\n4:memory:/sandbox/abc\n2:cpu,cpuacct:/\n0::/\n"


def launch(job_id: int = 7, gpus: tuple[int, ...] = (), cpus: int = 1, mem: int = 0) -> Launch:
    spec = JobSpec(argv=["true"], cwd="/", cpus=cpus, mem_bytes=mem, gpus=len(gpus))
    return Launch(job_id=job_id, spec=spec, gpu_indices=list(gpus))


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


# ---- finding the hierarchies ----------------------------------------------------------------


def test_v1_groups_go_in_the_agents_own_group_of_each_hierarchy(tmp_path: Path) -> None:
    found = find_hierarchies(host_like(tmp_path), OWN_V1)
    assert found == [
        Hierarchy(1, ("cpu",), tmp_path / "cpu"),
        Hierarchy(1, ("memory",), tmp_path / "memory" / "sandbox" / "abc"),
        Hierarchy(1, ("devices",), tmp_path / "devices"),
    ]
    cgroups = JobCgroups(found, "n1-x", GPUS)
    assert cgroups.summary() == "cgroup v1 (devices, memory, cpu)"


def test_v2_offers_memory_and_cpu_from_its_root_and_says_gpus_are_not_isolated(
    tmp_path: Path,
) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    found = find_hierarchies(mount(tmp_path, "cgroup2", "nsdelegate"), "0::/system.slice/x\n")
    assert found == [Hierarchy(2, ("memory", "cpu"), tmp_path)]
    assert JobCgroups(found, "a", GPUS).summary() == (
        "cgroup v2 (memory, cpu); GPU devices not isolated: cgroup v2 needs eBPF"
    )


def test_each_controller_is_taken_from_where_it_is_mounted(tmp_path: Path) -> None:
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "cgroup.controllers").write_text("memory cpu\n")
    mounts = mount(tmp_path / "v2", "cgroup2", "") + mount(tmp_path / "dev", "cgroup", "devices")
    found = find_hierarchies(mounts, "3:devices:/\n0::/\n")
    assert JobCgroups(found, "a", GPUS).summary() == "cgroup v1 (devices), v2 (memory, cpu)"
    v1_only = find_hierarchies(mount(tmp_path / "m", "cgroup", "memory"), "1:memory:/\n")
    assert JobCgroups(v1_only, "a", GPUS).summary() == (
        "cgroup v1 (memory); GPU devices not isolated: no devices controller"
    )


def test_a_group_outside_the_mounted_part_of_a_hierarchy_falls_back_to_the_mount(
    tmp_path: Path,
) -> None:
    point = tmp_path / "my cgroups" / "memory"  # a space, escaped in mountinfo
    text = mount(point, "cgroup", "memory", root="/docker/c1")
    assert find_hierarchies(text, "4:memory:/docker/c1/sub\n")[0].base == point / "sub"
    assert find_hierarchies(text, "4:memory:/docker/c1\n")[0].base == point
    assert find_hierarchies(text, "4:memory:/elsewhere\n")[0].base == point


def test_agent_groups_differ_by_state_directory_and_keep_names_safe(tmp_path: Path) -> None:
    one = agent_group("gpu box/1", tmp_path / "a")
    assert one == agent_group("gpu box/1", tmp_path / "a")  # a restarted agent finds its own
    assert one.startswith("gpu_box_1-") and "/" not in one
    assert one != agent_group("gpu box/1", tmp_path / "b")


# ---- setting up ---------------------------------------------------------------------------


def fake_proc(tmp_path: Path, mountinfo: str, own: str) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "mountinfo").write_text(mountinfo)
    (proc / "cgroup").write_text(own)
    return proc


def setup(tmp_path: Path, proc: Path, euid: int = 0) -> tuple[JobCgroups | None, str]:
    isolation = setup_isolation(
        node_id="n1", state_dir=tmp_path / "state", gpu_numbers=GPUS, euid=euid, proc_self=proc
    )
    return isolation.cgroups, isolation.summary


def test_without_root_or_controllers_or_a_writable_tree_nothing_is_isolated(
    tmp_path: Path,
) -> None:
    tree = tmp_path / "cg"
    proc = fake_proc(tmp_path, host_like(tree), OWN_V1)
    off = setup_isolation(
        node_id="n1", state_dir=tmp_path / "s", gpu_numbers=GPUS, proc_self=proc, disabled=True
    )
    assert (off.cgroups, off.summary) == (None, "none: turned off (--no-cgroups)")
    assert setup(tmp_path, proc, euid=1000) == (
        None,
        "none: the agent is not root (cgroups need root)",
    )
    assert setup(tmp_path, tmp_path / "no-proc") == (
        None,
        f"none: cannot read {tmp_path / 'no-proc' / 'mountinfo'}: No such file or directory",
    )
    (tmp_path / "bare").mkdir()
    bare = fake_proc(tmp_path / "bare", mount(tmp_path, "tmpfs", ""), "0::/\n")
    assert setup(tmp_path, bare) == (
        None,
        "none: no cgroup controller of devices, memory, cpu is mounted",
    )
    (tree / "cpu").mkdir()
    (tree / "cpu" / "mgpu").write_text("")  # not a directory: the agent's group cannot be made
    cgroups, summary = setup(tmp_path, proc)
    assert cgroups is None
    assert summary.startswith(f"none: cannot make {tree / 'cpu' / 'mgpu'}")


def test_v1_setup_makes_the_agents_groups(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path, host_like(tmp_path / "cg"), OWN_V1)
    cgroups, summary = setup(tmp_path, proc)
    assert cgroups is not None and summary == "cgroup v1 (devices, memory, cpu)"
    assert all(cgroups.agent_dir(h).is_dir() for h in cgroups.hierarchies)
    assert cgroups.agent_dir(cgroups.hierarchies[1]).parent.parent == (
        tmp_path / "cg" / "memory" / "sandbox" / "abc"
    )


def test_v2_setup_hands_the_controllers_down_to_the_agents_group(tmp_path: Path) -> None:
    tree = tmp_path / "cg"
    tree.mkdir()
    (tree / "cgroup.controllers").write_text("cpu memory pids\n")
    proc = fake_proc(tmp_path, mount(tree, "cgroup2", ""), "0::/system.slice/mgpu.service\n")
    cgroups, _ = setup(tmp_path, proc)
    assert cgroups is not None
    agent = cgroups.agent_dir(cgroups.hierarchies[0])
    assert agent.parent.parent == tree  # the root's, not the agent's own group
    for level in (tree, tree / "mgpu", agent):
        assert lines(level / "cgroup.subtree_control") == ["+memory", "+cpu"]


# ---- a job's groups -------------------------------------------------------------------------


def v1_groups(tmp_path: Path, gpus: list[DeviceNumber | None] = GPUS) -> JobCgroups:
    cgroups = JobCgroups(find_hierarchies(host_like(tmp_path / "cg"), OWN_V1), "a", gpus)
    cgroups.open()
    return cgroups


def test_a_v1_job_group_denies_the_other_gpus_and_limits_memory_and_cpu(tmp_path: Path) -> None:
    cgroups = v1_groups(tmp_path)
    cpu, memory, devices = cgroups.create(launch(gpus=(1,), cpus=2, mem=256 << 20))
    assert devices == cgroups.agent_dir(cgroups.hierarchies[2]) / "job7"
    assert lines(devices / "devices.deny") == ["c 195:0 rwm", "c 195:2 rwm"]
    assert lines(memory / "memory.limit_in_bytes") == [str(256 << 20)]
    assert not (memory / "memory.memsw.limit_in_bytes").exists()  # no swap accounting here
    assert lines(cpu / "cpu.cfs_period_us") == ["100000"]
    assert lines(cpu / "cpu.cfs_quota_us") == ["200000"]
    assert lines(cpu / "cpu.shares") == ["2048"]


def test_a_job_without_gpus_is_denied_every_gpu_and_one_without_memory_is_not_limited(
    tmp_path: Path,
) -> None:
    cgroups = v1_groups(tmp_path)
    _, memory, devices = cgroups.create(launch(job_id=8))
    assert lines(devices / "devices.deny") == ["c 195:0 rwm", "c 195:1 rwm", "c 195:2 rwm"]
    assert lines(memory / "memory.limit_in_bytes") == ["-1"]


def test_swap_is_limited_too_where_it_is_accounted(tmp_path: Path) -> None:
    cgroups = v1_groups(tmp_path)
    memory = cgroups.job_dirs(9)[1][1]
    memory.mkdir()
    (memory / "memory.memsw.limit_in_bytes").write_text("")
    cgroups.create(launch(job_id=9, mem=1 << 30))
    # Lifted first: memory+swap may never be set below the memory limit.
    assert lines(memory / "memory.memsw.limit_in_bytes") == ["-1", str(1 << 30)]


def test_mig_instances_of_one_gpu_share_its_device_node(tmp_path: Path) -> None:
    cgroups = v1_groups(tmp_path, [(195, 0), (195, 0), (195, 1), None])
    devices = cgroups.create(launch(gpus=(1,)))[2]
    assert lines(devices / "devices.deny") == ["c 195:1 rwm"]


def test_a_v2_job_group_limits_memory_swap_and_cpu(tmp_path: Path) -> None:
    root = tmp_path / "cg"
    root.mkdir()
    cgroups = JobCgroups([Hierarchy(2, ("memory", "cpu"), root)], "a", GPUS)
    cgroups.open()
    (group,) = cgroups.job_dirs(3)
    group[1].mkdir()
    (group[1] / "memory.swap.max").write_text("")
    cgroups.create(launch(job_id=3, cpus=200, mem=1 << 30))
    assert lines(group[1] / "memory.max") == [str(1 << 30)]
    assert lines(group[1] / "memory.swap.max") == ["0"]
    assert lines(group[1] / "cpu.max") == ["20000000 100000"]
    assert lines(group[1] / "cpu.weight") == ["10000"]  # the most cpu.weight takes


def test_oom_kills_are_read_from_the_jobs_memory_group(tmp_path: Path) -> None:
    v1 = v1_groups(tmp_path / "v1")
    v1.create(launch(job_id=4))
    memory = v1.job_dirs(4)[1][1]
    assert v1.oom_kills(4) == 0  # no file (an old kernel's or a fake tree): none known
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert v1.oom_kills(4) == 2
    root = tmp_path / "v2"
    root.mkdir()
    v2 = JobCgroups([Hierarchy(2, ("memory", "cpu"), root)], "a", GPUS)
    v2.open()
    v2.create(launch(job_id=5))
    events = v2.job_dirs(5)[0][1] / "memory.events"
    events.write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n")
    assert v2.oom_kills(5) == 1


# ---- the gate -----------------------------------------------------------------------------


def test_without_cgroups_a_job_starts_as_it_is() -> None:
    assert UNGATED.argv(["true"]) == ["true"]


def test_a_gated_process_runs_nothing_until_it_is_continued(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    proc = subprocess.Popen(GATED.argv(["sh", "-c", f": > {marker}"]))
    try:
        info = os.waitid(os.P_PID, proc.pid, os.WSTOPPED | os.WEXITED | os.WNOWAIT)
        assert info is not None and info.si_code == os.CLD_STOPPED
        assert not marker.exists()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    assert proc.wait(10) == 0 and marker.exists()


def start_marking(marker: Path) -> tuple[list[int], Callable[[Gate], subprocess.Popen[bytes]]]:
    """A ``start`` for JobCgroups.spawn whose command touches ``marker``, and the pids it
    started."""
    started: list[int] = []

    def start(gate: Gate) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(gate.argv(["sh", "-c", f": > {marker}"]))
        started.append(proc.pid)
        return proc

    return started, start


def test_a_v1_job_enters_every_group_itself_before_it_runs(tmp_path: Path) -> None:
    """cgroup v1: the gate writes itself (0) into each tasks file, then runs the job; here
    the files are plain, so the writes are what is seen."""
    cgroups = v1_groups(tmp_path)
    marker = tmp_path / "ran"
    _, start = start_marking(marker)
    proc = cgroups.spawn(launch(), start)
    assert proc.wait(10) == 0 and marker.exists()
    for _, path in cgroups.job_dirs(7):
        assert lines(path / "tasks") == ["0"]


def test_a_v1_job_run_as_another_user_owns_its_tasks_files(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    cgroups = v1_groups(tmp_path)
    for path in cgroups.create(launch()):
        (path / "tasks").touch()  # the kernel's file, here a plain one
    _, start = start_marking(tmp_path / "ran")
    proc = cgroups.spawn(launch(), start, uid=65534)
    assert proc.wait(10) == 0
    for _, path in cgroups.job_dirs(7):
        assert (path / "tasks").stat().st_uid == 65534


def test_a_v1_job_that_cannot_enter_its_group_never_runs(tmp_path: Path) -> None:
    cgroups = v1_groups(tmp_path)
    cgroups.create(launch())
    (cgroups.job_dirs(7)[1][1] / "tasks").mkdir()  # refuses the write
    marker = tmp_path / "ran"
    started, start = start_marking(marker)
    proc = cgroups.spawn(launch(), start)
    assert proc.wait(10) == ENTER_FAILED
    assert len(started) == 1 and not marker.exists()


def test_the_v1_gate_is_the_first_lines_of_a_shell_wrapper() -> None:
    gate = Gate(enter=("/cg/a/tasks", "/cg/b c/tasks"))
    argv = gate.argv(["/bin/sh", "-c", "echo job", "w"])
    assert argv[:2] == ["/bin/sh", "-c"] and argv[3:] == ["w"]
    first, rest = argv[2].split("\n", 1)
    assert first == enter_script(("/cg/a/tasks", "/cg/b c/tasks"))
    assert "echo 0 >'/cg/b c/tasks'" in first and rest == "echo job"


def v2_groups(tmp_path: Path) -> JobCgroups:
    cgroups = JobCgroups([Hierarchy(2, ("memory",), tmp_path)], "a", GPUS)
    cgroups.open()
    return cgroups


def test_a_v2_job_runs_once_its_pid_is_in_its_group(tmp_path: Path) -> None:
    cgroups = v2_groups(tmp_path)
    marker = tmp_path / "ran"
    started, start = start_marking(marker)
    proc = cgroups.spawn(launch(), start)
    assert proc.wait(10) == 0 and marker.exists()
    for _, path in cgroups.job_dirs(7):
        assert lines(path / "cgroup.procs") == [str(started[0])]


def test_a_v2_job_that_cannot_be_put_in_its_group_never_runs(tmp_path: Path) -> None:
    cgroups = v2_groups(tmp_path)
    (cgroups.job_dirs(7)[0][1] / "cgroup.procs").mkdir(parents=True)  # refuses the pid
    marker = tmp_path / "ran"
    started, start = start_marking(marker)
    with pytest.raises(OSError, match="cannot put the job in its cgroup: Is a directory"):
        cgroups.spawn(launch(), start)
    assert len(started) == 1 and not marker.exists()
    with pytest.raises(ProcessLookupError):  # killed while it waited, and reaped
        os.kill(started[0], 0)


# ---- removal, with the host's cgroups -------------------------------------------------------

PROC = Path("/proc/self")


def host_cgroups() -> JobCgroups:
    if os.geteuid() != 0:
        pytest.skip("cgroups need root")
    found = find_hierarchies((PROC / "mountinfo").read_text(), (PROC / "cgroup").read_text())
    if not found:
        pytest.skip("no cgroup controller of ours is mounted")
    cgroups = JobCgroups(found, f"test-{uuid.uuid4().hex[:8]}", GPUS)
    try:
        cgroups.open()
    except OSError as exc:
        pytest.skip(f"cannot make cgroups here: {exc}")
    return cgroups


def sleeper(pid_file: Path) -> Callable[[Gate], subprocess.Popen[bytes]]:
    """A ``start`` whose job sleeps, with a stray that left its session (only its cgroup
    still knows it is the job's) and wrote its pid to ``pid_file``."""

    def start(gate: Gate) -> subprocess.Popen[bytes]:
        command = f"setsid sleep 60 & echo $! > {pid_file}; wait"
        return subprocess.Popen(gate.argv(["sh", "-c", command]), start_new_session=True)

    return start


def test_removing_a_job_kills_what_is_left_in_its_group_and_removes_it(tmp_path: Path) -> None:
    cgroups = host_cgroups()
    try:
        proc = cgroups.spawn(launch(job_id=1), sleeper(tmp_path / "stray"))
        stray = int(wait_for_text(tmp_path / "stray"))
        for h, path in cgroups.job_dirs(1):  # the gate's child was born in the job's groups
            assert str(stray) in lines(path / "cgroup.procs"), h
        asyncio.run(cgroups.remove(1))
        assert proc.wait(10) == -signal.SIGKILL
        wait_for(lambda: not pid_alive(stray), 10, "the stray to be killed")
        assert not any(path.exists() for _, path in cgroups.job_dirs(1))
    finally:
        cgroups.remove_now(1)
        cgroups.close()
    assert not any(cgroups.agent_dir(h).exists() for h in cgroups.hierarchies)


def test_prune_removes_the_groups_of_jobs_no_longer_running(tmp_path: Path) -> None:
    cgroups = host_cgroups()

    async def prune() -> None:
        cgroups.prune(keep={2})
        await asyncio.gather(*asyncio.all_tasks() - {asyncio.current_task()})  # removals

    procs = []
    try:
        for job_id in (1, 2):
            procs.append(cgroups.spawn(launch(job_id=job_id), sleeper(tmp_path / f"{job_id}")))
            wait_for_text(tmp_path / f"{job_id}")
        asyncio.run(prune())
        assert cgroups.job_ids() == {2}
        assert procs[0].wait(10) == -signal.SIGKILL
        assert procs[1].poll() is None
    finally:
        for job_id in (1, 2):
            wait_for(partial(cgroups.remove_now, job_id), 10, "the test's groups to go")
        for proc in procs:
            proc.wait(10)
        cgroups.close()


def test_a_job_asking_more_cpus_than_an_ancestor_allows_is_held_by_the_ancestor() -> None:
    cgroups = host_cgroups()
    cpu = next((h for h in cgroups.hierarchies if h.controllers == ("cpu",)), None)
    if cpu is None or cpu.version != 1:
        cgroups.close()
        pytest.skip("needs a cgroup v1 cpu hierarchy")
    agent = cgroups.agent_dir(cpu)
    (agent / "cpu.cfs_quota_us").write_text("100000")  # one CPU for all the agent's jobs
    try:
        cgroups.create(launch(job_id=1, cpus=4))  # v1 refuses a quota of 4: not an error
        assert lines(agent / "job1" / "cpu.cfs_quota_us") == ["-1"]
        assert lines(agent / "job1" / "cpu.shares") == ["4096"]
    finally:
        cgroups.remove_now(1)
        (agent / "cpu.cfs_quota_us").write_text("-1")
        cgroups.close()
