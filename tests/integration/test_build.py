"""build.sh: the PyInstaller bundle, and a real cluster run with nothing but the built binaries.

The bundle is built once for the module (about 15 s), in the repository's own build/ and dist/.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mgpu_client.launch import ProcessCluster
from mgpu_core.exitcodes import EXIT_UNREACHABLE, EXIT_USAGE
from tests.helpers.cluster import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]
DIST = ROOT / "dist"
TOOLS = (
    "mgpu_master",
    "mgpu_node",
    "mgpu_client",
    "mgpu_srun",
    "mgpu_sbatch",
    "mgpu_queue",
    "mgpu_cancel",
)
# Slurm's names: `mgpu_client slurm-commands DIR` links them to the bundle (mgpu_client.slurmcmds).
SLURM_TOOLS = ("sbatch", "srun", "salloc", "squeue", "scancel", "sacct", "sinfo", "scontrol")
# Issue 13: the bundle was 93 MB when rich's optional imports pulled in pygments, PIL and numpy.
MAX_BUNDLE_BYTES = 40 * 2**20
BUILD_TIMEOUT_S = 540
CMD_TIMEOUT_S = 60
START_TIMEOUT_S = 30.0


def tool(name: str) -> str:
    return str(DIST / name)


def run(
    *argv: str,
    cwd: Path | None = None,
    timeout: float = CMD_TIMEOUT_S,
    env_extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**_env(), **(env_extra or {})},
    )


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MGPU_MASTER", None)  # every command gets --master
    return env


@pytest.fixture(scope="module")
def bundle() -> Path:
    """Run build.sh once; skip only if this interpreter has no PyInstaller."""
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.skip(f"PyInstaller is not importable by {sys.executable} (pip install '.[build]')")
    env = _env()
    env["PYTHON"] = sys.executable
    result = subprocess.run(
        ["bash", str(ROOT / "build.sh")],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        cwd="/",  # build.sh must work from any directory
        env=env,
    )
    assert result.returncode == 0, f"build.sh failed:\n{result.stdout}\n{result.stderr}"
    return DIST


@dataclass
class BundleCluster(ProcessCluster):
    """A master and nodes started from dist/ (the launch module's cluster, other programs)."""

    master_prog: tuple[str, ...] | None = (tool("mgpu_master"),)
    node_prog: tuple[str, ...] | None = (tool("mgpu_node"),)
    node_args: tuple[str, ...] = ("--heartbeat-interval", "0.5")
    child_env: dict[str, str] | None = field(default_factory=_env)

    def start_node(self, node_id: str, *extra: str) -> None:
        self.start_agent(node_id, *extra, gpus=None, cpus=None)

    def node_list(self) -> dict[str, dict[str, Any]]:
        result = run(tool("mgpu_client"), "nodes", "--json", "--master", self.socket_address)
        assert result.returncode == 0, result.stderr
        return {n["node_id"]: n for n in json.loads(result.stdout)["nodes"]}

    def wait_node(self, node_id: str) -> dict[str, Any]:
        def up() -> dict[str, Any] | None:
            node = self.node_list().get(node_id)
            return node if node and node["state"] != "down" else None

        return self.wait_for(up, START_TIMEOUT_S, f"node {node_id} to register", node_id)

    def jobs(self) -> dict[int, dict[str, Any]]:
        result = run(tool("mgpu_queue"), "--master", self.socket_address, "-t", "all", "--json")
        assert result.returncode == 0, result.stderr
        return {int(j["job_id"]): j for j in json.loads(result.stdout)["jobs"]}


@pytest.fixture
def cluster(bundle: Path, tmp_path: Path) -> Iterator[BundleCluster]:
    c = BundleCluster(tmp_path)
    try:
        c.start_master(timeout_s=START_TIMEOUT_S)
        yield c
    finally:
        c.stop()


def test_dist_layout(bundle: Path) -> None:
    exe = bundle / "mgpu" / "mgpu"
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert (bundle / "mgpu" / "_internal").is_dir()
    for name in TOOLS:
        inner, outer = bundle / "mgpu" / name, bundle / name
        assert inner.is_symlink() and os.readlink(inner) == "mgpu", inner
        assert outer.is_symlink() and os.readlink(outer) == f"mgpu/{name}", outer
        assert outer.resolve() == exe.resolve()
        assert os.access(outer, os.X_OK) and os.access(inner, os.X_OK)


def _disk_usage(root: Path) -> int:
    """What ``du`` counts: allocated blocks of every file and directory, links not followed."""
    total = root.lstat().st_blocks * 512
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            total += (Path(dirpath) / name).lstat().st_blocks * 512
    return total


def test_bundle_size(bundle: Path) -> None:
    """Only what mgpu uses: no numpy, PIL, matplotlib or pygments (build.sh's exclusions)."""
    internal = bundle / "mgpu" / "_internal"
    unwanted = {"numpy", "numpy.libs", "PIL", "pillow.libs", "matplotlib", "pygments"}
    assert not unwanted & {p.name for p in internal.iterdir()}
    size = _disk_usage(bundle / "mgpu")
    assert size <= MAX_BUNDLE_BYTES, f"dist/mgpu is {size / 2**20:.1f} MiB"


def test_slurm_commands_link_to_the_bundle(bundle: Path, tmp_path: Path) -> None:
    """`mgpu_client slurm-commands DIR` from the bundle links Slurm's names to it, and the
    launcher runs each name's command."""
    result = run(tool("mgpu_client"), "slurm-commands", str(tmp_path / "bin"))
    assert result.returncode == 0, result.stderr
    exe = (bundle / "mgpu" / "mgpu").resolve()
    for name in SLURM_TOOLS:
        link = tmp_path / "bin" / name
        assert link.is_symlink() and link.resolve() == exe, link
    for name in ("sbatch", "squeue", "scancel", "srun"):
        result = run(str(tmp_path / "bin" / name), "--help", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"Usage: {name} "), result.stdout


def test_launcher_dispatch(bundle: Path, tmp_path: Path) -> None:
    exe = str(bundle / "mgpu" / "mgpu")
    # The tool is argv[0]'s basename, through either link, from any directory.
    for path in (tool("mgpu_queue"), str(bundle / "mgpu" / "mgpu_queue")):
        result = run(path, "--help", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("Usage: mgpu_queue ")
    # Started as the bundle itself, the tool is the first argument.
    result = run(exe, "mgpu_sbatch", "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: mgpu_sbatch ")
    result = run(exe, "--help")
    assert result.returncode == 0
    assert all(name in result.stdout for name in TOOLS)
    for argv in ([exe], [exe, "mgpu_bogus"]):
        result = run(*argv)
        assert result.returncode == EXIT_USAGE
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert len(lines) == 1, result.stderr
        assert all(name in lines[0] for name in TOOLS)
    # Unreachable master: one line, exit 2, like the installed entry point.
    result = run(tool("mgpu_queue"), "--master", "127.0.0.1:1")
    assert result.returncode == EXIT_UNREACHABLE
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("mgpu_queue: error: ")


_IMPORTS_PROBE = """
import importlib.util, json, os, sys
import posix
os._exit = posix._exit = sys.exit  # commands skip the teardown; here the probe must run
spec = importlib.util.spec_from_file_location("launcher", sys.argv[1])
launcher = importlib.util.module_from_spec(spec)
spec.loader.exec_module(launcher)
sys.argv = sys.argv[2:]
try:
    launcher.main()
except SystemExit:
    pass
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules})), file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("name", "loaded", "not_loaded"),
    [
        ("mgpu_queue", {"mgpu_client"}, {"mgpu_server", "mgpu_node", "asyncio", "psutil", "ssl"}),
        ("mgpu_srun", {"mgpu_client"}, {"mgpu_server", "mgpu_node", "asyncio", "psutil", "ssl"}),
        ("mgpu_client", {"mgpu_client"}, {"mgpu_server", "mgpu_node", "asyncio", "ssl"}),
        ("mgpu_master", {"mgpu_server"}, {"mgpu_client", "mgpu_node", "psutil", "cryptography"}),
        ("mgpu_node", {"mgpu_node"}, {"mgpu_client", "mgpu_server"}),
        ("sbatch", {"mgpu_client"}, {"mgpu_server", "mgpu_node", "asyncio", "psutil", "click"}),
        ("scancel", {"mgpu_client"}, {"mgpu_server", "mgpu_node", "asyncio", "psutil", "click"}),
    ],
)
def test_launcher_imports_only_the_chosen_tool(
    name: str, loaded: set[str], not_loaded: set[str]
) -> None:
    """Client start-up time: the launcher must not import the server for mgpu_queue."""
    result = subprocess.run(
        [sys.executable, "-c", _IMPORTS_PROBE, str(ROOT / "packaging" / "launcher.py"), name, "-h"],
        capture_output=True,
        text=True,
        timeout=CMD_TIMEOUT_S,
        env=_env(),
    )
    assert result.stdout.startswith(f"Usage: {name} "), result.stdout + result.stderr
    modules = set(json.loads(result.stderr.splitlines()[-1]))
    assert loaded <= modules
    assert not modules & not_loaded


def test_cluster_with_built_binaries(cluster: BundleCluster, tmp_path: Path) -> None:
    # The test's user (root here) submits: its jobs run as the agent's user.
    cluster.start_node("n1", "--gpu-count", "2", "--job-user", "agent", "--allow-root-jobs")
    n1 = cluster.wait_node("n1")
    assert len(n1["gpus"]) == 2

    # srun: output streamed, the job's exit code is srun's.
    result = run(
        tool("mgpu_srun"),
        "--master",
        cluster.socket_address,
        "--gpus",
        "1",
        "--",
        "sh",
        "-c",
        'echo "gpu=$CUDA_VISIBLE_DEVICES"; exit 7',
    )
    assert result.returncode == 7, result.stderr
    assert "gpu=0" in result.stdout.splitlines()

    # Jobs get the submitter's environment, not the bootloader's additions.
    result = run(
        tool("mgpu_srun"),
        "--master",
        cluster.socket_address,
        "--",
        "sh",
        "-c",
        'echo "ld=${LD_LIBRARY_PATH-unset}"; env | grep "^_PYI_" || true',
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"ld={os.environ.get('LD_LIBRARY_PATH', 'unset')}"]

    # sbatch: the job id, then COMPLETED with its output in the submit directory.
    work = tmp_path / "work"
    work.mkdir()
    result = run(
        tool("mgpu_sbatch"), "--master", cluster.socket_address, "--wrap", "echo batch-ok", cwd=work
    )
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    assert words[:3] == ["Submitted", "batch", "job"] and len(words) == 4, result.stdout
    job_id = int(words[3])

    def completed() -> bool:
        job = cluster.jobs().get(job_id)
        assert job is not None, f"job {job_id} missing from the queue"
        assert job["state"] in ("PENDING", "RUNNING", "COMPLETED"), job
        return bool(job["state"] == "COMPLETED")

    wait_for(completed, 30, f"job {job_id} to complete")
    assert (work / f"mgpu-{job_id}.out").read_text() == "batch-ok\n"

    # rich, the one client view that uses it (build.sh excludes the rich modules it never uses).
    result = run(
        tool("mgpu_client"), "gpu", "monitor", "--count", "1", "--master", cluster.socket_address
    )
    assert result.returncode == 0, result.stderr
    assert "rotation" in result.stdout, result.stdout

    # Slurm's sbatch, through a link that `mgpu_client slurm-commands` made, as a Slurm user
    # runs it (the master from the environment).
    result = run(tool("mgpu_client"), "slurm-commands", str(tmp_path / "slurm"))
    assert result.returncode == 0, result.stderr
    result = run(
        str(tmp_path / "slurm" / "sbatch"),
        "--wrap",
        "true",
        cwd=work,
        env_extra={"MGPU_MASTER": cluster.socket_address},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Submitted batch job "), result.stdout

    # Over TLS with a token (ssl, hashlib and hmac bundled although the client imports them
    # lazily).
    token = tmp_path / "token"
    result = run(
        tool("mgpu_client"),
        "admin",
        "token",
        "create",
        "--master",
        cluster.socket_address,
        "--output",
        str(token),
        "alice",
    )
    assert result.returncode == 0, result.stderr
    result = run(
        tool("mgpu_client"),
        "whoami",
        "--master",
        f"127.0.0.1:{cluster.port}",
        env_extra={"MGPU_TOKEN_FILE": str(token), "MGPU_TLS_CA": str(cluster.ca_file)},
    )
    assert result.returncode == 0 and result.stdout.startswith("alice (via token"), result.stderr

    # cancel of an unknown job: non-zero, one line on stderr.
    result = run(tool("mgpu_cancel"), "--master", cluster.socket_address, "99999")
    assert result.returncode != 0
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("mgpu_cancel: error: ")


def test_bundled_master_init_makes_certificates(bundle: Path, tmp_path: Path) -> None:
    """`mgpu_master init` needs the cryptography package inside the bundle."""
    result = run(tool("mgpu_master"), "init", "--state-dir", str(tmp_path), "--host", "127.0.0.1")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "tls" / "master.pem").read_text().startswith("-----BEGIN CERTIFICATE")


def test_node_bundles_pynvml(cluster: BundleCluster) -> None:
    """Without --gpu-count the node asks NVML: pynvml must be in the bundle. On a machine
    without a driver NVML itself is unavailable, which is fine; a missing module is not
    (pynvml needs ctypes, which the bundle keeps outside the import path: mgpu_lazy/)."""
    cluster.start_node("nvml")
    cluster.wait_node("nvml")
    log = cluster.log_text("node-nvml")
    assert "pynvml not importable" not in log
    if "NVML unavailable" in log:  # no driver here: pynvml loaded, then found no library
        assert "ctypes" not in log, log


def test_commands_do_not_load_ctypes(bundle: Path) -> None:
    """PyInstaller's bootstrap imports ctypes whenever it can (~1.5 ms of every start): the
    bundle keeps it where only the node agent looks (build.sh, packaging/launcher.py)."""
    assert not (bundle / "mgpu" / "_internal" / "ctypes").exists()
    assert (bundle / "mgpu" / "_internal" / "mgpu_lazy" / "ctypes" / "util.py").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_local_mode_starts_bundled_siblings(bundle: Path, tmp_path: Path) -> None:
    """``mgpu_client local start`` frozen starts dist/mgpu/mgpu_master and mgpu_node."""
    state = tmp_path / "local"
    client = tool("mgpu_client")
    try:
        port = str(_free_port())
        result = run(
            client, "local", "start", "--state-dir", str(state), "--port", port, "--gpu-count", "1"
        )
        assert result.returncode == 0, result.stderr + "".join(
            p.read_text(errors="replace") for p in sorted(state.glob("*.log"))
        )
        for name in ("master", "node"):
            pid = int((state / f"{name}.pid").read_text())
            exe = os.readlink(f"/proc/{pid}/exe")
            assert Path(exe) == (bundle / "mgpu" / "mgpu").resolve()
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert cmdline[0].decode() == str(bundle.resolve() / "mgpu" / f"mgpu_{name}")
        result = run(client, "local", "status", "--state-dir", str(state))
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        stopped = run(client, "local", "stop", "--state-dir", str(state))
        for pid_file in state.glob("*.pid"):  # if stop failed: end what we started, by pid
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
    assert stopped.returncode == 0, stopped.stderr
