"""Persistent workspaces: one directory per user under the node's workspace root
(``--workspace-root``), made at a job's start if missing and kept across jobs and sessions;
every job sees its path in ``MGPU_WORKSPACE``. Listed and removed through the master
(``mgpu_client workspace``: the ``workspace`` order, answered with ``workspace_data``).

The agent may run as root and a workspace holds a user's data, so:

* The root is the admin's. At start it must be a directory owned by root or by the agent's
  user and writable by nobody else, and no directory above it may be writable by others
  unless sticky (/tmp), as sshd's StrictModes asks of a home. Then nobody but an agent (or the
  admin) creates, renames or removes an entry in it, and what ``lstat`` says of
  ``ROOT/<user>`` stays true until an agent changes it. A root that fails this stops the
  agent, in one line.
* ``ROOT/<user>`` is made with ``os.mkdir`` (which never follows a link), handed to the
  account the job runs as (``lchown``) and given mode 0700. An existing one is used only if
  ``lstat`` finds a directory owned by that account: a symlink or another owner fails the job
  with the reason. One owned by the agent's own user is a creation that another agent on a
  shared root (or a crash) left between its mkdir and its chown: finished, not refused.
* On a shared root several nodes make the same directory: the ``mkdir`` that loses finds it
  made and checks it as any existing one. Nodes that share a root share its id (a random one
  in ``ROOT/.mgpu-root-id``, written once by the first agent there), which the hello carries:
  the master lists a shared root once, and refuses to remove a workspace that a job on any of
  its nodes uses.
* Sizes are measured by walking with directory descriptors (``os.fwalk``), never following a
  link, within a time budget: a walk cut short says so. ``--workspace-quota`` is advisory: a
  workspace over it is marked in the listing and its jobs are told so on stderr at start;
  nothing here enforces it (a filesystem's own quotas, where set, the kernel enforces).
* Removal renames the directory aside (one rename, done before the agent reads its next
  order, so a launch after it makes a fresh workspace) and deletes it in a thread with
  ``shutil.rmtree``, which works through descriptors and removes a link without following it.
  What an agent stopped meanwhile left aside is deleted at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mgpu_core.constants import WORKSPACE_REMOVING_PREFIX, WORKSPACE_ROOT_ID_FILE
from mgpu_core.errors import ConfigError
from mgpu_core.units import format_size
from mgpu_core.wsmsgs import MAX_WORKSPACES
from mgpu_node.jobuser import Account, JobRefused

log = logging.getLogger(__name__)

ENV_VAR = "MGPU_WORKSPACE"
# Measuring a workspace at a job's start (only with a quota): the launch waits for it, in the
# agent's loop, so it is short; a walk cut short warns only if it already passed the quota.
START_WALK_S = 0.2
# All the walks of one listing together: the master waits 10 s for the answer.
LIST_WALK_S = 5.0
_STAT_BATCH = 256  # entries measured between two looks at the clock
_ID_HEX_LEN = 32
_Walk = Generator[tuple[str, list[str], list[str], int], None, None]


@dataclass(frozen=True, slots=True)
class Workspace:
    """What a job is given: its workspace, and a one-line warning for its stderr ("": none)."""

    path: Path
    notice: str = ""


@dataclass(frozen=True, slots=True)
class Usage:
    used_bytes: int  # allocated blocks, as du counts them; a file with several links once
    complete: bool  # False: the walk was cut short (time, an unreadable directory): at least


def valid_user(user: str) -> bool:
    """Whether ``user`` can name a workspace: one path component, not hidden (the root's own
    files start with a dot), at most 255 bytes."""
    if not user or "/" in user or "\0" in user or user.startswith("."):
        return False
    try:
        return len(os.fsencode(user)) <= 255
    except UnicodeEncodeError:
        return False


class Workspaces:
    def __init__(self, root: Path, *, node: str, quota_bytes: int = 0, root_id: str = "") -> None:
        """Use :func:`open_workspaces`, which checks the root first."""
        self.root = root
        self.node = node
        self.quota_bytes = quota_bytes  # 0: none
        self.root_id = root_id  # "": could not be read or written (not known to be shared)
        self.agent_uid = os.geteuid()

    # ---- a job's start ---------------------------------------------------------------------

    def prepare(self, user: str, account: Account) -> Workspace:
        """``user``'s workspace, made if missing, owned by ``account`` (whom the job runs as);
        JobRefused saying why the job cannot have it."""
        if not valid_user(user):
            raise JobRefused(f"user name {user!r} cannot name a workspace on node {self.node}")
        path = self.root / user
        made = False
        try:
            os.mkdir(path, 0o700)
            made = True
        except FileExistsError:
            pass
        except OSError as exc:
            raise JobRefused(
                f"cannot create workspace {path} on node {self.node}: {exc.strerror}"
            ) from None
        self._own(path, account, made=made)
        return Workspace(path, self._notice(path) if self.quota_bytes else "")

    def _own(self, path: Path, account: Account, *, made: bool) -> None:
        """Check that ``path`` is a directory of ``account`` (or hand over one of ours)."""
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise JobRefused(
                f"cannot use workspace {path} on node {self.node}: {exc.strerror}"
            ) from None
        if stat.S_ISLNK(st.st_mode):
            raise JobRefused(
                f"workspace {path} on node {self.node} is a symbolic link: not used "
                "(an admin should look at it and remove it)"
            )
        if not stat.S_ISDIR(st.st_mode):
            raise JobRefused(f"workspace {path} on node {self.node} is not a directory: not used")
        if st.st_uid == account.uid and not made:
            return  # the user's own: its mode is the user's choice
        if st.st_uid not in (account.uid, self.agent_uid):
            raise JobRefused(
                f"workspace {path} on node {self.node} belongs to uid {st.st_uid}, not to "
                f"{account.name} (uid {account.uid}): not used (an admin should look at it)"
            )
        # Ours: made just now, or by another agent of a shared root (or before a crash) that
        # has not handed it over yet. Nobody else can have put it there: the root is ours.
        try:
            if st.st_uid != account.uid:
                os.lchown(path, account.uid, account.gid)
            os.chmod(path, 0o700)  # whatever the agent's umask took away
        except OSError as exc:
            raise JobRefused(
                f"cannot give workspace {path} on node {self.node} to {account.name}: "
                f"{exc.strerror}"
            ) from None

    def _notice(self, path: Path) -> str:
        usage = measure(path, START_WALK_S)
        if usage.used_bytes < self.quota_bytes:
            return ""
        return (
            f"workspace {path} uses {format_size(usage.used_bytes)}, over this node's quota of "
            f"{format_size(self.quota_bytes)}: please free some space"
        )

    # ---- listing and removal -------------------------------------------------------------

    def listing(self, user: str = "", *, budget_s: float = LIST_WALK_S) -> dict[str, Any]:
        """``workspace_data``'s fields (but ``req``): ``user``'s workspace ("": everyone's),
        measured within ``budget_s`` together, and the space left on the root's filesystem.
        Blocking: run it in a thread."""
        if user and not valid_user(user):
            return {"error": f"user name {user!r} cannot name a workspace"}
        deadline = time.monotonic() + budget_s
        try:
            names = [user] if user else self._names()
            rows = [self._row(name, deadline) for name in names[:MAX_WORKSPACES]]
            vfs = os.statvfs(self.root)
        except OSError as exc:
            return {"error": f"cannot list workspace root {self.root}: {exc.strerror}"}
        return {
            **self._about(),
            "free_bytes": vfs.f_bavail * vfs.f_frsize,
            "total_bytes": vfs.f_blocks * vfs.f_frsize,
            "workspaces": [row for row in rows if row is not None],
        }

    def _names(self) -> list[str]:
        with os.scandir(self.root) as entries:
            return sorted(
                e.name for e in entries if valid_user(e.name) and e.is_dir(follow_symlinks=False)
            )

    def _row(self, name: str, deadline: float) -> dict[str, Any] | None:
        path = self.root / name
        try:
            st = os.lstat(path)
        except FileNotFoundError:  # never made, or removed meanwhile
            return None
        if not stat.S_ISDIR(st.st_mode):
            return None
        usage = measure(path, max(0.0, deadline - time.monotonic()))
        return {
            "user": name,
            "path": str(path),
            "used_bytes": usage.used_bytes,
            "complete": usage.complete,
            "over_quota": bool(self.quota_bytes) and usage.used_bytes >= self.quota_bytes,
            "modified_s": st.st_mtime,
        }

    def remove(self, user: str) -> dict[str, Any]:
        """``workspace_data``'s fields for removing ``user``'s workspace: renamed aside now
        (so a job started after this gets a fresh one), deleted in a thread."""
        if not valid_user(user):
            return {"error": f"user name {user!r} cannot name a workspace"}
        path = self.root / user
        try:
            st = os.lstat(path)
            if stat.S_ISDIR(st.st_mode):
                # Not named after the user: a 255-byte name plus the prefix would be too long.
                aside = self.root / f"{WORKSPACE_REMOVING_PREFIX}{secrets.token_hex(8)}"
                os.rename(path, aside)
                _delete_in_background([aside])
            else:  # a link or a file where a workspace belongs: the entry itself goes
                os.unlink(path)
        except FileNotFoundError:
            return {**self._about(), "removed": ""}
        except OSError as exc:
            return {"error": f"cannot remove workspace {path} on node {self.node}: {exc.strerror}"}
        log.info("node=%s user=%s workspace %s removed", self.node, user, path)
        return {**self._about(), "removed": str(path)}

    def _about(self) -> dict[str, Any]:
        return {"root": str(self.root), "quota_bytes": self.quota_bytes}


def node_workspaces(
    option: str | None, *, default: Path, node: str, quota_bytes: int = 0
) -> Workspaces | None:
    """The agent's workspaces as ``--workspace-root`` says: None for ``none``; a root the
    admin named that is not safe stops the agent (ConfigError), the default one (in the state
    directory) only turns workspaces off, with an error in the log, since nobody asked for it."""
    if option == "none":
        return None
    if option:
        return open_workspaces(Path(option), node=node, quota_bytes=quota_bytes)
    try:
        return open_workspaces(default, node=node, quota_bytes=quota_bytes)
    except ConfigError as err:
        log.error("node=%s no workspaces: %s (see --workspace-root)", node, err.message)
        return None


def open_workspaces(root: Path, *, node: str, quota_bytes: int = 0) -> Workspaces:
    """The agent's workspaces under ``root`` (made, mode 0711, if missing), checked as the
    module says: ConfigError, one line, if the root is not safe to use. Deletes what removals
    left aside, in a thread."""
    try:
        root.mkdir(mode=0o711, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create workspace root {root}: {exc.strerror}") from None
    real = Path(os.path.realpath(root))
    check_root(real)
    found = Workspaces(real, node=node, quota_bytes=quota_bytes, root_id=_root_id(real))
    leftovers = [real / n for n in os.listdir(real) if n.startswith(WORKSPACE_REMOVING_PREFIX)]
    if leftovers:
        _delete_in_background(leftovers)
    quota = format_size(quota_bytes) if quota_bytes else "none"
    log.info("node=%s workspaces in %s (root id %s, quota %s)", node, real, found.root_id, quota)
    if found.agent_uid == 0 and not reachable_by_others(real):
        log.warning(
            "workspace root %s: a directory on the way does not let other users search it, so "
            "jobs that run as their submitters cannot enter their workspaces; choose another "
            "--workspace-root (local scratch, a shared filesystem)",
            real,
        )
    return found


def check_root(root: Path) -> None:
    """ConfigError unless ``root`` (a real path: no links) and every directory above it are
    directories that only root or the agent's user can change, as the module says."""
    uid = os.geteuid()
    for path in (root, *root.parents):
        try:
            st = os.lstat(path)
        except OSError as exc:
            raise ConfigError(
                f"workspace root {root}: cannot check {path}: {exc.strerror}"
            ) from None
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"workspace root {root}: {path} is not a directory")
        if st.st_uid not in (0, uid):
            raise ConfigError(
                f"workspace root {root}: {path} belongs to uid {st.st_uid}, who could replace "
                "the workspaces; choose a path that only root or the agent's user can change"
            )
        sticky = bool(mode & stat.S_ISVTX) and path != root
        if mode & 0o022 and not sticky:
            raise ConfigError(
                f"workspace root {root}: {path} is writable by others (mode {mode:o}), who "
                "could replace the workspaces; choose a path that only root or the agent's "
                "user can change"
            )


