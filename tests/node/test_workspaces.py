"""Persistent workspaces on the node (mgpu_node/workspaces.py): made at a job's start with the
job account's ownership and mode 0700, never through a link someone planted, shared safely by
nodes on one root; measured without following links; removed by a rename and a thread; and
the job's side: MGPU_WORKSPACE, and the quota warning on its stderr."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mgpu_core.constants import WORKSPACE_REMOVING_PREFIX, WORKSPACE_ROOT_ID_FILE
from mgpu_core.daemons import JobUser
from mgpu_core.errors import ConfigError
from mgpu_core.messages import MASTER_TO_NODE, NODE_MESSAGES, validate
from mgpu_core.models import Launch
from mgpu_node.executor import Executor
from mgpu_node.jobuser import Account, JobRefused, JobUserPolicy, agent_account
from mgpu_node.spool import ExitSpool
from mgpu_node.workspaces import (
    Workspace,
    Workspaces,
    measure,
    node_workspaces,
    open_workspaces,
    removal,
    valid_user,
)
from mgpu_node.wrapper import NOTICE_VAR, wrap
from tests.helpers.cluster import wait_for

pytestmark = pytest.mark.timeout(60)

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="hands directories to other uids")

# Accounts with no passwd entry: root may chown to any uid, and these own nothing else.
ALICE = Account("alice", 54_321, 54_321)
MALLORY = Account("mallory", 54_322, 54_322)


def root_of(tmp_path: Path, **kwargs: Any) -> Workspaces:
    return open_workspaces(tmp_path / "ws", node="n1", **kwargs)


def test_names_that_cannot_name_a_workspace() -> None:
    assert valid_user("alice") and valid_user("a.b-c_d")
    for bad in ("", ".", "..", ".hidden", "a/b", "../etc", "x\0y", "é" * 200, "\udcff\ud800"):
        assert not valid_user(bad), bad


@as_root
def test_a_workspace_is_made_once_with_the_jobs_owner_and_mode_0700(tmp_path: Path) -> None:
    ws = root_of(tmp_path)
    assert stat.S_IMODE(os.stat(ws.root).st_mode) == 0o711  # others reach their own only
    old_umask = os.umask(0o077)  # the agent's umask does not decide the mode
    try:
        first = ws.prepare("alice", ALICE)
    finally:
        os.umask(old_umask)
    assert first == Workspace(ws.root / "alice")
    info = os.lstat(first.path)
    assert (info.st_uid, info.st_gid) == (ALICE.uid, ALICE.gid)
    assert stat.S_IMODE(info.st_mode) == 0o700
    (first.path / "checkpoint").write_text("step 100")
    os.chmod(first.path, 0o750)  # the user's choice, kept by later jobs
    again = ws.prepare("alice", ALICE)
    assert again.path == first.path
    assert (again.path / "checkpoint").read_text() == "step 100"
    assert stat.S_IMODE(os.stat(again.path).st_mode) == 0o750


def test_the_agents_own_jobs_get_workspaces_of_the_agents_user(tmp_path: Path) -> None:
    """A non-root agent (local mode) runs its own user's jobs: no chown needed."""
    ws = root_of(tmp_path)
    me = agent_account()
    path = ws.prepare("someone", me).path
    assert os.lstat(path).st_uid == me.uid and stat.S_IMODE(os.lstat(path).st_mode) == 0o700


@as_root
def test_a_planted_symlink_or_a_strangers_directory_fails_the_job(tmp_path: Path) -> None:
    ws = root_of(tmp_path)
    target = tmp_path / "precious"
    target.mkdir(mode=0o755)
    (ws.root / "alice").symlink_to(target)
    with pytest.raises(JobRefused, match="is a symbolic link: not used"):
        ws.prepare("alice", ALICE)
    assert os.stat(target).st_uid == 0  # never handed to alice through the link
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755

    strangers = ws.root / "bob"
    strangers.mkdir()
    os.chown(strangers, MALLORY.uid, MALLORY.gid)
    bob = Account("bob", 54_323, 54_323)
    with pytest.raises(JobRefused, match=f"belongs to uid {MALLORY.uid}, not to bob"):
        ws.prepare("bob", bob)
    assert os.lstat(strangers).st_uid == MALLORY.uid

    (ws.root / "carol").write_text("not a directory")
    with pytest.raises(JobRefused, match="is not a directory"):
        ws.prepare("carol", Account("carol", 54_324, 54_324))
    with pytest.raises(JobRefused, match="cannot name a workspace"):
        ws.prepare("../escape", ALICE)


