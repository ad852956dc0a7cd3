"""The job wrapper as real processes: status recording, signal re-raise, argv safety."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mgpu_node.wrapper import find_executable, read_status, wrap

pytestmark = pytest.mark.timeout(60)

PY = sys.executable


def run_wrapped(
    tmp_path: Path, argv: list[str], **kwargs: object
) -> tuple[subprocess.CompletedProcess[bytes], Path]:
    status = tmp_path / "job.status"
    result = subprocess.run(
        wrap(argv, status, argv[0]),
        capture_output=True,
        timeout=30,
        start_new_session=True,
        **kwargs,  # type: ignore[call-overload]
    )
    return result, status


@pytest.mark.parametrize("code", [0, 1, 5, 128, 200, 255, 128 + signal.SIGSTOP])
def test_exit_codes_pass_through(tmp_path: Path, code: int) -> None:
    result, status = run_wrapped(tmp_path, ["sh", "-c", f"exit {code}"])
    assert result.returncode == code
    assert status.read_text() == f"exit {code}\n"
    assert read_status(status) == (code, None)


@pytest.mark.parametrize("sig", [signal.SIGUSR1, signal.SIGSEGV, signal.SIGKILL, signal.SIGRTMIN])
def test_death_by_signal_is_recorded_and_raised_again(tmp_path: Path, sig: int) -> None:
    result, status = run_wrapped(tmp_path, ["sh", "-c", f"kill -{int(sig)} $$"])
    assert result.returncode == -sig  # the agent's waitpid sees what the command died of
    assert status.read_text() == f"signal {int(sig)}\n"
    assert read_status(status) == (None, int(sig))
    assert result.stderr == b""  # no "Segmentation fault" from the wrapper's shell


def test_group_sigterm_ends_the_command_but_not_the_wrapper(tmp_path: Path) -> None:
    status = tmp_path / "job.status"
    pid_file = tmp_path / "pid"
    script = f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 60"
    proc = subprocess.Popen(
        wrap(["sh", "-c", script], status, "sh"),
        start_new_session=True,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not pid_file.exists():
            assert time.monotonic() < deadline, "command did not start"
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode == -signal.SIGTERM
    assert read_status(status) == (None, signal.SIGTERM)
    assert err == b""


def test_signal_that_cannot_be_raised_again_is_still_recorded(tmp_path: Path) -> None:
    # SIGHUP ignored on entry (nohup): the wrapper cannot die of it, but says what happened.
    kill_self = "import os, signal; signal.signal(1, signal.SIG_DFL); os.kill(os.getpid(), 1)"
    result, status = run_wrapped(
        tmp_path,
        [PY, "-c", kill_self],
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),
    )
    assert result.returncode == 128 + signal.SIGHUP
    assert read_status(status) == (None, signal.SIGHUP)


def test_argv_is_passed_verbatim(tmp_path: Path) -> None:
    weird = [
        "",
        " two  spaces ",
        "$(touch pwned)",
        "`touch pwned`",
        '"; exit 3; "',
        "a\nb",
        "*",
        "-n",
    ]
    code = "import json, sys; print(json.dumps(sys.argv[1:]))"
    result, _ = run_wrapped(tmp_path, [PY, "-c", code, *weird], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == weird
    assert not (tmp_path / "pwned").exists()


def test_slurm_task_pid_is_the_commands_own_pid(tmp_path: Path) -> None:
    """Only the command's subshell knows the pid it will have (slurmenv.py); a stale value in
    the environment is replaced."""
    code = "import os; print(os.environ['SLURM_TASK_PID'], os.getpid(), os.getppid())"
    env = {**os.environ, "SLURM_TASK_PID": "1"}
    result, _ = run_wrapped(tmp_path, [PY, "-c", code], env=env)
    assert result.returncode == 0, result.stderr
    task_pid, pid, parent = result.stdout.split()
    assert task_pid == pid and parent != pid
    assert result.stderr == b""


def test_command_sees_clean_descriptors_and_default_signals(tmp_path: Path) -> None:
    probe = (
        "import os\n"
        "extra = [fd for fd in range(3, 64) if os.path.exists(f'/proc/self/fd/{fd}')]\n"
        "mask = [l for l in open('/proc/self/status') if l.startswith(('SigIgn', 'SigCgt'))]\n"
        "print(extra, ''.join(mask).split())\n"
    )
    direct = subprocess.run([PY, "-c", probe], capture_output=True, timeout=30, check=True)
    wrapped, _ = run_wrapped(tmp_path, [PY, "-c", probe])
    assert wrapped.returncode == 0, wrapped.stderr
    assert wrapped.stdout == direct.stdout


def test_program_named_like_an_option(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "-odd"
    program.write_text("#!/bin/sh\necho ran $1\n")
    program.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin"}
    found = find_executable("-odd", env, str(tmp_path))
    assert found == str(program)
    status = tmp_path / "st"
    result = subprocess.run(
        wrap(["-odd", "x"], status, found), capture_output=True, env=env, timeout=30
    )
    assert result.stdout == b"ran x\n"


def test_find_executable_mirrors_execvp_errors(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin"}
    assert find_executable("sh", env, "/") in ("/usr/bin/sh", "/bin/sh")
    with pytest.raises(FileNotFoundError) as missing:
        find_executable("no-such-program-mgpu", env, "/")
    assert missing.value.filename == "no-such-program-mgpu"
    with pytest.raises(FileNotFoundError):
        find_executable("./nothing-here", env, str(tmp_path))
    plain = tmp_path / "plain"
    plain.write_text("data")
    with pytest.raises(PermissionError):
        find_executable("./plain", env, str(tmp_path))
    with pytest.raises(PermissionError):
        find_executable(str(tmp_path), env, "/")
    plain.chmod(0o755)
    assert find_executable("./plain", env, str(tmp_path)) == "./plain"


@pytest.mark.parametrize(
    "text", ["", "exit", "exit x", "exit 256", "signal 0", "signal 99", "bye 1"]
)
def test_unusable_status_reads_as_none(tmp_path: Path, text: str) -> None:
    status = tmp_path / "st"
    status.write_text(text)
    assert read_status(status) is None
    assert read_status(tmp_path / "absent") is None
