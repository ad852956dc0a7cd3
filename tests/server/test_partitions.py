"""Partitions (issue 13): the config's [partition.NAME] tables, what a submission may ask of
them (names, MaxTime, state, access lists), where the scheduler places a job in several
(``-p a,b``), priority tiers, and what the queue, node and partition listings show."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mgpu_core.errors import ConfigError, InvalidPartition, InvalidRequest, PermissionDenied
from mgpu_core.messages import CLIENT_REQUESTS
from mgpu_core.models import JobSpec
from mgpu_core.reasons import Reason
from mgpu_server.scheduling.partitions import Partition, Partitions, PartitionState
from mgpu_server.scheduling.policy import PolicyConfig, Qos
from mgpu_server.settings import load_master_settings
from mgpu_server.state.cluster import ClusterState
from mgpu_server.storage.store import MemoryStore
from tests.helpers.nodes import node_info
from tests.helpers.state import ctx, exited, make_service, make_state, node_messages, request

DAY_S = 86_400


def parts(*partitions: Partition) -> Partitions:
    """A table of these partitions; the default is the one marked so, else the first."""
    default = next((p.name for p in partitions if p.default), partitions[0].name)
    return Partitions({p.name: p for p in partitions}, default)


SHORT = Partition("short", frozenset({"a1", "a2"}), max_time_s=3600, default_time_s=600)
LONG = Partition("long", frozenset({"b1"}), max_time_s=3 * DAY_S)


def cluster(
    *partitions: Partition, store: MemoryStore | None = None, **policy: Any
) -> ClusterState:
    """Nodes a1, a2 and b1 (2 GPUs each), under these partitions (default: short, long)."""
    table = parts(*(partitions or (SHORT, LONG)))
    c = make_state(policy=PolicyConfig(partitions=table, **policy), store=store)
    for name in ("a1", "a2", "b1"):
        c.node_join(node_info(name, 2), now=0.0)
    return c


def submit(c: ClusterState, user: str = "u", **spec: Any) -> Any:
    return c.submit(user, JobSpec(argv=["x"], **{"gpus": 1, **spec}), now=0.0)


# ---- the config file --------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "master.toml"
    path.write_text(text)
    return path


def test_partition_tables_are_read_in_order_with_their_limits(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
cluster_name = "lab"
[qos.normal]
[qos.long]
[partition.debug]
nodes = "gpu[01-02]"
max_time = "30"
state = "drain"
[partition.batch]
nodes = ["gpu[01-04]", "big1"]
default = true
max_time = "2-0"
default_time = "1:00:00"
allowed_qos = ["long"]
allowed_users = ["alice"]
allowed_groups = ["lab"]
priority_tier = 3
[partition.all]
nodes = "ALL"
""",
    )
    policy = load_master_settings(path).policy
    assert policy.cluster_name == "lab"
    table = policy.partitions
    assert [p.name for p in table] == ["debug", "batch", "all"]
    assert table.default == "batch"
    debug, batch, every = table.by_name.values()
    assert debug == Partition(
        "debug", frozenset({"gpu01", "gpu02"}), max_time_s=1800, state=PartitionState.DRAIN
    )
    assert batch.nodes == frozenset({"gpu01", "gpu02", "gpu03", "gpu04", "big1"})
    assert (batch.max_time_s, batch.default_time_s, batch.priority_tier) == (2 * DAY_S, 3600, 3)
    assert batch.allowed_qos == frozenset({"long"})
    assert (batch.allowed_users, batch.allowed_groups) == (frozenset({"alice"}), frozenset({"lab"}))
    assert every.nodes is None and every.has("anything")


def test_without_partition_tables_one_gpu_partition_holds_every_node(tmp_path: Path) -> None:
    policy = load_master_settings(write(tmp_path, "[qos.normal]\n")).policy
    [only] = policy.partitions
    assert (only.name, only.nodes, only.max_time_s, policy.partitions.default) == (
        "gpu",
        None,
        0,
        "gpu",
    )
    assert policy.cluster_name == "mgpu"


