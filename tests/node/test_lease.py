"""The fence's lease: written atomically, on CLOCK_BOOTTIME, renewed only from the sending of
a heartbeat the master acknowledged."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest

from mgpu_core.constants import KILL_GRACE_S, LEASE_FILE
from mgpu_node.lease import Lease, LeaseKeeper, boot_id, boottime, read_lease, write_lease

pytestmark = pytest.mark.timeout(30)


def test_round_trip(tmp_path: Path) -> None:
    lease = Lease(boottime() + 300.0, 300.0, 10.0, boot_id())
    write_lease(tmp_path, lease)
    assert read_lease(tmp_path) == lease
    assert [p.name for p in tmp_path.iterdir()] == [LEASE_FILE]  # no temporary file left


def test_expiry(tmp_path: Path) -> None:
    keeper = LeaseKeeper(tmp_path, 300.0)
    keeper.registered({"fence_timeout_s": 2.0, "kill_grace_s": 1.5}, hello_sent=100.0)
    lease = read_lease(tmp_path)
    assert lease is not None
    assert (lease.deadline, lease.fence_timeout_s, lease.kill_grace_s) == (102.0, 2.0, 1.5)
    assert not lease.expired(102.0) and lease.expired(102.001)
    assert lease.silence_s(103.0) == 3.0


def test_deadline_is_on_boottime(tmp_path: Path) -> None:
    keeper = LeaseKeeper(tmp_path, 60.0)
    before = boottime()
    keeper.registered({}, hello_sent=boottime())
    lease = read_lease(tmp_path)
    assert lease is not None and before + 60.0 <= lease.deadline <= boottime() + 60.0
    # BOOTTIME, not the wall clock (seconds since 1970) nor MONOTONIC (stops during suspend).
    assert lease.deadline < time.time() / 2
    assert boottime() >= time.monotonic() - 0.01


def test_renewed_only_from_an_acknowledged_heartbeats_sending(tmp_path: Path) -> None:
    keeper = LeaseKeeper(tmp_path, 300.0)
    keeper.registered({"fence_timeout_s": 10.0, "kill_grace_s": 1.0}, hello_sent=0.0)

    def deadline() -> float:
        lease = read_lease(tmp_path)
        assert lease is not None
        return lease.deadline

    first = keeper.heartbeat_sent(5.0)
    second = keeper.heartbeat_sent(6.0)
    assert deadline() == 10.0  # sending renews nothing
    keeper.acked(first)
    assert deadline() == 15.0  # from the sending, however late the ack
    keeper.acked(second + 100)  # an ack of a heartbeat never sent
    assert deadline() == 15.0
    keeper.acked(second)
    assert deadline() == 16.0
    keeper.acked(first)  # a repeat: forgotten
    assert deadline() == 16.0
    keeper.registered({"fence_timeout_s": 10.0}, hello_sent=20.0)  # a new link: seqs restart
    assert deadline() == 30.0 and keeper.heartbeat_sent(21.0) == 1


@pytest.mark.parametrize("fence", [None, True, "3", -1.0, 0, math.nan, math.inf])
def test_without_the_masters_fence_the_agents_own_runs_from_its_heartbeats(
    tmp_path: Path, fence: object
) -> None:
    """An older master sends no fence and acknowledges nothing: the agent's --fence-timeout,
    counted from its own heartbeats. A value that is not positive seconds counts as none."""
    keeper = LeaseKeeper(tmp_path, 7.0)
    keeper.registered({} if fence is None else {"fence_timeout_s": fence}, hello_sent=1.0)
    assert not keeper.master_fences and keeper.kill_grace_s == KILL_GRACE_S
    lease = read_lease(tmp_path)
    assert lease is not None and lease.deadline == 8.0
    keeper.heartbeat_sent(3.0)
    lease = read_lease(tmp_path)
    assert lease is not None and lease.deadline == 10.0
    assert keeper.heartbeat_interval(5.0) == 7.0 / 4  # several heartbeats per fence period


def test_a_lease_of_another_boot_means_nothing(tmp_path: Path) -> None:
    write_lease(tmp_path, Lease(1.0, 1.0, 1.0, "another-boot"))
    assert read_lease(tmp_path) is None
    (tmp_path / LEASE_FILE).unlink()
    assert read_lease(tmp_path) is None


@pytest.mark.parametrize("text", ["", "{", "[]", '{"deadline": 1}', json.dumps({"x": 1})])
def test_an_unreadable_lease_has_run_out(tmp_path: Path, text: str) -> None:
    (tmp_path / LEASE_FILE).write_text(text)
    lease = read_lease(tmp_path)
    assert lease is not None and lease.expired(boottime())


def test_a_silent_link_is_given_up_well_within_the_fence(tmp_path: Path) -> None:
    keeper = LeaseKeeper(tmp_path, 300.0)
    keeper.registered({}, hello_sent=0.0)
    assert keeper.silence_limit(5.0) is None  # an older master may be silent when idle
    keeper.registered({"fence_timeout_s": 300.0}, hello_sent=0.0)
    assert keeper.silence_limit(5.0) == 30.0
    keeper.registered({"fence_timeout_s": 1.0}, hello_sent=0.0)
    assert keeper.heartbeat_interval(0.5) == 0.25 and keeper.silence_limit(0.5) == 0.75
