"""Whose account a job runs under, and the files the agent hands over to that account.

The rule (``--job-user`` and ``--allow-root-jobs``, see :func:`choose_account`):

* ``submitter`` (the default): a root agent runs each job as the user who submitted it (uid,
  primary gid, supplementary groups, and HOME/USER/LOGNAME/SHELL from the passwd entry); a
  submitter unknown on the node fails the job. An agent that is not root cannot switch users,
  so it runs jobs of its own user and fails those of anyone else.
* ``agent``: every job runs as the agent's own user, whoever submitted it.
* Either way, a job that would run as root fails unless ``--allow-root-jobs`` is given.

A refusal is a :class:`JobRefused`; the executor reports it as a launch failure, so the master
ends the job FAILED with the message as its reason.

The switch itself happens in the job's child process (``subprocess.Popen(user=, group=,
extra_groups=)``), never in the agent. Everything done after the switch is done by the job's
own account, in the as-user wrapper (wrapper.py): entering the working directory, finding the
program, opening the output files. So the agent's privileges never open a path a user named,
and ``-o /etc/passwd`` fails with "Permission denied" instead of truncating root's file.

The agent's state directory stays the agent's alone (other users need no access to it, so it
may live under /root). The two files of a switched job that sit in it are handed over as open
descriptors, owned by the job's user with mode 0600/0700 so that other users can neither read
them nor write them even where the state directory is reachable:

* the status file ``jobs/<id>.status`` is created by the agent and given to the wrapper as its
  stdin (open for writing); the wrapper moves it to fd 4 and writes the job's ending there.
  Its path and format are the same as for other jobs, so re-adoption reads it as before;
* the batch script ``spool/job-<id>.sh`` is open read-only in the child, which runs it as
  ``/dev/fd/N`` (so ``$0`` is that path, and the descriptor stays open in the job).
"""

from __future__ import annotations

import logging
import os
import pwd
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mgpu_core.daemons import JobUser

log = logging.getLogger(__name__)

ROOT_UID = 0
ALLOW_ROOT_FLAG = "--allow-root-jobs"


class JobRefused(ValueError):
    """This node must not run the job as anyone: the message says why, for the job's reason."""


@dataclass(frozen=True, slots=True)
class Account:
    """The parts of a passwd entry that a job's process gets."""

    name: str
    uid: int
    gid: int
    home: str = "/"
    shell: str = "/bin/sh"

    def environment(self) -> dict[str, str]:
        """What a login as this account would set; the job's environment is the submitter's
        from the client host, where these may differ."""
        shell = self.shell or "/bin/sh"
        return {"HOME": self.home, "USER": self.name, "LOGNAME": self.name, "SHELL": shell}


@dataclass(frozen=True, slots=True)
class JobUserPolicy:
    mode: JobUser = JobUser.SUBMITTER
    allow_root: bool = False


Lookup = Callable[[str], Account | None]


def _account(entry: pwd.struct_passwd) -> Account:
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


def lookup_account(name: str) -> Account | None:
    """The account called ``name`` on this host, or None (names only: "1000" is no uid)."""
    try:
        return _account(pwd.getpwnam(name))
    except (KeyError, ValueError):  # ValueError: a NUL in the name
        return None


def agent_account() -> Account:
    """The account the agent runs as (effective ids); named by its uid if it has no entry."""
    uid = os.geteuid()
    try:
        return _account(pwd.getpwuid(uid))
    except KeyError:
        return Account(str(uid), uid, os.getegid())


def choose_account(
    submitter: str,
    policy: JobUserPolicy,
    *,
    agent: Account,
    node: str,
    lookup: Lookup = lookup_account,
) -> Account | None:
    """The account to switch a job of ``submitter`` to, or None to run it as the agent's own
    user (no switch); raises JobRefused if this node must not run it at all."""
    if policy.mode is JobUser.AGENT or submitter == agent.name:
        target = agent
    else:
        found = lookup(submitter) if submitter else None
        if found is None:
            raise JobRefused(f"user {submitter or '(none)'} does not exist on node {node}")
        if agent.uid != ROOT_UID and found.uid != agent.uid:
            raise JobRefused(
                f"node {node} runs jobs of {agent.name} only (its agent is not root, so it "
                f"cannot run jobs as {submitter}); run the agent as root to run every job as "
                f"its submitter, or with --job-user agent to run every job as {agent.name}"
            )
        target = found
    if target.uid == ROOT_UID and not policy.allow_root:
        if policy.mode is JobUser.AGENT:
            why = "its agent runs as root with --job-user agent, so every job would run as root"
        elif submitter == "root":
            why = "the job was submitted by root"
        else:
            why = f"the job's user {submitter} has uid 0"
        raise JobRefused(
            f"node {node} does not run jobs as root ({why}); "
            f"start its agent with {ALLOW_ROOT_FLAG} to allow that"
        )
    if agent.uid == ROOT_UID and target.uid != ROOT_UID:
        return target
    return None


def describe(policy: JobUserPolicy, agent: Account) -> str:
    """One line for the agent's log: whose jobs run here, as whom."""
    root = "root jobs allowed" if policy.allow_root else "root jobs refused"
    if policy.mode is JobUser.AGENT:
        return f"every job runs as the agent's user {agent.name} ({root})"
    if agent.uid == ROOT_UID:
        return f"jobs run as their submitters ({root})"
    return f"only jobs of {agent.name} run here: the agent is not root"


def supplementary_groups(account: Account) -> list[int]:
    """Every group ``account`` is in (the primary one included), as initgroups(3) sets them."""
    return os.getgrouplist(account.name, account.gid)


def _create_owned(path: Path, account: Account, mode: int) -> int:
    """Create ``path`` afresh (never following a link), owned by ``account``; the descriptor
    is open for writing."""
    path.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(path, flags, mode)
    try:
        os.fchown(fd, account.uid, account.gid)
        os.fchmod(fd, mode)  # whatever the agent's umask took away
    except OSError:
        os.close(fd)
        raise
    return fd


def create_status_file(path: Path, account: Account) -> int:
    """The empty status file of a job that runs as ``account``, open for writing (0600)."""
    return _create_owned(path, account, 0o600)


def write_script(path: Path, text: str, account: Account) -> int:
    """Write a batch script owned by ``account`` (0700); a read-only descriptor of it.

    The job runs it as ``/dev/fd/N``: it needs no path into the agent's state directory.
    """
    fd = _create_owned(path, account, 0o700)
    try:
        view = memoryview(os.fsencode(text))  # its bytes as submitted, UTF-8 or not
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
