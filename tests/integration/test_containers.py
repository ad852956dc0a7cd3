"""Containers end to end (issue 15): a real master and agents.

* With a stand-in runtime (a ``podman`` script on the agent's PATH that records how it was
  called and runs the command after the image): the node finds it and shows it, a batch job
  with ``#SBATCH --container-image`` runs through it with its script bound and its GPUs
  renumbered, and a job with an image waits with NoContainerRuntime where no node has one.
  This runs everywhere.
* With real Podman (Debian's package), where it can run a container here: a local image made
  from busybox-static; the job runs in it as the agent's user, sees CUDA_VISIBLE_DEVICES, its
  workspace, a read-only mount and no capabilities; an image that does not exist fails the job
  with podman's message in its output. Skipped, with the reason, where Podman is missing or
  cannot run a container (no user namespaces, no OCI runtime that works in the sandbox).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cluster import PY, Cluster, running_cluster, wait_for, wait_for_text

pytestmark = pytest.mark.timeout(120)

STAND_IN = """#!/bin/sh
# A stand-in podman: answers --version; for "run", records its arguments and runs what follows
# the image (the first argument after the options), as a container would.
[ "$1" = --version ] && { echo "podman version 0 (stand-in)"; exit 0; }
printf '%s\\n' "$@" >"runtime-argv-$MGPU_JOB_ID"
shift
while [ $# -gt 0 ]; do case $1 in -*) shift;; *) break;; esac; done
shift
exec "$@"
"""

SCRIPT = """#!/bin/sh
#SBATCH --container-image=localhost/img --gpus=1 -o out-%j
echo "cvd=$CUDA_VISIBLE_DEVICES gpus=$MGPU_GPUS"
"""


def _stand_in(c: Cluster, tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "podman").write_text(STAND_IN)
    (bindir / "podman").chmod(0o755)
    c.child_env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    return bindir / "podman"


def test_a_batch_job_runs_through_the_nodes_runtime(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as c:
        podman = _stand_in(c, tmp_path)
        c.start_node("plain", 2)
        c.start_node("boxes", 2, "--container-runtimes", "podman")
        runtimes = {n["node_id"]: n["runtimes"] for n in c.nodes_json()}
        assert runtimes == {"plain": [], "boxes": ["podman"]}
        listing = c.cli("mgpu_client", "nodes", check=True).stdout
        assert "RUNTIMES" in listing and "podman" in listing

        c.cli("mgpu_client", "node", "drain", "boxes", "--reason", "test", check=True)
        (tmp_path / "job.sh").write_text(SCRIPT)
        waiting = c.sbatch(str(tmp_path / "job.sh"))
        assert c.wait_state(waiting, "PENDING")["reason"] in ("Priority", "NoContainerRuntime")
        wait_for(lambda: c.job(waiting)["reason"] == "NoContainerRuntime", 10, "the reason")
        c.cli("mgpu_client", "node", "resume", "boxes", check=True)

        row = c.wait_state(waiting, "COMPLETED", "FAILED")
        assert (row["state"], row["node"]) == ("COMPLETED", "boxes"), row
        # The job had GPU 0 or 1 of the node; podman hands over one, which is 0 inside.
        gpu = row["gpu_indices"][0]
        assert wait_for_text(tmp_path / f"out-{waiting}") == f"cvd=0 gpus={gpu}"
        argv = (tmp_path / f"runtime-argv-{waiting}").read_text().splitlines()
        script = argv[-1]
        assert script.endswith(f"/spool/job-{waiting}.sh")
        assert argv[:2] == ["run", "--rm"] and f"--volume={script}:{script}:ro" in argv
        assert argv[-2] == "localhost/img" and "--cap-drop=ALL" in argv
        assert podman.exists()


# ---- real Podman ------------------------------------------------------------------------

APPLETS = ("sh", "id", "cat", "grep", "ls", "echo", "true", "pwd")
IMAGE = "localhost/mgpu-busybox"
PROBE_TIMEOUT_S = 60


def _busybox_static() -> str | None:
    for path in ("/bin/busybox", "/usr/bin/busybox"):
        if os.path.exists(path) and b"/ld-linux" not in Path(path).read_bytes()[:4096]:
            return path
    return None


def _podman_env(store: Path, runtime: str) -> dict[str, str]:
    """Podman's configuration for the test: its own image store in ``store`` (vfs works on any
    filesystem), ``runtime`` as the OCI runtime, and low resource limits (podman raises
    them by default, which a sandbox may refuse)."""
    import resource

    limits = []
    for name, which in (("nofile", resource.RLIMIT_NOFILE), ("nproc", resource.RLIMIT_NPROC)):
        soft, hard = resource.getrlimit(which)
        # 4096 at most: a sandbox may refuse a limit it reports as its own (seen: nproc).
        value = min(4096, *(v for v in (soft, hard) if v != resource.RLIM_INFINITY))
        limits.append(f'"{name}={value}:{value}"')
    (store / "run").mkdir(parents=True, exist_ok=True)
    (store / "storage.conf").write_text(
        f'[storage]\ndriver = "vfs"\ngraphroot = "{store}/graph"\nrunroot = "{store}/run"\n'
    )
    (store / "containers.conf").write_text(
        f'[containers]\ndefault_ulimits = [{", ".join(limits)}]\n[engine]\nruntime = "{runtime}"\n'
    )
    return {
        "CONTAINERS_STORAGE_CONF": str(store / "storage.conf"),
        "CONTAINERS_CONF": str(store / "containers.conf"),
    }


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The environment under which podman runs a local busybox image here; skips if none."""
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman busybox-static)")
    busybox = _busybox_static()
    if busybox is None:
        pytest.skip("no static busybox to make an image of (apt-get install busybox-static)")
    root = tmp_path / "rootfs"
    for d in ("bin", "proc", "dev", "sys", "tmp", "etc", "data"):
        (root / d).mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    subprocess.run(["tar", "-C", str(root), "-cf", str(tmp_path / "img.tar"), "."], check=True)
    # Not under tmp_path: with a long run directory (pytest's are) every container's start
    # waited 20 s here, its conmon's socket path being too long for a Unix socket.
    store = Path(tempfile.mkdtemp(prefix="mgpu-podman-"))
    try:
        yield _working_config(tmp_path, store)
    finally:
        shutil.rmtree(store, ignore_errors=True)


