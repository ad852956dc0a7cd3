"""What the master's state machine asks the server to send, once the turn is committed."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True, frozen=True)
class ToNode:
    node_id: str
    msg: dict[str, Any]


@dataclass(slots=True, frozen=True)
class ToWatchers:
    job_id: int
    msg: dict[str, Any]


Effect = ToNode | ToWatchers