def test_the_first_partition_is_the_default_when_none_says_so(tmp_path: Path) -> None:
    path = write(tmp_path, "[partition.b]\n[partition.a]\n")
    assert load_master_settings(path).policy.partitions.default == "b"


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('[partition.a]\nnodes = "gpu[01-"\n', "[partition.a].nodes"),
        ("[partition.a]\nnodes = 3\n", "[partition.a].nodes"),
        ('[partition.a]\nmax_time = "soon"\n', "[partition.a].max_time"),
        ('[partition.a]\ndefault_time = "1:00:00"\nmax_time = "30"\n', "default_time"),
        ('[partition.a]\nstate = "SLEEPING"\n', "[partition.a].state"),
        ("[partition.a]\npriority_tier = -1\n", "[partition.a].priority_tier"),
        ('[partition.a]\ndefault = "yes"\n', "[partition.a].default"),
        ('[partition.a]\nallowed_qos = ["gold"]\n', "[partition.a].allowed_qos"),
        ("[partition.a]\nallowed_users = [1]\n", "[partition.a].allowed_users"),
        ("[partition.a]\ncolour = 1\n", "unknown setting 'colour'"),
        ("[partition.a]\ndefault = true\n[partition.b]\ndefault = true\n", "default"),
        ('[partition."a,b"]\n', "[partition.a,b]"),
        ('cluster_name = "my cluster"\n', "cluster_name"),
        ("partition = 1\n", "[partition.NAME]"),
    ],
)
def test_a_bad_partition_setting_is_one_line_naming_it(
    tmp_path: Path, text: str, names: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_master_settings(write(tmp_path, text))
    assert names in str(err.value) and "\n" not in str(err.value)


# ---- submitting -------------------------------------------------------------------------


def test_an_unknown_partition_is_refused_with_slurms_message() -> None:
    service, _ = make_service(cluster())
    job = JobSpec(argv=["x"], partition="short,nope").to_wire()
    with pytest.raises(InvalidPartition, match=r"^invalid partition specified: nope$") as err:
        request(service, ctx("u"), "submit", job=job)
    assert err.value.code == "invalid_partition"
    assert not service.state.table.jobs


def test_a_job_without_partition_is_in_the_default_one_and_says_so() -> None:
    c = cluster()
    job = submit(c, partition="")
    assert job.spec.partition == "short"
    spaced = submit(c, partition=" long, short,long")
    assert spaced.spec.partition == "long,short"  # as given, each once


def test_a_time_limit_over_every_partitions_max_time_is_refused() -> None:
    c = cluster()
    with pytest.raises(InvalidRequest, match=r"requested time limit is invalid .*short"):
        submit(c, partition="short", time_limit_s=7200)
    # Within one of its partitions: accepted, and only ever placed there.
    job = submit(c, partition="short,long", time_limit_s=7200, gpus=2)
    c.schedule(now=1.0)
    assert (job.node_id, job.partition) == ("b1", "long")


def test_a_job_without_time_limit_gets_its_partitions_default() -> None:
    c = cluster(SHORT, LONG, qos={"normal": Qos("normal"), "q": Qos("q", max_wall_s=300)})
    assert submit(c, partition="short").spec.time_limit_s == 600  # default_time
    assert submit(c, partition="long").spec.time_limit_s == 3 * DAY_S  # max_time
    assert submit(c, partition="long,short").spec.time_limit_s == 600  # fits both
    assert submit(c, partition="long", qos="q").spec.time_limit_s == 300  # the QoS's is shorter
    assert submit(c, partition="long", time_limit_s=60).spec.time_limit_s == 60


def test_drained_and_inactive_partitions_take_no_new_jobs_a_down_one_keeps_them() -> None:
    drain = Partition("drain", None, state=PartitionState.DRAIN)
    inactive = Partition("inactive", None, state=PartitionState.INACTIVE)
    down = Partition("down", None, state=PartitionState.DOWN)
    c = cluster(SHORT, drain, inactive, down)
    for name in ("drain", "inactive", "drain,inactive"):
        with pytest.raises(InvalidRequest, match="required partition not available"):
            submit(c, partition=name)
    waiting = submit(c, partition="down")
    either = submit(c, partition="drain,short")  # one of them takes it
    c.schedule(now=1.0)
    assert waiting.reason == Reason.PARTITION_DOWN and waiting.job_id in c.pending
    assert c.pending.is_parked(waiting.job_id)  # a pass does not step over it
    assert either.partition == "drain"  # a drained partition runs the jobs it has


def test_queued_jobs_wait_when_their_partition_is_made_inactive_or_shorter() -> None:
    store = MemoryStore()
    before = cluster(SHORT, LONG, store=store)
    c1 = submit(before, partition="long", time_limit_s=2 * DAY_S, hold=True)
    c2 = submit(before, partition="short", hold=True)
    store.commit()
    # The master restarts with a config where long is inactive and short allows less.
    inactive = Partition("long", frozenset({"b1"}), state=PartitionState.INACTIVE)
    shorter = Partition("short", frozenset({"a1"}), max_time_s=60)
    after = cluster(shorter, inactive, store=store)
    for job_id in (c1.job_id, c2.job_id):
        after.control.release(after.get(job_id), now=1.0)
    after.schedule(now=1.0)
    assert after.get(c1.job_id).reason == Reason.PARTITION_INACTIVE
    assert after.get(c2.job_id).reason == Reason.PARTITION_TIME_LIMIT
    assert not after.running


def test_a_partition_not_open_to_the_user_refuses_them() -> None:
    vip = Partition("vip", None, allowed_users=frozenset({"alice"}))
    service, _ = make_service(cluster(SHORT, vip))
    job = JobSpec(argv=["x"], gpus=1, partition="vip").to_wire()
    with pytest.raises(PermissionDenied, match="partition vip is not open to user bob"):
        request(service, ctx("bob"), "submit", job=job)
    alices = request(service, ctx("alice"), "submit", job=job)["job_id"]
    # In several: accepted if one is open, and never placed in the others.
    both = JobSpec(argv=["x"], gpus=2, partition="vip,short").to_wire()
    bobs = request(service, ctx("bob"), "submit", job=both)["job_id"]
    state = service.state
    state.schedule(now=1.0)
    assert state.get(alices).partition == "vip"
    assert state.get(bobs).partition == "short"


def test_a_partition_limited_to_some_qos_refuses_the_others() -> None:
    gold = Partition("gold", None, allowed_qos=frozenset({"normal"}))
    c = cluster(gold, qos={"normal": Qos("normal"), "cheap": Qos("cheap")})
    with pytest.raises(
        InvalidRequest, match=r"QOS not permitted .*\(gold allows normal not cheap\)"
    ):
        submit(c, qos="cheap")
    assert submit(c, qos="normal").spec.partition == "gold"


# ---- placement --------------------------------------------------------------------------


def test_a_job_in_two_partitions_starts_in_the_first_where_it_fits_now() -> None:
    c = cluster(SHORT, LONG, cluster_name="lab")
    first = submit(c, partition="short,long", gpus=2)
    c.schedule(now=1.0)
    assert (first.partition, first.node_id) == ("short", "a1")
    fill = submit(c, partition="short", gpus=2)
    second = submit(c, partition="short,long", gpus=2)
    c.schedule(now=2.0)
    assert (fill.node_id, second.partition, second.node_id) == ("a2", "long", "b1")
    launch = node_messages(c, "launch")[-1]["launch"]
    assert (launch["job_id"], launch["partition"], launch["cluster_name"]) == (
        second.job_id,
        "long",
        "lab",
    )
    row = c.list_jobs(users=[], states=[], job_ids=None, include_finished=False, now=3.0)
    assert {r["job_id"]: r["partition"] for r in row}[second.job_id] == "long"


def test_a_pending_job_shows_the_partitions_it_asked_for() -> None:
    c = cluster()
    job = submit(c, partition="long,short", hold=True)
    [row] = c.list_jobs(users=[], states=[], job_ids=[job.job_id], include_finished=False, now=1.0)
    assert row["partition"] == "long,short"


def test_a_blocked_job_reserves_in_the_partition_where_it_starts_soonest() -> None:
    c = cluster()
    for partition, limit in (("short", 3000), ("short", 3000), ("long", 500)):
        submit(c, partition=partition, gpus=2, time_limit_s=limit)
    c.schedule(now=0.0)
    assert len(c.running) == 3
    blocked = submit(c, partition="short,long", gpus=2, time_limit_s=100)
    c.schedule(now=10.0)
    assert blocked.reason == Reason.RESOURCES
    assert blocked.expected_start == 500.0  # on b1, in long: before short's nodes free
    [row] = c.list_jobs(
        users=[], states=[], job_ids=[blocked.job_id], include_finished=False, now=10.0
    )
    assert row["expected_start"] == 500.0


def test_jobs_of_a_higher_priority_tier_are_considered_first() -> None:
    low = Partition("low", frozenset({"a1"}))
    high = Partition("high", frozenset({"a1"}), priority_tier=2)
    c = cluster(low, high)
    blocker = submit(c, partition="low", gpus=2)
    c.schedule(now=0.0)
    early = submit(c, partition="low", gpus=2, nice=-500)  # the higher priority...
    late = submit(c, partition="high", gpus=2)  # ...but the lower tier
    either = submit(c, partition="low,high", gpus=2)  # a job in both: its best tier
    fairshare = c.priorities_at(1.0).fairshare
    order = [j.job_id for j in c.pending.ordered(1.0, fairshare)]
    assert order == [late.job_id, either.job_id, early.job_id]
    c.job_exited("a1", exited(blocker.job_id), now=2.0)
    c.schedule(now=2.0)
    assert late.job_id in c.running and early.job_id in c.pending


# ---- listings ---------------------------------------------------------------------------


def test_the_partitions_verb_lists_each_with_its_nodes_limits_and_gpus() -> None:
    vip = Partition(
        "vip",
        None,
        allowed_users=frozenset({"alice"}),
        allowed_qos=frozenset({"normal"}),
        priority_tier=1,
        state=PartitionState.DOWN,
    )
    service, _ = make_service(cluster(SHORT, vip))
    assert "partitions" in CLIENT_REQUESTS
    rows = request(service, ctx("bob"), "partitions")["partitions"]
    assert rows == [
        {
            "name": "short",
            "default": True,
            "state": "UP",
            "nodes": ["a1", "a2"],
            "max_time_s": 3600,
            "default_time_s": 600,
            "allowed_qos": None,
            "allowed_users": None,
            "allowed_groups": None,
            "priority_tier": 0,
            "total_gpus": 4,
        },
        {
            "name": "vip",
            "default": False,
            "state": "DOWN",
            "nodes": ["a1", "a2", "b1"],
            "max_time_s": 0,
            "default_time_s": 0,
            "allowed_qos": ["normal"],
            "allowed_users": ["alice"],
            "allowed_groups": None,
            "priority_tier": 1,
            "total_gpus": 6,
        },
    ]
    nodes = request(service, ctx("bob"), "nodes")["nodes"]
    assert {n["node_id"]: n["partitions"] for n in nodes} == {
        "a1": ["short", "vip"],
        "a2": ["short", "vip"],
        "b1": ["vip"],
    }


def test_the_partition_a_job_ran_in_survives_a_restart() -> None:
    store = MemoryStore()
    c = cluster(store=store)
    job = submit(c, partition="long")
    c.schedule(now=1.0)
    store.commit()
    again = cluster(store=store)
    assert again.get(job.job_id).partition == "long"
