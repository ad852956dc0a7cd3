"""The OpenAPI 3.1 document served at ``/api/openapi.json``: the routes of
:mod:`mgpu_server.api.rest`, with request bodies derived from the wire's own schemas (the job
spec's fields, limits and defaults come from :class:`mgpu_core.models.JobSpec`, so the
document cannot drift from what the master accepts)."""

from __future__ import annotations

from typing import Any

from mgpu_core import __version__, schema
from mgpu_core.messages import CLIENT_REQUESTS
from mgpu_core.models import JobSpec
from mgpu_server.api.rest import STATUS


def json_schema(v: schema.Validator) -> dict[str, Any]:
    """A wire validator as JSON Schema."""
    if isinstance(v, schema.Record):
        props = {name: json_schema(inner) for name, (inner, _) in v.fields.items()}
        required = [n for n, (_, d) in v.fields.items() if d is schema.REQUIRED]
        return {"type": "object", "properties": props, "required": required}
    if isinstance(v, schema.Optional):
        return {"anyOf": [json_schema(v.inner), {"type": "null"}]}
    if isinstance(v, schema.AnyOf):
        return {"anyOf": [json_schema(a) for a in v.alternatives]}
    if isinstance(v, schema.ListOf):
        return {"type": "array", "items": json_schema(v.item), "maxItems": v.max_items}
    if isinstance(v, schema.MapOf):
        return {"type": "object", "additionalProperties": json_schema(v.value)}
    if isinstance(v, schema.OneOf):
        return {"enum": sorted(v.choices)}
    if isinstance(v, schema.Bool):
        return {"type": "boolean"}
    if isinstance(v, schema.Int):
        return {"type": "integer", "minimum": v.lo, "maximum": v.hi}
    if isinstance(v, schema.Float):
        return {"type": "number"}
    if isinstance(v, schema.Str):
        return {"type": "string", "maxLength": v.max_len}
    return {}


def _params(verb: str, names: list[str]) -> list[dict[str, Any]]:
    fields = CLIENT_REQUESTS[verb].fields
    found = []
    for name in names:
        wire = {"user": "users", "state": "states", "name": "names", "id": "job_ids"}
        inner = fields.get(wire.get(name, name))
        kind = json_schema(inner[0]) if inner else {"type": "string"}
        if kind.get("type") == "array":
            kind = {"type": "string", "description": "comma-separated"}
        found.append({"name": name, "in": "query", "required": False, "schema": kind})
    return found


def _op(summary: str, *, params: list[dict[str, Any]] | None = None, body: Any = None) -> Any:
    op: dict[str, Any] = {
        "summary": summary,
        "responses": {
            "200": {"description": "OK (the wire reply's data)"},
            "default": {"$ref": "#/components/responses/Error"},
        },
    }
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return op


def document() -> dict[str, Any]:
    ref = [{"name": "ref", "in": "path", "required": True, "schema": {"type": "string"}}]
    listing = ["user", "state", "name", "id", "fields"]
    job = {"$ref": "#/components/schemas/JobSpec"}
    paths: dict[str, Any] = {
        "/api/whoami": {"get": _op("The token's user and whether an admin.")},
        "/api/info": {"get": _op("The master's counters.")},
        "/api/jobs": {
            "get": _op("The queue (queue).", params=_params("queue", [*listing, "finished"])),
            "post": _op(
                "Submit a job (submit).",
                body={
                    "type": "object",
                    "properties": {"job": job, "test_only": {"type": "boolean"}},
                },
            ),
        },
        "/api/jobs/{ref}": {
            "get": _op("One job in full (job).", params=ref),
            "patch": _op("Change a pending job (update).", params=ref,
                         body=json_schema(CLIENT_REQUESTS["update"].fields["changes"][0])),
            "delete": _op("Cancel, or signal with ?signal=N (cancel).", params=ref),
        },
        "/api/jobs/{ref}/log": {
            "get": _op(
                "A batch job's output bytes (log); X-Mgpu-Offset, X-Mgpu-Size headers.",
                params=ref + _params("log", ["stream", "offset", "from_end", "max_bytes"]),
            )
        },
        "/api/nodes": {"get": _op("Nodes and GPUs (nodes).")},
        "/api/partitions": {"get": _op("Partitions (partitions).")},
        "/api/turns": {"get": _op("The GPU turn queue (turns status).")},
        "/api/history": {
            "get": _op("Jobs from the database (history); start/end: Unix seconds.",
                       params=_params("history", [*listing, "limit", "start", "end"]))
        },
        "/api/report": {
            "get": _op("GPU-hours, outcomes and waits per user, account or partition (report).",
                       params=_params("report", ["group", "start", "end"]))
        },
        "/api/usage": {
            "get": _op("GPU-seconds used per step of a window, and the GPUs (usage).",
                       params=_params("usage", ["start", "end", "step"]))
        },
        "/api/events": {"get": _op("Server-sent events: 'changed' after the state changed.")},
        "/metrics": {"get": _op("Prometheus metrics (text exposition format).")},
    }  # fmt: skip
    for action in ("hold", "release", "requeue"):
        paths[f"/api/jobs/{{ref}}/{action}"] = {"post": _op(f"{action} ({action}).", params=ref)}
    return {
        "openapi": "3.1.0",
        "info": {"title": "mgpu master", "version": __version__},
        "security": [{"token": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {"JobSpec": json_schema(JobSpec.SCHEMA)},
            "responses": {
                "Error": {
                    "description": "The wire's error code and message; statuses: "
                    + ", ".join(f"{c} {s}" for c, s in sorted(STATUS.items())),
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "error": {
                                        "type": "object",
                                        "properties": {
                                            "code": {"type": "string"},
                                            "message": {"type": "string"},
                                        },
                                    }
                                },
                            }
                        }
                    },
                }
            },
        },
    }
