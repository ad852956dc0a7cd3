"""The HTTP API's routes: each one is a request of the wire protocol (docs/protocol.md) with
the same handler, permissions, limits and error codes; only the spelling differs. Pure: a
method, a path, a query and a body in; the wire message (or what else to serve) out.

    GET    /api/whoami                  who the token is
    GET    /api/info                    the master's counters
    GET    /api/jobs                    queue   ?user=&state=&name=&id=&finished=1&fields=
    POST   /api/jobs                    submit  {"job": {...}, "test_only": false}
    GET    /api/jobs/{ref}              job     (an array's id: every task)
    PATCH  /api/jobs/{ref}              update  {"time_limit_s": ..., "qos": ...}
    DELETE /api/jobs/{ref}              cancel  ?signal=N
    POST   /api/jobs/{ref}/hold|release|requeue
    GET    /api/jobs/{ref}/log          log     ?stream=stdout|stderr&offset=&from_end=&max_bytes=
    GET    /api/nodes, /api/partitions, /api/turns
    GET    /api/history                 history ?user=&state=&name=&id=&start=&end=&limit=
    GET    /api/report                  report  ?group=user|account|partition&start=&end=
    GET    /api/usage                   usage   ?start=&end=&step= (GPU-seconds per step)
    GET    /api/openapi.json, /metrics
    GET    /api/events                  server-sent events: "changed" when the state changed
    GET    /, /static/{file}            the dashboard (its files need no token; its data does)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mgpu_core.errors import BadMessage, MgpuError
from mgpu_core.states import COMPLETING, JobState

# HTTP status for each wire error code (the body carries the code itself).
STATUS = {
    "bad_message": 400,
    "invalid_request": 400,
    "invalid_partition": 400,
    "unknown_message_type": 404,
    "job_not_found": 404,
    "node_not_found": 404,
    "invalid_job_state": 409,
    "node_conflict": 409,
    "permission_denied": 403,
    "authentication_failed": 401,
    "limit_exceeded": 429,
    "too_many_connections": 429,
    "frame_too_large": 413,
    "output_unavailable": 502,
    "storage_error": 503,
}
SPECIAL = ("whoami", "openapi", "metrics", "events", "asset:NAME")
# GET /api/jobs's fields unless ?fields= names others: what a list shows (a job's command,
# paths and fresh priority are GET /api/jobs/{ref}'s, or ?fields=...,priority's).
LIST_FIELDS = [
    "job_id", "job_ref", "name", "user", "state", "reason", "node", "gpus", "gpu_indices",
    "cpus", "mem_bytes", "partition", "time_limit_s", "submit_time", "start_time", "end_time",
    "elapsed_s", "expected_start", "exit_code", "signal", "ports", "session", "idle_s",
]  # fmt: skip
# States by name or squeue's code (PD, R, CG, CD, F, CA, TO, NF, OOM).
_SHORT = {**{state.short: state.value for state in JobState}, "CG": COMPLETING}
JOB_ACTIONS = ("hold", "release", "requeue")


@dataclass(frozen=True, slots=True)
class Route:
    """``verb`` and its fields (without ``id``); ``one``: reply with the first job of the
    answer's ``jobs`` (GET /api/jobs/{ref}); ``raw``: the log's bytes as the body."""

    verb: str
    fields: dict[str, Any]
    one: bool = False
    raw: bool = False


class NotFound(MgpuError):
    code = "unknown_message_type"


def status_of(code: str) -> int:
    return STATUS.get(code, 500 if code == "internal_error" else 400)


def route(method: str, path: str, query: dict[str, list[str]], body: bytes) -> Route | str:
    """The route of a request: a wire verb, or one of :data:`SPECIAL`."""
    parts = [p for p in path.split("/") if p]
    if method == "GET" and (parts == [] or (len(parts) == 2 and parts[0] == "static")):
        return "asset:" + (parts[1] if parts else "index.html")  # the dashboard's files
    if parts == ["metrics"] and method == "GET":
        return "metrics"
    found: Route | str | None = None
    if parts[:1] == ["api"]:
        rest, q = parts[1:], _Query(query)
        if rest[:1] == ["jobs"]:
            found = _jobs(method, rest[1:], q, body)
        elif len(rest) == 1 and method == "GET":
            found = _listing(rest[0], q)
    if found is None:
        raise NotFound(f"no such endpoint: {method} {path}")
    return found


def _listing(name: str, q: _Query) -> Route | str | None:
    """GET /api/NAME."""
    if name in ("whoami", "openapi.json", "events"):
        return "openapi" if name == "openapi.json" else name
    if name in ("nodes", "partitions", "info"):
        return Route(name, {})
    if name == "turns":
        return Route("turns", {"action": "status"})
    if name == "history":
        return Route("history", {**q.filters(), "limit": q.number("limit") or 1000, **q.window()})
    if name == "usage":
        window = q.window()
        step = q.number("step") or 3600.0
        return Route(
            "usage",
            {"start_s": window.get("window_start_s"), "end_s": window.get("window_end_s"),
             "step_s": float(step)},
        )  # fmt: skip
    if name == "report":
        window = q.window()
        return Route(
            "report",
            {
                "group": q.one("group") or "user",
                "start_s": window.get("window_start_s"),
                "end_s": window.get("window_end_s"),
            },
        )
    return None


def _jobs(method: str, rest: list[str], q: _Query, body: bytes) -> Route | None:
    """/api/jobs, /api/jobs/{ref}, /api/jobs/{ref}/ACTION."""
    if not rest:
        if method == "GET":
            filters = {**q.filters(), "include_finished": q.flag("finished")}
            filters["fields"] = filters["fields"] or LIST_FIELDS
            return Route("queue", filters)
        if method == "POST":
            request = _json(body)
            test_only = bool(request.get("test_only", False))
            return Route("submit", {"job": request.get("job"), "test_only": test_only})
        return None
    ref = _ref(rest[0])
    action = rest[1:]
    if not action:
        if method == "GET":
            return Route("job", {"job_ids": [ref]}, one=True)
        if method == "DELETE":
            sig = q.number("signal")
            return Route("cancel", {"job_ids": [ref], **({"signal": sig} if sig else {})})
        if method == "PATCH":
            return Route("update", {"job_id": ref, "changes": _json(body)})
    elif len(action) == 1 and action[0] in JOB_ACTIONS and method == "POST":
        return Route(action[0], {"job_ids": [ref]})
    elif action == ["log"] and method == "GET":
        fields = {"job_id": ref, "stream": q.one("stream") or "stdout"}
        for key in ("offset", "from_end", "max_bytes"):
            if q.one(key) is not None:
                fields[key] = q.number(key)
        return Route("log", fields, raw=True)
    return None


class _Query:
    def __init__(self, query: dict[str, list[str]]) -> None:
        self.query = query

    def one(self, key: str) -> str | None:
        values = self.query.get(key)
        return values[-1] if values else None

    def many(self, key: str) -> list[str]:
        return [v for value in self.query.get(key, []) for v in value.split(",") if v]

    def flag(self, key: str) -> bool:
        return (self.one(key) or "").lower() in ("1", "true", "yes")

    def number(self, key: str) -> Any:
        text = self.one(key)
        if text is None or text == "":
            return None
        try:
            return float(text) if "." in text else int(text)
        except ValueError:
            raise BadMessage(f"query parameter {key} must be a number, not {text!r}") from None

    def filters(self) -> dict[str, Any]:
        return {
            "users": self.many("user"),
            "states": [_SHORT.get(s.upper(), s.upper()) for s in self.many("state")],
            "names": self.many("name"),
            "job_ids": [_ref(r) for r in self.many("id")],
            "fields": self.many("fields"),
        }

    def window(self) -> dict[str, Any]:
        found = {}
        for key, name in (("start", "window_start_s"), ("end", "window_end_s")):
            value = self.number(key)
            if value is not None:
                found[name] = float(value)
        return found


def _ref(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def _json(body: bytes) -> dict[str, Any]:
    try:
        value = json.loads(body or b"{}")
    except ValueError as exc:
        raise BadMessage(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise BadMessage("the body must be a JSON object")
    return value
