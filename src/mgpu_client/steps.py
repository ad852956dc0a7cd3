"""Job steps: ``srun`` inside a running job (a batch script, or a shell salloc gave) starts its
tasks inside that job's allocation, as Slurm's srun does: N processes on the job's node with
the job's GPUs, each with its own ``SLURM_PROCID``/``SLURM_LOCALID``, the step's
``SLURM_STEP_ID``, output to srun's (``--label``: each line prefixed ``TASK: ``) or to
``-o``/``-e`` files (``%t``: the task). Signals srun gets are passed to every task; srun exits
with the highest task exit status (128+N for a task killed by signal N).

The step is recorded with the master (``step`` verb) so that sacct shows it; if the master
cannot be reached the tasks still run (a job must not fail because the master restarts), and
srun says so in one line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from mgpu_client.exits import warn
from mgpu_core.errors import MgpuError, UsageError

TYPE_CHECKING = False  # not typing's: importing typing costs a client command ~3 ms
if TYPE_CHECKING:
    from typing import Any

FORWARDED = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGCONT,
)
MAX_STEP_TASKS = 4096


def allocation_job_id(opts: dict[str, Any]) -> int | None:
    """The running job this srun is a step of: ``--jobid``, else the job whose environment
    this process has (MGPU_JOB_ID, which only mgpu's node sets); None outside any job."""
    given = opts.get("jobid")
    if given is not None:
        text = str(given).split("_")[0].split(".")[0]
        if not text.isdigit():
            raise UsageError(f"invalid --jobid '{given}'")
        return int(text)
    inside = os.environ.get("MGPU_JOB_ID", "")
    if inside.isdigit():
        return int(inside)
    remote = os.environ.get("MGPU_ALLOCATION", "")
    if remote:
        raise UsageError(
            f"job {remote}'s node is another host: steps of an allocation run on its node only "
            "(ssh there, or use srun inside a batch job)"
        )
    return None


def _expand(template: str, task: int, job_id: int, step_id: int, env: dict[str, str]) -> str:
    """An output path of one task: Slurm's %t %j %J %s %N %n %x %u %A %a %% (with widths),
    through the one scanner of them (mgpu_core.patterns)."""
    from mgpu_core.patterns import Num, expand_percent

    array_id, array_task = env.get("SLURM_ARRAY_JOB_ID", ""), env.get("SLURM_ARRAY_TASK_ID", "")
    return expand_percent(
        template,
        {
            "t": Num(task),
            "j": Num(job_id),
            "J": Num(job_id, f".{step_id}"),
            "s": Num(step_id),
            "N": env.get("SLURMD_NODENAME", ""),
            "n": Num(0),
            "x": env.get("SLURM_JOB_NAME", ""),
            "u": env.get("SLURM_JOB_USER", env.get("USER", "")),
            "A": Num(int(array_id) if array_id.isdigit() else job_id),
            "a": Num(int(array_task) if array_task.isdigit() else 4294967294),
            "%": "%",
        },
    )


def _task_env(task: int, ntasks: int, step_id: int, gpus: list[str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        SLURM_STEP_ID=str(step_id),
        SLURM_STEPID=str(step_id),
        SLURM_PROCID=str(task),
        SLURM_LOCALID=str(task),
        SLURM_NODEID="0",
        SLURM_NTASKS=str(ntasks),
        SLURM_NPROCS=str(ntasks),
        SLURM_STEP_NUM_TASKS=str(ntasks),
        SLURM_STEP_NUM_NODES="1",
        SLURM_STEP_TASKS_PER_NODE=str(ntasks),
        SLURM_TASKS_PER_NODE=str(ntasks),
    )
    node = env.get("SLURMD_NODENAME")
    if node:
        env["SLURM_STEP_NODELIST"] = node
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        env["SLURM_STEP_GPUS"] = ",".join(gpus)
    return env


def _register(job_id: int, name: str, ntasks: int, master: str | None, prog: str) -> Any:
    """(client, step id) from the master, or (None, a local id) with a warning."""
    from mgpu_client.client import connect

    try:
        client = connect(master)
        step_id = int(
            client.request("step", action="start", job_id=job_id, name=name, ntasks=ntasks)[
                "step_id"
            ]
        )
        return client, step_id
    except MgpuError as exc:
        if "not running" in str(exc) or "permission" in str(exc).lower():
            raise
        warn(prog, f"the step is not recorded (sacct will not show it): {exc}")
        return None, int(os.environ.get("SLURM_STEP_ID", "-1")) + 1


def run_step(job_id: int, argv: list[str], opts: dict[str, Any], prog: str) -> int:
    """Run ``argv`` as a step of the running job ``job_id`` (this host must be its node)."""
    here = os.environ.get("MGPU_JOB_ID")
    if here != str(job_id):
        raise UsageError(
            f"job {job_id}'s steps must be started on its node, inside the job (this shell is "
            f"{'in job ' + here if here else 'not in a job'}): run srun from its batch script "
            "or from the shell salloc gives"
        )
    from mgpu_client.cmdline import number

    job_tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    ntasks = number("-n/--ntasks", opts["ntasks"], 1, MAX_STEP_TASKS) if opts.get("ntasks") else 0
    ntasks = ntasks or job_tasks
    gpus = _task_gpus(opts, ntasks)
    name = opts.get("job_name") or argv[0].rsplit("/", 1)[-1]
    client, step_id = _register(job_id, name, ntasks, opts.get("master"), prog)
    try:
        code, signum = _run_tasks(job_id, step_id, argv, ntasks, gpus, opts)
    finally:
        if client is not None:
            try:
                client.request(
                    "step",
                    action="end",
                    job_id=job_id,
                    step_id=step_id,
                    exit_code=code if signum is None else None,
                    signal=signum,
                )
            except MgpuError as exc:
                warn(prog, f"the step's end is not recorded: {exc}")
            client.close()
    return 128 + signum if signum else code


def _task_gpus(opts: dict[str, Any], ntasks: int) -> list[list[str]] | None:
    """Each task's CUDA_VISIBLE_DEVICES with --gpus-per-task (the job's GPUs dealt out in
    order), else None: every task sees all of the job's GPUs, as in Slurm."""
    per_task = opts.get("gpus_per_task")
    if per_task is None:
        return None
    from mgpu_client.cmdline import number

    count = number("--gpus-per-task", str(per_task).rpartition(":")[2], 0, 64)
    visible = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]
    if count * ntasks > len(visible):
        raise UsageError(
            f"{ntasks} tasks x {count} GPUs need {count * ntasks}; the job has {len(visible)}"
        )
    return [visible[i * count : (i + 1) * count] for i in range(ntasks)]


def _run_tasks(
    job_id: int,
    step_id: int,
    argv: list[str],
    ntasks: int,
    gpus: list[list[str]] | None,
    opts: dict[str, Any],
) -> tuple[int, int | None]:
    import subprocess

    label = bool(opts.get("label"))
    procs: list[subprocess.Popen[bytes]] = []
    files = []
    previous = {s: signal.getsignal(s) for s in FORWARDED}

    def forward(signum: int, frame: object) -> None:
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    for s in FORWARDED:
        signal.signal(s, forward)
    try:
        for task in range(ntasks):
            env = _task_env(task, ntasks, step_id, None if gpus is None else gpus[task])
            stdout: Any = subprocess.PIPE if label else None
            stderr: Any = subprocess.STDOUT if label else None
            if opts.get("output"):
                stdout = _open(_expand(str(opts["output"]), task, job_id, step_id, env), opts)
                files.append(stdout)
                stderr = subprocess.STDOUT
            if opts.get("error"):
                stderr = _open(_expand(str(opts["error"]), task, job_id, step_id, env), opts)
                files.append(stderr)
            stdin = None if task == 0 else subprocess.DEVNULL
            try:
                procs.append(
                    subprocess.Popen(argv, env=env, stdin=stdin, stdout=stdout, stderr=stderr)
                )
            except OSError as exc:
                raise UsageError(f"cannot run {argv[0]}: {exc.strerror}") from None
        if label:
            _relay_labelled(procs)
        return _wait_all(procs, kill_on_bad_exit=bool(opts.get("kill_on_bad_exit")))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        for f in files:
            f.close()


def _open(path: str, opts: dict[str, Any]) -> Any:
    mode = "ab" if str(opts.get("open_mode", "")).lower() == "append" else "wb"
    try:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        return open(path, mode)
    except OSError as exc:
        raise UsageError(f"cannot open {path}: {exc.strerror}") from None


def _relay_labelled(procs: list[Any]) -> None:
    """Copy each task's output to ours, each line prefixed with its task number."""
    import selectors

    selector = selectors.DefaultSelector()
    pending: dict[int, bytes] = {}
    for task, proc in enumerate(procs):
        selector.register(proc.stdout, selectors.EVENT_READ, task)
        pending[task] = b""
    out = sys.stdout.buffer
    width = len(str(len(procs) - 1))
    while selector.get_map():
        for key, _ in selector.select():
            task = key.data
            chunk = os.read(key.fd, 65536)
            if not chunk:
                selector.unregister(key.fileobj)
                if pending[task]:
                    out.write(f"{task:>{width}}: ".encode() + pending[task] + b"\n")
                continue
            *lines, pending[task] = (pending[task] + chunk).split(b"\n")
            for line in lines:
                out.write(f"{task:>{width}}: ".encode() + line + b"\n")
        out.flush()


def _wait_all(procs: list[Any], *, kill_on_bad_exit: bool) -> tuple[int, int | None]:
    """(highest exit code, the signal that killed a task or None) once every task ended."""
    code, signum = 0, None
    remaining = list(procs)
    while remaining:
        pid, status = os.wait()
        done = [p for p in remaining if p.pid == pid]
        if not done:
            continue
        remaining.remove(done[0])
        done[0].returncode = os.waitstatus_to_exitcode(status)
        if os.WIFSIGNALED(status):
            signum = signum or os.WTERMSIG(status)
        else:
            code = max(code, os.WEXITSTATUS(status))
        if kill_on_bad_exit and (code or signum):
            for proc in remaining:
                proc.kill()
    return code, signum
