"""--container-image, --container-mounts and --container-workdir (pyxis's spellings) for srun,
sbatch and ``#SBATCH`` lines: what reaches the job, and the one line a mistake gets."""

from __future__ import annotations

import pytest

from mgpu_client.directives import parse_directives
from mgpu_client.optable import B, R
from tests.client.test_jobspec import build, job, refused

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("command", [R, B])
def test_the_three_options_reach_the_job(command: str) -> None:
    built = job(
        "--container-image=nvcr.io/nvidia/pytorch:24.05-py3",
        "--container-mounts=/data:/data:ro, /scratch/me:/scratch:rw",
        "--container-workdir",
        "/scratch",
        command=command,
    )
    assert built["container_image"] == "nvcr.io/nvidia/pytorch:24.05-py3"
    assert built["container_mounts"] == ["/data:/data:ro", "/scratch/me:/scratch"]
    assert built["container_workdir"] == "/scratch"


def test_without_an_image_nothing_is_set() -> None:
    assert not {"container_image", "container_mounts", "container_workdir"} & set(job("-n", "1"))


def test_sbatch_directives_carry_them() -> None:
    script = (
        "#!/bin/sh\n"
        "#SBATCH --container-image=localhost/img --container-mounts=/d:/d\n"
        "python train.py\n"
    )
    built, warnings = build(parse_directives(script), B, script=script)
    assert warnings == []
    assert (built["container_image"], built["container_mounts"]) == ("localhost/img", ["/d:/d"])


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--container-mounts=/a:/b"], "--container-mounts and --container-workdir need"),
        (["--container-workdir=/w"], "--container-mounts and --container-workdir need"),
        (["--container-image=-v"], "invalid container image '-v'"),
        (["--container-image=img", "--container-mounts=data:/data"], "'data' is not absolute"),
        (["--container-image=img", "--container-mounts=/a:b"], "'b' is not absolute"),
        (["--container-image=img", "--container-mounts=/a"], "SRC:DST[:ro|rw] expected"),
        (["--container-image=img", "--container-mounts=/a:/b:rx"], "mode 'rx' is not ro or rw"),
        (["--container-image=img", "--container-workdir=w"], "not an absolute path"),
    ],
)
def test_mistakes_get_one_line(argv: list[str], message: str) -> None:
    assert message in refused(*argv)


def test_slurms_own_oci_option_points_to_the_image_option() -> None:
    assert "use --container-image" in refused("--container=/bundle")
