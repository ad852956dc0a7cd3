"""mgpu_core.procenv reads the process as os does, without importing os."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mgpu_core import procenv

pytestmark = pytest.mark.timeout(60)

SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_a_command_reads_its_environment_without_importing_os(tmp_path: Path) -> None:
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from mgpu_core import procenv;"
        "env = dict(procenv.environ()); cwd = procenv.getcwd(); home = procenv.home();"
        "loaded = 'os' in sys.modules;"
        "import os, json; print(json.dumps([env, dict(os.environ), cwd, home, loaded]))"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/home/x/", "ODD": "a=b"}
    raw_env = {k.encode(): v.encode() for k, v in env.items()}
    raw_env[b"BYTES"] = b"\xff\xfe"
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, SRC],
        env=raw_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    seen_env, os_env, cwd, home, loaded = json.loads(out)
    assert not loaded, "procenv imported os"
    assert seen_env == os_env
    assert seen_env.items() >= {**env, "BYTES": "\udcff\udcfe"}.items()
    assert cwd == str(tmp_path)
    assert home == "/home/x"


def test_once_os_is_loaded_its_environ_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MGPU_PROCENV_TEST", "set by the test")
    assert procenv.getenv("MGPU_PROCENV_TEST") == "set by the test"
    assert procenv.environ() is os.environ


@pytest.mark.parametrize(
    "path",
    ["a", "a/b", "./a/../b", "../..", "/", "//x", "///x", "/a/./b/../../c", "a//b/", "", "."],
)
def test_abspath_is_posixpaths(path: str) -> None:
    assert procenv.abspath(path or ".") == os.path.abspath(path or ".")


@pytest.mark.parametrize(
    "parts", [("a", "b"), ("a/", "b"), ("/a", "/b", "c"), ("", "x"), ("a", ""), ("/", "x")]
)
def test_join_is_posixpaths(parts: tuple[str, ...]) -> None:
    assert procenv.join(*parts) == os.path.join(*parts)


def test_home_file_socket_and_umask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert procenv.home() == os.path.expanduser("~")
    plain = tmp_path / "f"
    plain.write_text("x")
    sock_path = tmp_path / "s"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert procenv.is_socket(str(sock_path)) and not procenv.is_file(str(sock_path))
    assert procenv.is_file(str(plain)) and not procenv.is_socket(str(plain))
    assert not procenv.is_file(str(tmp_path / "missing"))
    assert not procenv.is_file(str(tmp_path))
    before = os.umask(0o027)
    try:
        assert procenv.umask() == 0o027
        assert procenv.umask() == 0o027  # reading it leaves it as it was
    finally:
        os.umask(before)
    assert procenv.fsencode("caf\udce9") == os.fsencode("caf\udce9")
