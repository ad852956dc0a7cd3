"""What a client command reads of its own process, from ``posix`` directly instead of ``os``.

Importing ``os`` costs a command ~1.1 ms of a ~13 ms start (it builds ``os.environ`` and
imports ``_collections_abc``, ``stat`` and ``posixpath``), and a command needs a handful of
its functions: the environment, the working directory, the uid and the umask. ``posix`` is
built in and already loaded. Daemons and everything off a command's hot path use ``os`` as
usual; both read the same process (tests/core/test_procenv.py compares them).
"""

from __future__ import annotations

import posix
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import NoReturn

_ENCODING = sys.getfilesystemencoding()
_environ: dict[str, str] | None = None

getuid = posix.getuid
getcwd = posix.getcwd
uname = posix.uname
S_IFMT, S_IFREG, S_IFSOCK = 0o170000, 0o100000, 0o140000


def environ() -> Mapping[str, str]:
    """The environment as ``os.environ`` decodes it (undecodable bytes as surrogates). Once
    ``os`` is imported (always, in a daemon or a test), ``os.environ`` itself, so that what
    it was told (``os.environ[...] = ...``, a test's monkeypatch) is read here too; before, a
    copy of the process's environment made once."""
    os_module = sys.modules.get("os")
    if os_module is not None:
        environ: Mapping[str, str] = os_module.environ
        return environ
    global _environ
    if _environ is None:
        _environ = {
            key.decode(_ENCODING, "surrogateescape"): value.decode(_ENCODING, "surrogateescape")
            for key, value in posix.environ.items()
        }
    return _environ


def getenv(name: str, default: str | None = None) -> str | None:
    return environ().get(name, default)


def fsencode(path: str) -> bytes:
    return path.encode(_ENCODING, "surrogateescape")


def home() -> str:
    """``os.path.expanduser("~")``: $HOME, else the passwd entry's directory."""
    value = getenv("HOME")
    if value:
        return value.rstrip("/") or "/"
    import pwd

    try:
        return pwd.getpwuid(posix.getuid()).pw_dir.rstrip("/") or "/"
    except KeyError:
        return "~"


def join(first: str, *parts: str) -> str:
    """``os.path.join`` for the paths a command builds (an absolute part starts over)."""
    path = first
    for part in parts:
        if part.startswith("/") or not path:
            path = part
        elif path.endswith("/"):
            path += part
        else:
            path += "/" + part
    return path


def abspath(path: str) -> str:
    """``os.path.abspath``: joined to the working directory and normalised (``.``, ``..``
    and repeated slashes folded, as posixpath.normpath does)."""
    if not path.startswith("/"):
        path = join(posix.getcwd(), path)
    kept: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if kept:
                kept.pop()
            continue
        kept.append(part)
    # POSIX keeps exactly two leading slashes; posixpath.normpath does too.
    lead = "//" if path.startswith("//") and not path.startswith("///") else "/"
    return lead + "/".join(kept)


def mode_of(path: str) -> int | None:
    """``st_mode`` of ``path`` (following links), None if it cannot be read."""
    try:
        return posix.stat(path).st_mode
    except OSError:
        return None


def is_file(path: str) -> bool:
    mode = mode_of(path)
    return mode is not None and mode & S_IFMT == S_IFREG


def is_socket(path: str) -> bool:
    mode = mode_of(path)
    return mode is not None and mode & S_IFMT == S_IFSOCK


def stat(path: str) -> posix.stat_result:
    return posix.stat(path)


def umask() -> int:
    """This process's umask, read by setting it and back: there is no other portable way (a
    command has no other thread to race with)."""
    mask = posix.umask(0o077)
    posix.umask(mask)
    return mask


def exit_now(code: int) -> NoReturn:
    """``os._exit``: leave without the interpreter's teardown."""
    posix._exit(code)
