"""The HTTP API's routes are wire requests: every route builds a message the wire's schema
accepts, a path that is not a route is 404, and the OpenAPI document is derived from the
wire's schemas (so it lists what the master accepts)."""

from __future__ import annotations

import json

import pytest

from mgpu_core.errors import BadMessage
from mgpu_core.messages import CLIENT_REQUESTS, validate
from mgpu_server.api.openapi import document
from mgpu_server.api.rest import NotFound, Route, route
from mgpu_server.net.http import RateLimiter
from mgpu_server.net.httpapi import json_body

pytestmark = pytest.mark.timeout(30)

ROUTES = [
    ("GET", "/api/jobs", {"user": ["a,b"], "state": ["pd"], "finished": ["1"]}, b""),
    ("POST", "/api/jobs", {}, b'{"job": {"argv": ["true"]}}'),
    ("GET", "/api/jobs/12_3", {}, b""),
    ("PATCH", "/api/jobs/12", {}, b'{"nice": 5}'),
    ("DELETE", "/api/jobs/12", {"signal": ["10"]}, b""),
    ("POST", "/api/jobs/12/hold", {}, b""),
    ("POST", "/api/jobs/12/release", {}, b""),
    ("POST", "/api/jobs/12/requeue", {}, b""),
    ("GET", "/api/jobs/12/log", {"stream": ["stderr"], "from_end": ["100"]}, b""),
    ("GET", "/api/nodes", {}, b""),
    ("GET", "/api/partitions", {}, b""),
    ("GET", "/api/info", {}, b""),
    ("GET", "/api/turns", {}, b""),
    ("GET", "/api/history", {"start": ["1.5"], "end": ["99"], "limit": ["10"]}, b""),
    ("GET", "/api/report", {"group": ["account"], "start": ["1"], "end": ["2"]}, b""),
    ("GET", "/api/usage", {"start": ["1"], "end": ["7201"], "step": ["3600"]}, b""),
]


@pytest.mark.parametrize(("method", "path", "query", "body"), ROUTES)
def test_every_route_is_a_valid_wire_request(
    method: str, path: str, query: dict[str, list[str]], body: bytes
) -> None:
    found = route(method, path, query, body)
    assert isinstance(found, Route)
    msg = validate({"t": found.verb, "id": 1, **found.fields}, CLIENT_REQUESTS)
    assert msg["t"] == found.verb


def test_what_is_not_a_route() -> None:
    assert route("GET", "/metrics", {}, b"") == "metrics"
    assert route("GET", "/api/openapi.json", {}, b"") == "openapi"
    assert route("GET", "/", {}, b"") == "asset:index.html"
    assert route("GET", "/static/app.js", {}, b"") == "asset:app.js"
    assert route("GET", "/api/events", {}, b"") == "events"
    for method, path in (("GET", "/x/y/z"), ("PUT", "/api/jobs"), ("GET", "/api/jobs/1/x")):
        with pytest.raises(NotFound):
            route(method, path, {}, b"")
    with pytest.raises(BadMessage, match="not JSON"):
        route("POST", "/api/jobs", {}, b"{")
    with pytest.raises(BadMessage, match="must be a number"):
        route("GET", "/api/history", {"limit": ["many"]}, b"")


def test_the_openapi_document_names_every_route_and_the_job_specs_fields() -> None:
    doc = document()
    assert {"/api/jobs", "/api/jobs/{ref}", "/api/jobs/{ref}/log", "/metrics"} <= set(doc["paths"])
    spec = doc["components"]["schemas"]["JobSpec"]
    assert spec["properties"]["gpus"]["type"] == "integer" and "argv" in spec["properties"]


def test_the_rate_limiter_admits_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=3)
    assert [limiter.admit("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.admit("b", 0.0)  # per address
    assert limiter.admit("a", 0.5) and not limiter.admit("a", 0.5)  # one more per 0.5 s


def test_answers_are_json_even_with_bytes_and_strings_that_are_not_utf8() -> None:
    data = {"jobs": [{"cwd": "/data/caf\udce9", "n": 1.5, "raw": b"\xff", 3: None}]}
    decoded = json.loads(json_body(data))
    assert decoded == {"jobs": [{"cwd": "/data/caf\udce9", "n": 1.5, "raw": "\ufffd", "3": None}]}
    plain = {"jobs": [{"name": "été", "gpu_indices": [0, 1], "exit_code": None}]}
    assert json.loads(json_body(plain)) == plain
