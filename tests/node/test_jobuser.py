"""Who runs a job as whom (pure decisions, no root needed), and the files handed to the job."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mgpu_core.config import Address
from mgpu_core.daemons import JobUser, NodeConfig
from mgpu_node.jobuser import (
    Account,
    JobRefused,
    JobUserPolicy,
    choose_account,
    create_status_file,
    describe,
    write_script,
)

pytestmark = pytest.mark.timeout(30)

ROOT = Account("root", 0, 0, "/root", "/bin/bash")
ALICE = Account("alice", 1001, 1001, "/home/alice", "/bin/zsh")
BOB = Account("bob", 1002, 1002, "/home/bob")
ALICE_ALIAS = Account("alice2", 1001, 1001, "/home/alice")
USERS = {a.name: a for a in (ROOT, ALICE, BOB, ALICE_ALIAS)}

SUBMITTER = JobUserPolicy()  # the defaults: as the submitter, no root jobs
SUBMITTER_ROOT_OK = JobUserPolicy(JobUser.SUBMITTER, allow_root=True)
AGENT = JobUserPolicy(JobUser.AGENT)
AGENT_ROOT_OK = JobUserPolicy(JobUser.AGENT, allow_root=True)


def choose(submitter: str, policy: JobUserPolicy, agent: Account) -> Account | None:
    return choose_account(submitter, policy, agent=agent, node="n1", lookup=USERS.get)


def refusal(submitter: str, policy: JobUserPolicy, agent: Account) -> str:
    with pytest.raises(JobRefused) as refused:
        choose(submitter, policy, agent)
    return str(refused.value)


def test_defaults_are_the_submitter_without_root() -> None:
    config = NodeConfig(Address("127.0.0.1", 1), "n1", state_dir=Path("unused"))
    assert JobUserPolicy(config.job_user, config.allow_root_jobs) == SUBMITTER
    assert JobUserPolicy(JobUser.SUBMITTER, allow_root=False) == SUBMITTER


@pytest.mark.parametrize("policy", [SUBMITTER, SUBMITTER_ROOT_OK])
def test_a_root_agent_switches_to_the_submitter(policy: JobUserPolicy) -> None:
    assert choose("alice", policy, ROOT) == ALICE
    assert choose("bob", policy, ROOT) == BOB


def test_a_root_agent_refuses_an_unknown_submitter() -> None:
    assert refusal("mallory", SUBMITTER, ROOT) == "user mallory does not exist on node n1"
    assert refusal("", SUBMITTER, ROOT) == "user (none) does not exist on node n1"


def test_jobs_of_root_need_allow_root_jobs() -> None:
    message = refusal("root", SUBMITTER, ROOT)
    assert message == (
        "node n1 does not run jobs as root (the job was submitted by root); "
        "start its agent with --allow-root-jobs to allow that"
    )
    assert choose("root", SUBMITTER_ROOT_OK, ROOT) is None  # runs as the agent: no switch


def test_a_uid_0_alias_is_root_too() -> None:
    users = {**USERS, "toor": Account("toor", 0, 0)}
    with pytest.raises(JobRefused, match=r"the job's user toor has uid 0.*--allow-root-jobs"):
        choose_account("toor", SUBMITTER, agent=ROOT, node="n1", lookup=users.get)


def test_agent_mode_under_root_needs_allow_root_jobs() -> None:
    for submitter in ("alice", "root", "mallory"):
        message = refusal(submitter, AGENT, ROOT)
        assert message.startswith("node n1 does not run jobs as root (its agent runs as root")
        assert "--allow-root-jobs" in message
        assert choose(submitter, AGENT_ROOT_OK, ROOT) is None


@pytest.mark.parametrize("policy", [SUBMITTER, SUBMITTER_ROOT_OK])
def test_an_ordinary_agent_runs_its_own_users_jobs_only(policy: JobUserPolicy) -> None:
    assert choose("alice", policy, ALICE) is None
    assert choose("alice2", policy, ALICE) is None  # another name for the same uid
    message = refusal("bob", policy, ALICE)
    assert message.startswith("node n1 runs jobs of alice only (its agent is not root, so it ")
    assert "--job-user agent" in message
    # Root is another user to it: it cannot run root's jobs as root either.
    assert refusal("root", policy, ALICE).startswith("node n1 runs jobs of alice only")
    assert refusal("mallory", policy, ALICE) == "user mallory does not exist on node n1"


def test_an_ordinary_agent_without_a_passwd_entry_runs_its_own_jobs() -> None:
    nameless = Account("4242", 4242, 4242)
    assert choose("4242", SUBMITTER, nameless) is None  # no lookup needed


@pytest.mark.parametrize("policy", [AGENT, AGENT_ROOT_OK])
def test_agent_mode_runs_everyone_as_an_ordinary_agent(policy: JobUserPolicy) -> None:
    for submitter in ("alice", "bob", "root", "mallory", ""):
        assert choose(submitter, policy, ALICE) is None


def test_describe_says_whose_jobs_run() -> None:
    assert describe(SUBMITTER, ROOT) == "jobs run as their submitters (root jobs refused)"
    assert describe(AGENT_ROOT_OK, ROOT) == (
        "every job runs as the agent's user root (root jobs allowed)"
    )
    assert describe(SUBMITTER, ALICE) == "only jobs of alice run here: the agent is not root"


def test_account_environment_is_what_a_login_sets() -> None:
    assert ALICE.environment() == {
        "HOME": "/home/alice",
        "USER": "alice",
        "LOGNAME": "alice",
        "SHELL": "/bin/zsh",
    }
    assert Account("x", 5, 5, "/", "").environment()["SHELL"] == "/bin/sh"


def me() -> Account:
    return Account("me", os.geteuid(), os.getegid())


def test_status_file_is_created_afresh_private_and_writable(tmp_path: Path) -> None:
    path = tmp_path / "7.status"
    path.write_text("exit 0\n")  # a previous run's
    fd = create_status_file(path, me())
    try:
        os.write(fd, b"exit 3\n")
    finally:
        os.close(fd)
    info = path.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (os.geteuid(), os.getegid())
    assert path.read_text() == "exit 3\n"


def test_status_file_never_follows_a_link(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    path = tmp_path / "7.status"
    path.symlink_to(victim)
    os.close(create_status_file(path, me()))
    assert victim.read_text() == "precious"
    assert not path.is_symlink() and path.read_text() == ""


def test_script_is_private_and_handed_over_read_only(tmp_path: Path) -> None:
    path = tmp_path / "job-3.sh"
    old_umask = os.umask(0o077)  # the agent's umask does not decide the mode
    try:
        fd = write_script(path, "#!/bin/sh\necho hi\n", me())
    finally:
        os.umask(old_umask)
    try:
        assert os.read(fd, 100) == b"#!/bin/sh\necho hi\n"
        with pytest.raises(OSError):
            os.write(fd, b"x")
    finally:
        os.close(fd)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