def reachable_by_others(root: Path) -> bool:
    """Whether another user can reach a directory in ``root``: every directory on the way
    lets others search it (a root under /root, 0700, does not)."""
    try:
        return all(os.stat(p).st_mode & 0o001 for p in (root, *root.parents))
    except OSError:
        return False


def measure(path: Path, budget_s: float) -> Usage:
    """What ``path``'s tree takes on disk, walked within ``budget_s`` without following a
    link (a link counts as itself); ``complete`` False if the walk was cut short."""
    deadline = time.monotonic() + budget_s
    try:
        total = os.lstat(path).st_blocks * 512
    except OSError:
        return Usage(0, False)
    seen: set[tuple[int, int]] = set()
    errors: list[OSError] = []
    counted = 0
    # A generator (typeshed says Iterator): closed here, so that a walk cut short closes the
    # directories it holds open now, not when it is collected.
    walk = cast(_Walk, os.fwalk(path, follow_symlinks=False, onerror=errors.append))
    with contextlib.closing(walk):
        for _, dirs, files, dir_fd in walk:
            for name in (*dirs, *files):
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:  # removed meanwhile: nothing to count
                    continue
                except OSError:
                    return Usage(total, False)
                if st.st_nlink > 1 and not stat.S_ISDIR(st.st_mode):
                    if (st.st_dev, st.st_ino) in seen:
                        continue
                    seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
                counted += 1
                if counted % _STAT_BATCH == 0 and time.monotonic() > deadline:
                    return Usage(total, False)
            if time.monotonic() > deadline:
                return Usage(total, False)
    return Usage(total, not errors)


