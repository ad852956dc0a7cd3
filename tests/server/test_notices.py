"""Which notices a job's events make, and who is told: END subscribers hear of failures too
(Slurm mails one "Failed"), TIME_LIMIT_50/80/90 and TIME_LIMIT once per run, and nothing at
all for a job that asked for nothing on a cluster without webhooks."""

from __future__ import annotations

import pytest

from mgpu_core.models import JobSpec
from mgpu_server.net.notify import signature, wants
from mgpu_server.state.effects import Notify
from tests.helpers.nodes import node_info
from tests.helpers.state import exited, make_state

pytestmark = pytest.mark.timeout(30)


def notices(state: object) -> list[tuple[str, int]]:
    effects = state.take_effects()  # type: ignore[attr-defined]
    return [(e.event, e.job["job_id"]) for e in effects if isinstance(e, Notify)]


def test_events_of_a_job_that_asked_and_none_for_one_that_did_not() -> None:
    state = make_state()
    state.node_join(node_info("n1", 2), now=0.0)
    asked = state.submit(
        "a", JobSpec(argv=["x"], gpus=1, mail_types=["END"], time_limit_s=100), 0.0
    )
    quiet = state.submit("a", JobSpec(argv=["y"], gpus=1), now=0.0)
    state.schedule(now=1.0)
    assert notices(state) == [("BEGIN", asked.job_id)]
    state.time_notices(now=60.0)
    assert notices(state) == []  # it asked for END only: no TIME_LIMIT notices
    state.job_exited("n1", exited(asked.job_id, 3), now=70.0)
    state.job_exited("n1", exited(quiet.job_id, 0), now=70.0)
    assert notices(state) == [("FAIL", asked.job_id)]


def test_time_limit_notices_once_per_threshold() -> None:
    state = make_state()
    state.node_join(node_info("n1", 1), now=0.0)
    spec = JobSpec(argv=["x"], gpus=1, time_limit_s=100, mail_types=["TIME_LIMIT_80", "TIME_LIMIT"])
    job = state.submit("a", spec, now=0.0)
    state.schedule(now=1.0)  # it runs from t=1: 50 % at 51, 80 % at 81, 90 % at 91
    state.take_effects()
    for now in (10.0, 49.0, 85.0, 86.0, 95.0, 101.0, 102.0):
        state.time_notices(now=now)
    found = notices(state)
    assert [e for e, _ in found] == [
        "TIME_LIMIT_50",
        "TIME_LIMIT_80",
        "TIME_LIMIT_90",
        "TIME_LIMIT",
    ]
    assert all(i == job.job_id for _, i in found)
    # Who hears of them: only the subscribed ones (and END subscribers of failures).
    assert wants(("TIME_LIMIT_80",), "TIME_LIMIT_80") and not wants(
        ("TIME_LIMIT_80",), "TIME_LIMIT_50"
    )
    assert (
        wants(("END",), "FAIL")
        and wants(("END",), "INVALID_DEPEND")
        and not wants(("FAIL",), "END")
    )
    assert wants(frozenset(), "BEGIN")  # a webhook without events: all
    assert signature(b"k", b"body") == signature(b"k", b"body") != signature(b"j", b"body")
