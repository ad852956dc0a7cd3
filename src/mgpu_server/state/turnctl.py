"""The GPU turn queue inside the master's state: the order it imposes on a scheduling pass,
the grants and the time slice, and the admin's verbs on the rotation (who may use them is
decided in :mod:`mgpu_server.api.permissions`)."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from mgpu_core.constants import TURNS_KEY
from mgpu_core.errors import InvalidRequest
from mgpu_core.reasons import Reason
from mgpu_core.states import JobState
from mgpu_server.records.jobs import Job
from mgpu_server.scheduling.turns import TurnQueue
from mgpu_server.state.effects import Outbox
from mgpu_server.state.lifecycle import Lifecycle
from mgpu_server.state.pending import PendingQueue
from mgpu_server.state.table import JobTable
from mgpu_server.storage.store import Store

log = logging.getLogger(__name__)

# Verbs anyone may use; the rest change the rotation and need an admin.
READ_ONLY = frozenset({"status", "history"})


class TurnControl:
    def __init__(
        self,
        turns: TurnQueue,
        *,
        table: JobTable,
        pending: PendingQueue,
        lifecycle: Lifecycle,
        store: Store,
        outbox: Outbox,
    ) -> None:
        self.turns = turns
        self.table = table
        self.pending = pending
        self.lifecycle = lifecycle
        self.store = store
        self.outbox = outbox

    @property
    def enabled(self) -> bool:
        return self.turns.enabled

    @property
    def gpu_revoked(self) -> set[str]:
        """The users whose GPU access an admin revoked."""
        return self.turns.revoked

    def order(self, eligible: list[Job]) -> tuple[list[Job], dict[int, tuple[int, int]]]:
        """In turn mode: GPU jobs in rotation order (then jobs without GPUs), and for each GPU
        job the rotation entry it would use. Otherwise the priority order unchanged."""
        if not self.turns.enabled:
            return eligible, {}
        gpu_jobs = [j for j in eligible if j.spec.gpus]
        rotation = self.turns.effective_rotation(dict(Counter(j.user for j in gpu_jobs)))
        members = set(rotation)
        for job in gpu_jobs:
            if job.user not in members:
                self.lifecycle.set_reason(job, Reason.NOT_IN_ROTATION)
        pairs = self.turns.order([j for j in gpu_jobs if j.user in members], rotation)
        by_id = {j.job_id: j for j in gpu_jobs}
        entries = {job_id: (entry, len(rotation)) for entry, job_id in pairs}
        ordered = [by_id[job_id] for _, job_id in pairs]
        return ordered + [j for j in eligible if not j.spec.gpus], entries

    def granted(self, job: Job, entry: tuple[int, int], now: float) -> None:
        """A job started on its turn: the rotation moves on (stored with the turn)."""
        self.turns.granted(entry[0], entry[1], job.user, job.job_id, now)
        self.store.put_setting(TURNS_KEY, self.turns.to_settings())

    def expire_turns(self, now: float) -> None:
        """End the turns that outlived the time slice: their jobs are requeued."""
        for job_id in self.turns.expired(now):
            self.turns.ended(job_id, now, "slice ended")
            job = self.table.jobs.get(job_id)
            if job is not None and job.state is JobState.RUNNING:
                self.lifecycle.ask_requeue(job)

    def request(self, action: str, args: dict[str, Any], now: float) -> dict[str, Any]:
        """Show the turn queue, or change it (the caller checked that it may)."""
        turns = self.turns
        try:
            self._apply_turn_action(action, args, now)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        if action not in READ_ONLY:
            self.store.put_setting(TURNS_KEY, turns.to_settings())
            self.outbox.changed = True  # the order changed: reconsider the queue now
            log.info(
                "gpu turns: %s %s -> mode=%s rotation=%s", action, args, turns.mode, turns.rotation
            )
        return self.status(history=action == "history")

    def _apply_turn_action(self, action: str, args: dict[str, Any], now: float) -> None:
        turns = self.turns
        user = str(args.get("user", ""))
        simple = {
            "set": lambda: turns.set_rotation(args.get("users", [])),
            "add": lambda: turns.add(user),
            "remove": lambda: turns.remove(user),
            "clear": lambda: turns.set_rotation([]),
            "repeat": lambda: turns.repeat(user, int(args.get("count", 1))),
            "mode": lambda: turns.set_mode(str(args.get("mode", ""))),
            "slice": lambda: setattr(turns, "slice_s", float(args.get("seconds", 0.0))),
            "revoke": lambda: turns.revoked.add(user),
            "assign": lambda: turns.revoked.discard(user),
            "next": lambda: setattr(
                turns, "position", (turns.position + 1) % max(1, len(turns.rotation))
            ),
        }
        if action in simple:
            simple[action]()
            if action in ("revoke", "assign"):
                self._reconsider_jobs_of(user, now)
        elif action == "force-next":
            self._force_next(now)
        elif action not in READ_ONLY:
            raise ValueError(f"unknown turn queue action '{action}'")

    def _reconsider_jobs_of(self, user: str, now: float) -> None:
        """GPU access revoked or given back: the user's queued GPU jobs are parked with that
        reason (none starts, though it was queued before), or go back in the order."""
        for job in [j for j in self.pending.values() if j.user == user and j.spec.gpus]:
            self.lifecycle.reconsider(job, now)

    def _force_next(self, now: float) -> None:
        """End the current turn now: its job is requeued and the GPU goes to the next turn."""
        current = self.turns.current()
        if current is None:
            raise ValueError("no turn is running")
        self.turns.ended(current.job_id, now, "forced")
        self.lifecycle.ask_requeue(self.table.get(current.job_id))

    def status(self, *, history: bool = False) -> dict[str, Any]:
        turns = self.turns
        # O(users), whatever the queue's length: anyone may ask, as often as they like.
        waiting = self.pending.gpu_waiting()
        rotation = turns.effective_rotation(waiting)
        upcoming = [
            u
            for u in rotation[turns.position % max(1, len(rotation)) :] + rotation
            if waiting.get(u)
        ]
        current = turns.current()
        return {
            **turns.to_settings(),
            "rotation": rotation,
            "configured_rotation": list(turns.rotation),
            "current": None
            if current is None
            else {"user": current.user, "job_id": current.job_id, "started": current.started_s},
            "active": [
                {"user": g.user, "job_id": g.job_id, "started": g.started_s}
                for g in turns.active.values()
            ],
            "next_user": upcoming[0] if upcoming else None,
            "waiting": waiting,
            "history": list(turns.history)[-200:] if history else [],
        }