def _root_id(root: Path) -> str:
    """The root's id: read, or written first (atomically: on a shared root the first agent's
    wins); "" if neither works (logged: then the root is not known to be shared)."""
    path = root / WORKSPACE_ROOT_ID_FILE
    found = _read_id(path)
    if found:
        return found
    tmp = root / f"{WORKSPACE_ROOT_ID_FILE}.{secrets.token_hex(4)}"
    try:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        fd = os.open(tmp, flags, 0o644)
        try:
            os.write(fd, f"{secrets.token_hex(_ID_HEX_LEN // 2)}\n".encode())
        finally:
            os.close(fd)
        with contextlib.suppress(FileExistsError):  # another agent's came first
            os.link(tmp, path)
    except OSError as exc:
        log.warning(
            "workspace root %s: cannot write its id (%s): nodes that share it will not be "
            "recognised as sharing it",
            root,
            exc.strerror,
        )
        return ""
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return _read_id(path)


def _read_id(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        text = os.read(fd, 2 * _ID_HEX_LEN).decode(errors="replace").strip()
    except OSError:
        return ""
    finally:
        os.close(fd)
    if len(text) == _ID_HEX_LEN and all(c in "0123456789abcdef" for c in text):
        return text
    return ""


def _delete_in_background(paths: list[Path]) -> None:
    """Delete trees renamed aside, in a daemon thread: an agent that stops meanwhile leaves
    the rest for the next start (another agent of a shared root may delete them too)."""

    def delete() -> None:
        for path in paths:
            shutil.rmtree(path, ignore_errors=True)

    threading.Thread(target=delete, name="workspace-rm", daemon=True).start()


# ---- the agent's answers to the master's ``workspace`` order ----------------------------------


def removal(workspaces: Workspaces | None, msg: dict[str, Any], *, node: str) -> dict[str, Any]:
    """The ``workspace_data`` answer to an ``rm``: done at once, in the agent's loop (one
    rename), so that a launch read after it makes a fresh workspace."""
    if workspaces is None:
        return _answer(msg, {"error": f"node {node} keeps no workspaces"})
    return _answer(msg, workspaces.remove(msg["user"]))


async def listing(
    workspaces: Workspaces | None, msg: dict[str, Any], *, node: str
) -> dict[str, Any]:
    """The ``workspace_data`` answer to a ``list``, measured in a thread (a large tree or a
    slow filesystem must not hold up the agent's loop: heartbeats, exits)."""
    if workspaces is None:
        return _answer(msg, {"error": f"node {node} keeps no workspaces"})
    return _answer(msg, await asyncio.to_thread(workspaces.listing, msg["user"]))


def _answer(msg: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    return {"t": "workspace_data", "req": msg["req"], **fields}
