"""Delivery of job exits to the master, over the agent's link (agent.py).

Every exit is saved to the exit spool (spool.py) before it is sent and stays there until the
master acknowledges it (``exit_ack``), so exits that happened while the master was away, or
were in flight when the link broke, are sent again after the next hello, even by a restarted
agent; an exit the master refuses (an ``error`` naming it) is logged and dropped instead, as
resending it would be refused again. An interactive job's output log (outlog.py) goes with its
exit: it is kept until the exit is acknowledged or dropped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from mgpu_core.aio import AsyncConnection
from mgpu_core.errors import ConnectionClosed, ProtocolError
from mgpu_core.messages import MASTER_TO_NODE, validate
from mgpu_node.outlog import Outputs, Send
from mgpu_node.spool import ExitSpool

log = logging.getLogger(__name__)

# With --stop-jobs-on-exit: how long to wait for the master to ack the exits of the jobs just
# stopped, so that the spool is clean for the next agent (resending them would be harmless).
ACK_WAIT_S = 2.0
# After registering, how long the exit of an interactive job that ended while the link was down
# waits for a client to follow the job (the master's replay), so that what it printed meanwhile
# is shown before the job ends (srun re-attaches within ~2 s of a master's return).
EXIT_HOLD_S = 5.0


class ExitDelivery:
    def __init__(self, exits: ExitSpool, outputs: Outputs, send: Send) -> None:
        self.exits = exits
        self.outputs = outputs
        self._send = send  # the agent's: False while there is no link
        self._held: dict[int, asyncio.TimerHandle] = {}  # see EXIT_HOLD_S

    def resend(self, conn: AsyncConnection, followed: set[int]) -> None:
        """The unacknowledged exits, after a registration. That of an interactive job nobody
        follows yet (not in the master's ``replay``) waits up to EXIT_HOLD_S for a client to
        attach, so that the output printed while the link was down reaches it first."""
        loop = asyncio.get_running_loop()
        for msg in self.exits.pending():
            job_id = msg["job_id"]
            if job_id in self.outputs.logs and job_id not in followed:
                self._held[job_id] = loop.call_later(EXIT_HOLD_S, self._send_held, job_id)
            else:
                conn.send(msg)

    def followed(self, job_id: int) -> None:
        """The master replays the job's output: a client follows it now, and has its output
        (sent just before), then the end."""
        held = self._held.get(job_id)
        if held is not None:
            held.cancel()
            self._send_held(job_id)

    def _send_held(self, job_id: int) -> None:
        self._held.pop(job_id, None)
        msg = self._pending(job_id)
        if msg is not None:
            self._send(msg)

    def session_ended(self) -> None:
        for handle in self._held.values():
            handle.cancel()  # still in the spool: sent after the next registration
        self._held.clear()

    def acked(self, job_id: int) -> None:
        self.exits.ack(job_id)
        self.outputs.retire(job_id)  # kept a while for `mgpu_client log`

    async def await_acks(self, conn: AsyncConnection) -> None:
        """Wait up to ACK_WAIT_S for the master to acknowledge every exit in the spool."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ACK_WAIT_S
        while len(self.exits) and (left := deadline - loop.time()) > 0:
            try:
                msg = validate(await asyncio.wait_for(conn.recv(), left), MASTER_TO_NODE)
            except (OSError, ConnectionClosed, ProtocolError, TimeoutError):
                return
            if msg["t"] == "exit_ack":
                self.acked(msg["job_id"])
            elif msg["t"] == "error":
                self.refused(msg)

    def refused(self, msg: dict[str, Any]) -> None:
        """The master refused one of our events (docs/protocol.md §5.5). A refused exit is
        dropped from the exit spool, or it would be refused again at every resend; the master
        then finds the job gone from our reports and ends it."""
        event, job_id, code, text = msg["event"], msg["job_id"], msg["code"], msg["message"]
        if event != "job_exited" or job_id is None:
            log.warning("master refused %s: %s: %s", event or "a message", code, text)
            return
        pending = self._pending(job_id)
        # Only the run the refusal names (null: the master could not read it): a newer run's
        # exit for the same job is not the one refused.
        run = msg["restart_count"]
        if pending is None or run not in (None, pending.get("restart_count")):
            log.warning("job=%d exit refused, not the one kept here: %s: %s", job_id, code, text)
            return
        log.error("job=%d exit refused by the master, dropped: %s: %s", job_id, code, text)
        self.acked(job_id)

    def _pending(self, job_id: int) -> dict[str, Any] | None:
        return next((m for m in self.exits.pending() if m["job_id"] == job_id), None)
