"""session_extend on the master: only sessions, within the QoS and the wire's limits, not
while the session's node cannot be told."""

from __future__ import annotations

import pytest

from mgpu_core.errors import InvalidJobState, InvalidRequest
from mgpu_core.limits import MAX_TIME_LIMIT_S
from mgpu_core.models import JobSpec
from mgpu_server.state.effects import ToNode
from tests.helpers.nodes import node_info
from tests.helpers.state import make_state


def test_extend_tells_the_node_and_has_a_ceiling() -> None:
    state = make_state()
    state.node_join(node_info("n1", 2), now=0.0)
    holder = JobSpec(script="#!/bin/sh\nsleep 100\n", session=True, time_limit_s=600)
    session = state.submit("alice", holder, now=1.0)
    plain = state.submit("alice", JobSpec(argv=["x"], time_limit_s=600), now=1.0)
    state.schedule(now=2.0)
    state.take_effects()
    assert state.control.extend(session, 300) == 900
    told = [e.msg for e in state.take_effects() if isinstance(e, ToNode)]
    assert {"t": "time_limit", "job_id": session.job_id, "time_limit_s": 900} in told
    with pytest.raises(InvalidRequest, match="is more than any job may have"):
        state.control.extend(session, MAX_TIME_LIMIT_S)
    assert session.spec.time_limit_s == 900  # unchanged by the refusal
    with pytest.raises(InvalidRequest, match="not a session"):
        state.control.extend(plain, 60)
    state.node_leave("n1", now=3.0)
    with pytest.raises(InvalidJobState, match="not connected; not extended"):
        state.control.extend(session, 60)