def _working_config(tmp_path: Path, store: Path) -> dict[str, str]:
    """The first configuration (crun, then runc) under which podman imports the image and
    runs a container; skips the test if none does."""
    why = ""
    for runtime in ("crun", "runc"):
        if shutil.which(runtime) is None:
            continue
        env = {**os.environ, **_podman_env(store, runtime)}
        steps = (
            ["podman", "import", str(tmp_path / "img.tar"), IMAGE],
            ["podman", "run", "--rm", "--network=host", IMAGE, "/bin/true"],
        )
        for step in steps:
            done = subprocess.run(step, env=env, capture_output=True, timeout=PROBE_TIMEOUT_S)
            if done.returncode != 0:
                why = f"{runtime}: {done.stderr.decode(errors='replace').strip()[-300:]}"
                break
        else:
            return _podman_env(store, runtime)
    pytest.skip(f"podman cannot run a container here ({why or 'no OCI runtime'})")


BOXED = """#!/bin/sh
#SBATCH --container-image=localhost/mgpu-busybox --gpus=1 -o out-%j
#SBATCH --container-mounts={data}:/data:ro --container-workdir=/data
echo "uid=$(id -u):$(id -g)"
echo "cvd=$CUDA_VISIBLE_DEVICES"
echo "pwd=$(pwd) data=$(cat in.txt)"
echo "from the container" >"$MGPU_WORKSPACE/made-inside"
grep CapEff /proc/self/status
touch /data/x 2>/dev/null && echo "data writable" || echo "data read-only"
"""


def test_a_job_runs_in_a_real_podman_container(tmp_path: Path, podman: dict[str, str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("42\n")
    export = "--export=ALL," + ",".join(f"{k}={v}" for k, v in podman.items())
    with running_cluster(tmp_path) as c:
        c.start_node("n1", 2, "--container-runtimes", "podman")
        (tmp_path / "job.sh").write_text(BOXED.format(data=data))
        job_id = c.sbatch(export, str(tmp_path / "job.sh"))
        row = c.wait_state(job_id, "COMPLETED", "FAILED", timeout_s=90)
        out = (tmp_path / f"out-{job_id}").read_text()
        assert row["state"] == "COMPLETED", out
        lines = out.splitlines()
        assert lines[0] == f"uid={os.geteuid()}:{os.getegid()}"  # the job's account
        assert lines[1] == "cvd=0"  # one GPU handed over: 0 inside
        assert lines[2] == "pwd=/data data=42"
        assert lines[3].split() == ["CapEff:", "0000000000000000"]  # --cap-drop=ALL
        assert lines[4] == "data read-only"
        made = list((tmp_path / "node-n1").rglob("made-inside"))
        assert [p.read_text() for p in made] == ["from the container\n"]  # the workspace

        (tmp_path / "bad.sh").write_text(
            "#!/bin/sh\n#SBATCH --container-image=localhost/mgpu-no-such-image -o bad-%j\necho x\n"
        )
        bad = c.sbatch(export, str(tmp_path / "bad.sh"))
        row = c.wait_state(bad, "COMPLETED", "FAILED", timeout_s=90)
        assert (row["state"], row["exit_code"]) == ("FAILED", 125)  # podman's own failure
        assert "mgpu-no-such-image" in (tmp_path / f"bad-{bad}").read_text()


def test_a_session_in_a_container_is_entered_in_its_image(
    tmp_path: Path, podman: dict[str, str]
) -> None:
    """A session started with an image holds its allocation in a container of it, and `enter`
    opens a shell in that image (podman gives it a pty inside), with the session's GPUs."""
    import pexpect

    with running_cluster(tmp_path) as c:
        c.start_node("n1", 2, "--container-runtimes", "podman")
        env = {**c.env, **podman}
        started = subprocess.run(
            [PY, "-m", "mgpu_client", "session", "start", "-G", "1", "--ttl", "10m",
             "--container-image", IMAGE],
            env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        job_id = int(started.stdout.split()[1])
        shell = pexpect.spawn(
            PY, ["-m", "mgpu_client", "session", "enter", str(job_id)],
            env=env, cwd=str(tmp_path), timeout=60, encoding="utf-8",
        )  # fmt: skip
        shell.sendline(
            "test -e /run/.containerenv && echo in''side; echo cvd=$CUDA_VISIBLE_DEVICES"
        )
        shell.expect("inside")  # podman's mark: this shell runs in a container
        shell.expect(r"cvd=0")  # the session's one GPU, 0 inside
        shell.sendline("exit 4")
        shell.expect(pexpect.EOF)
        shell.close()
        assert shell.exitstatus == 4
        c.cli("mgpu_client", "session", "stop", str(job_id), check=True)
        c.wait_state(job_id, "CANCELLED", timeout_s=60)