@as_root
def test_nodes_sharing_a_root_make_the_same_workspace_and_share_its_id(tmp_path: Path) -> None:
    """Two agents on one (shared) root: one id between them, and both create the same user's
    workspace at once without either job failing, including one half made (mkdir done, chown
    not yet) by the other."""
    first = open_workspaces(tmp_path / "ws", node="n1")
    second = open_workspaces(tmp_path / "ws", node="n2")
    assert len(first.root_id) == 32 and first.root_id == second.root_id
    assert (first.root / WORKSPACE_ROOT_ID_FILE).read_text().strip() == first.root_id
    assert [p.name for p in first.root.iterdir()] == [WORKSPACE_ROOT_ID_FILE]  # no temp left

    for attempt in range(20):
        user = f"u{attempt}"
        account = Account(user, 55_000 + attempt, 55_000 + attempt)
        results: list[object] = []
        threads = [
            threading.Thread(target=_try, args=(w, user, account, results)) for w in (first, second)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert results == [first.root / user] * 2
        assert os.lstat(first.root / user).st_uid == account.uid

    half_made = first.root / "dave"
    half_made.mkdir(mode=0o755)  # owned by root: another agent's, before its chown
    dave = Account("dave", 54_325, 54_325)
    assert second.prepare("dave", dave).path == half_made
    info = os.lstat(half_made)
    assert info.st_uid == dave.uid and stat.S_IMODE(info.st_mode) == 0o700


def _try(ws: Workspaces, user: str, account: Account, results: list[object]) -> None:
    try:
        results.append(ws.prepare(user, account).path)
    except JobRefused as exc:
        results.append(exc)


def test_a_root_others_can_change_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    with pytest.raises(ConfigError, match=r"writable by others \(mode 777\)"):
        open_workspaces(loose, node="n1")
    os.chmod(loose, 0o1777)  # sticky is fine above the root (/tmp), not for the root itself
    with pytest.raises(ConfigError, match="writable by others"):
        open_workspaces(loose, node="n1")
    ws = open_workspaces(loose / "ws", node="n1")
    assert ws.root == loose / "ws"
    os.chmod(loose, 0o757)  # not sticky: anyone could rename ws away and put their own
    with pytest.raises(ConfigError, match=f"{loose} is writable by others"):
        open_workspaces(loose / "ws", node="n1")
    if os.geteuid() == 0:
        os.chmod(loose, 0o755)
        os.chown(loose, MALLORY.uid, MALLORY.gid)
        with pytest.raises(ConfigError, match=f"belongs to uid {MALLORY.uid}"):
            open_workspaces(loose / "ws", node="n1")


def test_an_unsafe_default_root_turns_workspaces_off_and_a_named_one_stops_the_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loose = tmp_path / "state"
    loose.mkdir()
    os.chmod(loose, 0o777)
    default = loose / "workspaces"
    assert node_workspaces(None, default=default, node="n1") is None
    assert "node=n1 no workspaces: workspace root" in caplog.text
    with pytest.raises(ConfigError, match="writable by others"):
        node_workspaces(str(default), default=tmp_path / "unused", node="n1")
    assert node_workspaces("none", default=tmp_path / "ws", node="n1") is None
    assert not (tmp_path / "ws").exists()
    os.chmod(loose, 0o755)
    found = node_workspaces(None, default=default, node="n1", quota_bytes=10)
    assert found is not None and (found.root, found.quota_bytes) == (default, 10)


def test_used_bytes_count_each_file_once_and_never_through_a_link(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data").write_bytes(os.urandom(300_000))
    os.link(tree / "sub" / "data", tree / "same-data")  # a hard link: counted once
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(os.urandom(2_000_000))
    (tree / "to-outside").symlink_to(outside)  # not followed
    (tree / "to-big").symlink_to(outside / "big")
    usage = measure(tree, 10.0)
    data_blocks = os.stat(tree / "sub" / "data").st_blocks * 512
    assert usage.complete
    assert data_blocks <= usage.used_bytes < data_blocks + 64 * 1024  # + directories, links
    assert measure(tree / "to-outside", 10.0).used_bytes < 64 * 1024  # a link is itself

    many = tmp_path / "many"
    many.mkdir()
    for i in range(2000):
        (many / str(i)).write_bytes(b"x")
    cut = measure(many, 0.0)
    assert not cut.complete and cut.used_bytes < measure(many, 10.0).used_bytes


def test_listing_measures_each_workspace_and_marks_those_over_the_quota(tmp_path: Path) -> None:
    ws = root_of(tmp_path, quota_bytes=100_000)
    me = agent_account()
    small = ws.prepare("small", me).path
    (small / "f").write_bytes(b"x" * 1000)
    big = ws.prepare("big", me).path
    (big / "f").write_bytes(os.urandom(200_000))
    (ws.root / "link").symlink_to(big)  # not a workspace: not listed
    answer = ws.listing()
    rows = {row["user"]: row for row in answer["workspaces"]}
    assert sorted(rows) == ["big", "small"]
    assert rows["big"]["over_quota"] and not rows["small"]["over_quota"]
    assert rows["big"]["used_bytes"] >= 200_000 > rows["small"]["used_bytes"] > 0
    assert rows["big"]["path"] == str(big) and rows["big"]["complete"]
    assert answer["quota_bytes"] == 100_000 and answer["root"] == str(ws.root)
    assert 0 < answer["free_bytes"] <= answer["total_bytes"]
    validate({"t": "workspace_data", "req": 1, **answer}, NODE_MESSAGES)  # the wire takes it
    assert [r["user"] for r in ws.listing("small")["workspaces"]] == ["small"]
    assert ws.listing("nobody-yet")["workspaces"] == []
    assert "cannot name a workspace" in ws.listing("../x")["error"]

    # A job's start measures too: over the quota, the job is told (and still runs).
    assert "over this node's quota of 97.7K" in ws.prepare("big", me).notice
    assert ws.prepare("small", me).notice == ""


def test_removal_renames_at_once_and_deletes_in_the_background(tmp_path: Path) -> None:
    ws = root_of(tmp_path)
    me = agent_account()
    path = ws.prepare("alice", me).path
    for i in range(50):
        (path / f"f{i}").write_text("data")
    outside = tmp_path / "keep"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    (path / "escape").symlink_to(outside)  # removed as a link, never followed
    order = {"req": 7, "action": "rm", "user": "alice"}
    answer = removal(ws, order, node="n1")
    assert answer == {
        "t": "workspace_data",
        "req": 7,
        "root": str(ws.root),
        "quota_bytes": 0,
        "removed": str(path),
    }
    assert not path.exists()  # gone from its path at once: the next job gets a fresh one
    assert ws.prepare("alice", me).path == path and not any(path.iterdir())

    def purged() -> bool:
        return not any(p.name.startswith(WORKSPACE_REMOVING_PREFIX) for p in ws.root.iterdir())

    wait_for(purged, 20, "the removed workspace deleted")
    assert (outside / "precious").read_text() == "keep me"

    (ws.root / "bob").symlink_to(outside)
    assert removal(ws, {**order, "user": "bob"}, node="n1")["removed"] == str(ws.root / "bob")
    assert outside.is_dir() and not (ws.root / "bob").is_symlink()
    assert removal(ws, {**order, "user": "carol"}, node="n1")["removed"] == ""
    longest = "a" * 255  # the longest name: its aside name must not be longer
    assert removal(ws, {**order, "user": longest}, node="n1")["removed"] == ""
    made = ws.prepare(longest, me).path
    assert removal(ws, {**order, "user": longest}, node="n1")["removed"] == str(made)
    assert "keeps no workspaces" in removal(None, order, node="n1")["error"]


def test_what_a_stopped_agent_left_aside_is_deleted_at_the_next_start(tmp_path: Path) -> None:
    root_of(tmp_path)
    aside = tmp_path / "ws" / f"{WORKSPACE_REMOVING_PREFIX}alice-1234"
    (aside / "deep").mkdir(parents=True)
    (aside / "deep" / "f").write_text("x")
    root_of(tmp_path)
    wait_for(lambda: not aside.exists(), 20, "the leftover deleted")


def test_the_notice_is_printed_on_the_jobs_stderr_and_not_passed_on(tmp_path: Path) -> None:
    status = tmp_path / "status"
    argv = wrap(["sh", "-c", f'echo "seen:${{{NOTICE_VAR}-unset}}"'], status, "sh")
    env = {**os.environ, NOTICE_VAR: "workspace /ws/a uses 2G, over this node's quota"}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert result.stderr == "mgpu: workspace /ws/a uses 2G, over this node's quota\n"
    assert result.stdout == "seen:unset\n"
    quiet = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert quiet.stderr == "" and quiet.stdout == "seen:unset\n"


def launch(job_id: int, cwd: Path, script: str, **spec: Any) -> Launch:
    msg = {
        "t": "launch",
        "launch": {
            "job_id": job_id,
            "user": "alice",
            "kill_grace_s": 1.0,
            "spec": {"argv": ["sh", "-c", script], "cwd": str(cwd), **spec},
        },
    }
    return Launch.from_checked(validate(msg, MASTER_TO_NODE)["launch"])


def test_a_job_sees_its_workspace_and_a_refused_one_fails_it(tmp_path: Path) -> None:
    """Through the executor: MGPU_WORKSPACE (a submitted value of it dropped), the warning
    over the quota on the job's stderr, and a workspace that cannot be used failing the
    launch with the reason."""

    async def main() -> None:
        events: list[dict[str, Any]] = []
        changed = asyncio.Event()

        def emit(msg: dict[str, Any]) -> None:
            events.append(msg)
            changed.set()

        async def exit_of(job_id: int) -> dict[str, Any]:
            deadline = time.monotonic() + 20
            while True:
                found = [m for m in events if m["t"] == "job_exited" and m["job_id"] == job_id]
                if found:
                    return found[0]
                changed.clear()
                await asyncio.wait_for(changed.wait(), deadline - time.monotonic())

        ws = root_of(tmp_path, quota_bytes=5000)  # more than an empty directory takes
        executor = Executor(
            node_name="n1",
            devices=[],
            state_dir=tmp_path / "state",
            exits=ExitSpool(tmp_path / "state" / "exits"),
            emit=emit,
            job_users=JobUserPolicy(JobUser.AGENT, allow_root=True),
            workspaces=ws,
        )
        script = 'echo "$MGPU_WORKSPACE"; echo kept > "$MGPU_WORKSPACE/f"'
        executor.launch(launch(1, tmp_path, script, env={"MGPU_WORKSPACE": "/elsewhere"}))
        assert (await exit_of(1))["exit_code"] == 0
        assert (tmp_path / "mgpu-1.out").read_text() == f"{ws.root / 'alice'}\n"
        assert (ws.root / "alice" / "f").read_text() == "kept\n"

        executor.launch(launch(2, tmp_path, "cat $MGPU_WORKSPACE/f"))
        assert (await exit_of(2))["exit_code"] == 0  # over its quota now: warned, run
        out = (tmp_path / "mgpu-2.out").read_text().splitlines()
        assert out[0].startswith(f"mgpu: workspace {ws.root / 'alice'} uses ")
        assert "over this node's quota of 4.9K" in out[0] and out[1:] == ["kept"]

        os.rename(ws.root / "alice", tmp_path / "moved")
        (ws.root / "alice").symlink_to(tmp_path / "moved")
        executor.launch(launch(3, tmp_path, "echo never"))
        failed = await exit_of(3)
        assert failed["exit_code"] == 1 and "is a symbolic link" in failed["reason"]
        assert not (tmp_path / "mgpu-3.out").exists()

    asyncio.run(main())
