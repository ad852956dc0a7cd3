"""The as-user wrapper without the switch (no root needed): the status file as its stdin, the
setup it does itself (directory, output files, program), and the failures it records."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from mgpu_node.wrapper import read_outcome, read_status, wrap_as_user

pytestmark = pytest.mark.timeout(60)

PY = sys.executable


def run_as_user(
    tmp_path: Path,
    argv: list[str],
    *,
    cwd: Path | None = None,
    stdout: str = "",
    stderr: str = "",
    env: dict[str, str] | None = None,
    append: bool = False,
    umask: int = -1,
) -> tuple[subprocess.CompletedProcess[bytes], Path]:
    status = tmp_path / "job.status"
    status.unlink(missing_ok=True)
    fd = os.open(status, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        result = subprocess.run(
            wrap_as_user(
                argv,
                cwd=str(cwd or tmp_path),
                stdout=stdout,
                stderr=stderr,
                user="alice",
                node="n1",
                append=append,
            ),
            stdin=fd,
            capture_output=True,
            timeout=30,
            cwd="/",
            env=env if env is not None else dict(os.environ),
            start_new_session=True,
            umask=umask,
        )
    finally:
        os.close(fd)
    return result, status


@pytest.mark.parametrize("code", [0, 3, 255])
def test_exit_codes_are_recorded_through_stdin(tmp_path: Path, code: int) -> None:
    result, status = run_as_user(tmp_path, ["sh", "-c", f"exit {code}"])
    assert result.returncode == code
    assert status.read_text() == f"exit {code}\n"
    assert read_outcome(status) == (code, None, "")


def test_death_by_signal_is_recorded_and_raised_again(tmp_path: Path) -> None:
    result, status = run_as_user(tmp_path, ["sh", "-c", "kill -USR1 $$"])
    assert result.returncode == -signal.SIGUSR1
    assert read_status(status) == (None, signal.SIGUSR1)


def test_command_runs_in_its_directory_with_null_stdin_and_no_extra_descriptors(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work dir"
    work.mkdir()
    probe = (
        "import json, os, sys\n"
        "extra = [fd for fd in range(3, 64) if os.path.exists(f'/proc/self/fd/{fd}')]\n"
        "print(json.dumps([os.getcwd(), os.readlink('/proc/self/fd/0'), extra, sys.argv[1:]]))\n"
    )
    weird = ["", "$(touch pwned)", '"; exit 3; "', "a\nb", "*", "-n"]
    result, status = run_as_user(tmp_path, [PY, "-c", probe, *weird], cwd=work)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == [str(work), "/dev/null", [], weird]
    assert read_outcome(status) == (0, None, "")
    assert not list(work.iterdir())


def test_output_files_are_opened_by_the_wrapper(tmp_path: Path) -> None:
    both = tmp_path / "both.out"
    both.write_text("old content that must go\n")
    script = "echo out; echo err >&2"
    result, _ = run_as_user(tmp_path, ["sh", "-c", script], stdout=str(both))
    assert result.returncode == 0 and result.stdout == b"" and result.stderr == b""
    assert both.read_text() == "out\nerr\n"
    out, err = tmp_path / "o", tmp_path / "e"
    result, _ = run_as_user(tmp_path, ["sh", "-c", script], stdout=str(out), stderr=str(err))
    assert result.returncode == 0
    assert (out.read_text(), err.read_text()) == ("out\n", "err\n")


def test_missing_directory_fails_with_a_reason(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    result, status = run_as_user(tmp_path, ["true"], cwd=missing)
    reason = f"working directory {missing} does not exist on node n1 (as seen by user alice)"
    assert result.returncode == 1
    assert read_outcome(status) == (1, None, reason)
    assert read_status(status) == (1, None)
    assert result.stderr.decode() == f"mgpu: {reason}\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may enter and write anything")
def test_unwritable_output_and_inaccessible_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    _, status = run_as_user(tmp_path, ["true"], stdout=str(locked / "out"))
    assert read_outcome(status) == (
        1,
        None,
        f"cannot open output file {locked / 'out'} as user alice: Permission denied",
    )
    locked.chmod(0o000)
    try:
        _, status = run_as_user(tmp_path, ["true"], cwd=locked)
    finally:
        locked.chmod(0o700)
    assert read_outcome(status) == (
        1,
        None,
        f"working directory {locked} is not accessible to user alice on node n1",
    )


def test_output_directories_are_made_as_the_user_with_its_umask(tmp_path: Path) -> None:
    out, err = tmp_path / "logs" / "deep" / "x.out", tmp_path / "errs" / "x.err"
    script = "echo ran; echo oops >&2"
    result, _ = run_as_user(
        tmp_path, ["sh", "-c", script], stdout=str(out), stderr=str(err), umask=0o027
    )
    assert result.returncode == 0, result.stderr
    assert (out.read_text(), err.read_text()) == ("ran\n", "oops\n")
    for directory in (out.parent, out.parent.parent, err.parent):
        assert directory.stat().st_mode & 0o777 == 0o750, directory


def test_an_output_directory_that_cannot_be_made_fails_with_a_reason(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("in the way")
    out = tmp_path / "file" / "sub" / "x.out"
    _, status = run_as_user(tmp_path, ["sh", "-c", "echo ran"], stdout=str(out))
    outcome = read_outcome(status)
    assert outcome is not None and outcome[:2] == (1, None)
    prefix = f"cannot create directory {out.parent} for output file {out} as user alice: "
    assert outcome[2].startswith(prefix), outcome
    assert outcome[2][len(prefix) :] in ("Not a directory", "File exists")


@pytest.mark.parametrize(("append", "expected"), [(False, "new\n"), (True, "old\nnew\n")])
def test_output_is_truncated_or_appended_to(tmp_path: Path, append: bool, expected: str) -> None:
    out, err = tmp_path / "x.out", tmp_path / "x.err"
    out.write_text("old\n")
    err.write_text("old\n")
    script = "echo new; echo new >&2"
    result, _ = run_as_user(
        tmp_path, ["sh", "-c", script], stdout=str(out), stderr=str(err), append=append
    )
    assert result.returncode == 0, result.stderr
    assert (out.read_text(), err.read_text()) == (expected, expected)


def test_program_lookup_mirrors_execvp(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("data")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    odd = bin_dir / "-odd"
    odd.write_text("#!/bin/sh\necho ran $1\n")
    odd.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}

    def outcome(argv: list[str], path_env: dict[str, str] = env) -> object:
        return read_outcome(run_as_user(tmp_path, argv, env=path_env)[1])

    missing = "execve(): no-such-program-mgpu: No such file or directory"
    assert outcome(["no-such-program-mgpu"]) == (127, None, missing)
    assert outcome(["./nothing"]) == (127, None, "execve(): ./nothing: No such file or directory")
    assert outcome(["./plain"]) == (127, None, "Permission denied: ./plain")
    assert outcome(["./bin"]) == (127, None, "Permission denied: ./bin")
    result, _ = run_as_user(tmp_path, ["-odd", "x"], env=env)
    assert result.stdout == b"ran x\n"
    # An empty PATH entry, first or last, is the working directory, as for execvp.
    (tmp_path / "here").write_text("#!/bin/sh\necho here\n")
    (tmp_path / "here").chmod(0o755)
    for path in ("/usr/bin:/bin:", ":/usr/bin:/bin"):
        result, _ = run_as_user(tmp_path, ["here"], env={"PATH": path})
        assert result.stdout == b"here\n", (path, result.stderr)


@pytest.mark.parametrize(
    "content",
    [b"", b"exit\n", b"error 1\n", b"error 0 why\n", b"error x why\n", b"nonsense 1\n"],
)
def test_unusable_records_are_none(tmp_path: Path, content: bytes) -> None:
    status = tmp_path / "s"
    status.write_bytes(content)
    assert read_outcome(status) is None


def test_only_the_beginning_of_a_huge_record_is_read(tmp_path: Path) -> None:
    status = tmp_path / "s"
    status.write_bytes(b"error 1 " + b"x" * 50_000_000)  # the job's user owns the file
    outcome = read_outcome(status)
    assert outcome is not None and outcome[0] == 1 and len(outcome[2]) < 10_000


def test_a_signal_before_the_command_runs_ends_the_job_without_running_it(
    tmp_path: Path,
) -> None:
    """A SIGTERM comes while the wrapper still sets up (here: blocked opening its output file,
    a FIFO nobody reads yet). The wrapper remembers it, and once set up it does not start the
    command but ends as the signal would have ended it; a cancel is not lost for coming early."""
    fifo, ran, status = tmp_path / "out", tmp_path / "ran", tmp_path / "job.status"
    os.mkfifo(fifo)
    fd = os.open(status, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    argv = wrap_as_user(
        ["touch", str(ran)], cwd=str(tmp_path), stdout=str(fifo), stderr="", user="u", node="n1"
    )
    proc = subprocess.Popen(argv, stdin=fd, cwd="/", start_new_session=True)
    os.close(fd)
    try:
        # Its traps are set once it is blocked in the setup: the opening runs in a child.
        deadline = time.monotonic() + 20
        while not psutil.Process(proc.pid).children():
            assert time.monotonic() < deadline, "the wrapper never reached its setup"
            time.sleep(0.01)  # polled: /proc is the only place that shows it
        proc.send_signal(signal.SIGTERM)  # the wrapper alone: its setup is not disturbed
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # lets the opening through
        try:
            assert proc.wait(timeout=10) == -signal.SIGTERM
        finally:
            os.close(reader)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert read_status(status) == (None, signal.SIGTERM)
    assert not ran.exists()
