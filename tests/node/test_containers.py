"""The container command lines (mgpu_node.containers), exactly, for each runtime; which
runtimes a node finds; and a job with an image started through the executor, with a stand-in
runtime that records how it was called."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mgpu_core.daemons import JobUser
from mgpu_core.models import GpuDevice, Launch
from mgpu_core.mounts import parse_mount
from mgpu_node import containers
from mgpu_node.containers import ContainerRun, Runtime, command, detect_runtimes
from mgpu_node.executor import Executor
from mgpu_node.jobuser import JobUserPolicy
from mgpu_node.spool import ExitSpool
from tests.node.test_executor import Node, launch

pytestmark = pytest.mark.timeout(60)

PODMAN = Runtime("podman", "/usr/bin/podman", "/usr/bin/catatonit")
DOCKER = Runtime("docker", "/usr/bin/docker")
APPTAINER = Runtime("apptainer", "/usr/bin/apptainer")
SINGULARITY = Runtime("singularity", "/usr/local/bin/singularity")


def gpu(index: int, *, fake: bool = False) -> GpuDevice:
    return GpuDevice(index=index, uuid=f"GPU-{index}", visible_id=str(index), fake=fake)


def mig(index: int, uuid: str) -> GpuDevice:
    return GpuDevice(index=index, uuid=uuid, visible_id=uuid, parent_index=0, model="1g.10gb")


ENV = {
    "CUDA_VISIBLE_DEVICES": "1,3",
    "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
    "MGPU_WORKSPACE": "/ws/alice",
    "HOME": "/home/alice",
    "PATH": "/usr/bin",
    "SECRET": "hunter2",
    "not-a-name": "x",
}


def run(**kw: object) -> ContainerRun:
    base: dict[str, object] = {
        "job_id": 7,
        "image": "docker.io/library/python:3.12",
        "mounts": ["/data:/data:ro"],
        "cwd": "/ws/alice/project",
        "uid": 1000,
        "gid": 100,
        "devices": [gpu(1), gpu(3)],
        "env": ENV,
    }
    base.update(kw)
    return ContainerRun(**base)  # type: ignore[arg-type]


def test_podman_rootless_with_cdi_gpus_keep_id_and_names_only_env() -> None:
    argv, env = command(PODMAN, run(), ["python", "train.py"])
    assert argv == [
        "/usr/bin/podman", "run", "--rm",
        "--init", "--init-path=/usr/bin/catatonit",
        "--network=host", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        "--user=1000:100", "--userns=keep-id", "--label=mgpu.job=7",
        "--device=nvidia.com/gpu=1", "--device=nvidia.com/gpu=3",
        "--volume=/data:/data:ro", "--volume=/ws/alice:/ws/alice",
        "--workdir=/ws/alice/project",  # the job's own directory: visible in the workspace
        "--env=CUDA_DEVICE_ORDER", "--env=CUDA_VISIBLE_DEVICES", "--env=HOME",
        "--env=MGPU_WORKSPACE", "--env=SECRET",
        "docker.io/library/python:3.12", "python", "train.py",
    ]  # fmt: skip
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"  # podman hands over two GPUs: 0 and 1 inside
    assert env["SECRET"] == "hunter2" and not any("hunter2" in a for a in argv)


def test_podman_as_root_has_no_user_namespace_and_no_init_without_catatonit() -> None:
    runtime = Runtime("podman", "/usr/bin/podman")
    argv, _ = command(runtime, run(uid=0, gid=0, devices=[], mounts=[], env={}), ["id"])
    assert argv == [
        "/usr/bin/podman", "run", "--rm",
        "--network=host", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        "--user=0:0", "--label=mgpu.job=7", "docker.io/library/python:3.12", "id",
    ]  # fmt: skip


def test_docker_quotes_its_gpu_list_and_renumbers_cuda_visible_devices() -> None:
    argv, env = command(DOCKER, run(mounts=[], env={"A": "1"}), ["nvidia-smi"])
    assert argv == [
        "/usr/bin/docker", "run", "--rm", "--init",
        "--network=host", "--cap-drop=ALL", "--security-opt=no-new-privileges",
        "--user=1000:100", "--label=mgpu.job=7", '--gpus="device=1,3"',
        "--env=A", "--env=CUDA_VISIBLE_DEVICES",
        "docker.io/library/python:3.12", "nvidia-smi",
    ]  # fmt: skip
    assert env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_mig_slices_go_by_uuid_and_keep_it_inside() -> None:
    slices = [mig(2, "MIG-aaa"), mig(3, "MIG-bbb")]
    argv, env = command(PODMAN, run(devices=slices, env={}), ["x"])
    assert [a for a in argv if a.startswith("--device")] == [
        "--device=nvidia.com/gpu=MIG-aaa",
        "--device=nvidia.com/gpu=MIG-bbb",
    ]
    assert env["CUDA_VISIBLE_DEVICES"] == "MIG-aaa,MIG-bbb"
    argv, _ = command(DOCKER, run(devices=slices, env={}), ["x"])
    assert '--gpus="device=MIG-aaa,MIG-bbb"' in argv


def test_apptainer_contains_all_and_passes_the_environment_by_variables() -> None:
    argv, env = command(APPTAINER, run(workdir="/work"), ["python", "train.py"])
    assert argv == [
        "/usr/bin/apptainer", "exec", "--containall", "--no-privs", "--nv",
        "--bind=/data:/data:ro", "--bind=/ws/alice:/ws/alice", "--pwd=/work",
        "docker.io/library/python:3.12", "python", "train.py",
    ]  # fmt: skip
    assert env["APPTAINERENV_SECRET"] == "hunter2"
    assert env["APPTAINERENV_CUDA_VISIBLE_DEVICES"] == "1,3"  # --nv: the host's numbers
    for kept_out in ("PATH", "HOME", "not-a-name"):
        assert "APPTAINERENV_" + kept_out not in env
    argv, env = command(SINGULARITY, run(devices=[]), ["true"])
    assert "--nv" not in argv and argv[:2] == ["/usr/local/bin/singularity", "exec"]
    assert env["SINGULARITYENV_SECRET"] == "hunter2"


def test_fake_gpus_are_not_handed_to_a_runtime() -> None:
    fakes = [gpu(0, fake=True), gpu(1, fake=True)]
    for runtime in (PODMAN, DOCKER, APPTAINER):
        argv, _ = command(runtime, run(devices=fakes), ["x"])
        assert not [a for a in argv if a.startswith(("--device", "--gpus", "--nv"))], argv


def test_a_batch_script_is_bound_read_only_and_mounts_are_not_doubled() -> None:
    script = "/var/lib/mgpu/node-n1/spool/job-7.sh"
    mounts = ["/scratch/alice:/ws/alice"]  # the user's mount takes the workspace's place
    argv, _ = command(PODMAN, run(mounts=mounts, script=script, cwd="/tmp"), [script])
    assert [a for a in argv if a.startswith(("--volume", "--workdir"))] == [
        "--volume=/scratch/alice:/ws/alice",
        f"--volume={script}:{script}:ro",
    ]  # /tmp is not visible inside: the image's own working directory
    assert argv[-2:] == ["docker.io/library/python:3.12", script]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": "--privileged"}, "invalid container image '--privileged'"),
        ({"image": "a b"}, "invalid container image 'a b'"),
        ({"mounts": ["data:/data"]}, "'data' is not absolute"),
        ({"mounts": ["/a:/b:rx"]}, "mode 'rx' is not ro or rw"),
        ({"mounts": ["/a,b:/b"]}, "holds a comma"),
        ({"workdir": "rel"}, "invalid container workdir 'rel'"),
    ],
)
def test_what_a_runtime_would_misread_is_refused(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        command(PODMAN, run(**change), ["x"])


def test_mount_syntax() -> None:
    assert parse_mount("/a:/b").spec() == "/a:/b"
    assert parse_mount("/a:/b:rw").spec() == "/a:/b"
    assert parse_mount("/a:/b:ro").spec() == "/a:/b:ro"
    with pytest.raises(ValueError, match="SRC:DST"):
        parse_mount("/a")


def test_runtime_names_option() -> None:
    assert containers.parse_runtime_names("none") == []
    assert containers.parse_runtime_names("Podman, apptainer,podman") == ["podman", "apptainer"]
    with pytest.raises(ValueError, match="unknown container runtime 'lxc'"):
        containers.parse_runtime_names("podman,lxc")


def test_detection_keeps_those_on_path_that_run_in_preference_order(tmp_path: Path) -> None:
    catatonit = tmp_path / "catatonit"
    catatonit.write_text("")
    catatonit.chmod(0o755)
    paths = {"podman": "/x/podman", "docker": "/x/docker", "apptainer": "/x/apptainer"}
    probed: list[list[str]] = []

    def succeed(commands: list[list[str]], timeout_s: float) -> list[bool]:
        probed.extend(commands)
        return [c[0] != "/x/apptainer" for c in commands]  # apptainer is broken here

    found = detect_runtimes(
        which=paths.get, succeed=succeed, inits=(str(tmp_path / "none"), str(catatonit))
    )
    assert found == [Runtime("podman", "/x/podman", str(catatonit)), DOCKER_AT_X]
    assert probed == [
        ["/x/apptainer", "--version"],
        ["/x/podman", "--version"],
        ["/x/docker", "version", "--format", "{{.Server.Version}}"],  # its daemon must answer
    ]
    ordered = detect_runtimes(["docker", "podman"], which=paths.get, succeed=succeed, inits=())
    assert [r.name for r in ordered] == ["docker", "podman"]


DOCKER_AT_X = Runtime("docker", "/x/docker")


def test_probes_run_for_real_and_a_failing_one_is_left_out(tmp_path: Path) -> None:
    ok, bad = tmp_path / "ok", tmp_path / "bad"
    ok.write_text("#!/bin/sh\nexit 0\n")
    bad.write_text("#!/bin/sh\nexit 3\n")
    for f in (ok, bad):
        f.chmod(0o755)
    argvs = [[str(ok)], [str(bad)], [str(tmp_path / "missing")]]
    assert containers._all_succeed(argvs, 10.0) == [True, False, False]


def test_no_runtime_fails_the_job_with_a_reason() -> None:
    with pytest.raises(ValueError, match="node n1 has no container runtime for image img"):
        containers.contain(
            (), launch(1, Path("/"), "true", container_image="img"), ["x"], {},
            node="n1", devices=[], uid=0, gid=0,
        )  # fmt: skip


def test_a_spool_behind_a_closed_directory_is_refused(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    spool = closed / "spool"
    spool.mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    closed.chmod(0o700)
    with pytest.raises(ValueError, match=f"users cannot search {closed}"):
        containers.share_spool((PODMAN,), str(spool), "alice")
    assert spool.stat().st_mode & 0o777 == 0o711  # searchable, not listable
    containers.share_spool((DOCKER,), str(closed), "alice")  # its daemon reads as root
    assert containers.unsearchable(str(spool)) == str(closed)


STAND_IN = """#!/bin/sh
for a in "$@"; do printf '%s\\n' "$a"; done >"$MGPU_TEST_DIR/argv"
printf '%s\\n' "$CUDA_VISIBLE_DEVICES" "$SECRET" >"$MGPU_TEST_DIR/env"
echo "stand-in ran"
"""


def test_a_job_with_an_image_runs_under_the_runtime_with_its_script_bound(tmp_path: Path) -> None:
    """Through the executor and the wrapper: the runtime is what runs, with the job's batch
    script by its spool path, and the job's environment in its own."""
    stand_in = tmp_path / "podman"
    stand_in.write_text(STAND_IN)
    stand_in.chmod(0o755)
    devices = [gpu(0, fake=True), gpu(1, fake=True)]

    async def main() -> dict[str, object]:
        node = Node(tmp_path / "state")
        node.executor = Executor(
            node_name="n1",
            devices=devices,
            state_dir=tmp_path / "state",
            exits=ExitSpool(tmp_path / "state" / "exits"),
            emit=node.emit,
            job_users=JobUserPolicy(JobUser.AGENT, allow_root=True),
            runtimes=(Runtime("podman", str(stand_in)),),
        )
        spec = {
            "script": "#!/bin/sh\necho in\n",
            "argv": ["arg1"],
            "cwd": str(tmp_path),
            "container_image": "localhost/img",
            "env": {"MGPU_TEST_DIR": str(tmp_path), "SECRET": "s3"},
        }
        job = {"job_id": 5, "user": "u", "spec": spec, "gpu_indices": [1]}
        node.executor.launch(Launch.from_checked(job))
        return await node.wait_exit(5)

    exited = asyncio.run(main())
    assert exited["exit_code"] == 0, exited
    assert (tmp_path / "mgpu-5.out").read_text() == "stand-in ran\n"
    script = str((tmp_path / "state" / "spool" / "job-5.sh").absolute())
    argv = (tmp_path / "argv").read_text().splitlines()
    uid, gid = os.geteuid(), os.getegid()
    assert argv[:2] == ["run", "--rm"] and f"--user={uid}:{gid}" in argv
    assert f"--volume={script}:{script}:ro" in argv
    assert "--env=SECRET" in argv and "--env=MGPU_TEST_DIR" in argv
    assert argv[-3:] == ["localhost/img", script, "arg1"]
    assert (tmp_path / "env").read_text().splitlines() == ["0", "s3"]  # GPU 1 is 0 inside


def test_a_terminal_gets_a_pty_inside_from_podman_and_docker_and_ours_from_apptainer() -> None:
    """A session's terminal (terminals.py): podman and docker run the shell on a pty of their
    own (-it), on the terminal we give them; apptainer runs it on ours as it is."""
    for runtime in (PODMAN, DOCKER):
        plain, _ = command(runtime, run(), ["sh"])
        argv, _ = command(runtime, run(), ["sh"], tty=True)
        assert argv[:4] == [runtime.path, "run", "--interactive", "--tty"]
        assert [a for a in argv if a not in ("--interactive", "--tty")] == plain
    plain, _ = command(APPTAINER, run(), ["sh"])
    assert command(APPTAINER, run(), ["sh"], tty=True)[0] == plain
