"""Per-user limits on what one user may put into the queue: pending jobs (an array counts
each task), and submissions per second as a token bucket (a steady rate, with a burst that a
script submitting a few thousand jobs at once still fits in). Admins are not limited (the
handlers ask api.permissions); the numbers are the master's config (``[limits]``).

A refused submission changes nothing and consumes no token; the error says which limit and
what to do, in one line.
"""

from __future__ import annotations

from dataclasses import dataclass

from mgpu_core.constants import MAX_PENDING_JOBS_PER_USER, SUBMIT_BURST, SUBMIT_RATE_PER_S
from mgpu_core.errors import LimitExceeded


@dataclass(frozen=True, slots=True)
class UserLimits:
    max_pending_jobs: int = MAX_PENDING_JOBS_PER_USER  # 0: no limit
    submit_rate_per_s: float = SUBMIT_RATE_PER_S  # 0: no limit
    submit_burst: int = SUBMIT_BURST


DEFAULT_LIMITS = UserLimits()


class SubmitQuota:
    def __init__(self, limits: UserLimits) -> None:
        self.limits = limits
        # user -> (tokens left, when counted). A user absent has a full bucket. One entry per
        # user who ever submitted: users are accounts and token holders, a bounded set.
        self._buckets: dict[str, tuple[float, float]] = {}

    def admit(self, user: str, *, new_jobs: int, pending: int, now: float) -> None:
        """Take one submission of ``new_jobs`` jobs from ``user``, who has ``pending`` jobs
        pending, or raise LimitExceeded (and take nothing)."""
        limits = self.limits
        if limits.max_pending_jobs and pending + new_jobs > limits.max_pending_jobs:
            raise LimitExceeded(
                f"user {user} would have {pending + new_jobs} pending jobs, more than the limit "
                f"of {limits.max_pending_jobs}: wait for some to start, or cancel some"
            )
        if not limits.submit_rate_per_s:
            return
        tokens = self.tokens(user, now)
        if tokens < 1.0 - 1e-9:  # (not float dust: 0.1 s at 10/s is one token)
            wait_s = (1.0 - tokens) / limits.submit_rate_per_s
            raise LimitExceeded(
                f"user {user} submits faster than the limit of {limits.submit_rate_per_s:g} "
                f"per second (bursts of {limits.submit_burst}): retry in {wait_s:.2f} s"
            )
        self._buckets[user] = (tokens - 1.0, now)

    def tokens(self, user: str, now: float) -> float:
        """The submissions ``user`` may make at once now."""
        burst = float(self.limits.submit_burst)
        left, at = self._buckets.get(user, (burst, now))
        # max(0, ...): a clock stepped back refills nothing, and takes nothing either.
        return min(burst, left + max(0.0, now - at) * self.limits.submit_rate_per_s)
