"""A job that proves, by kernel locks, that it runs alone: each copy takes an exclusive flock
on its job's lock file and on one lock file per GPU it was given (per node), and appends a
line to the ledger. A lock that is already held means two copies of one job, or two jobs on
one GPU, at the same moment — the line says ``CLASH``. The kernel drops a lock when its process
dies, however it dies (SIGKILL included), so a killed copy never leaves a false clash behind.

``SCRIPT`` is written into the test's directory and run by the jobs with the test's Python:
``python3 ledger_job.py LEDGER_DIR SECONDS EXIT_CODE``.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT = r"""
import fcntl, os, sys, time
ledger, seconds, code = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
env = os.environ
job, node = env["MGPU_JOB_ID"], env["MGPU_NODE"]
run = env.get("MGPU_RESTART_COUNT", "0")
gpus = [g for g in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if g]

def note(line):
    fd = os.open(os.path.join(ledger, "ledger"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (line + "\n").encode())
    os.close(fd)

held = []
for name in [f"job-{job}"] + [f"gpu-{node}-{g}" for g in gpus]:
    fd = os.open(os.path.join(ledger, name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        note(f"CLASH {name} job={job} run={run} node={node}")
    held.append(fd)
note(f"start job={job} run={run} node={node} gpus={','.join(gpus)} t={time.time():.3f}")
time.sleep(seconds)
note(f"end job={job} run={run} node={node} t={time.time():.3f}")
sys.exit(code)
"""


def install(directory: Path) -> Path:
    """Write the job script and an empty ledger into ``directory``; returns the script."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ledger").touch()
    script = directory / "ledger_job.py"
    script.write_text(SCRIPT)
    return script


def clashes(directory: Path) -> list[str]:
    return [line for line in lines(directory) if line.startswith("CLASH")]


def lines(directory: Path) -> list[str]:
    return (directory / "ledger").read_text().splitlines()
