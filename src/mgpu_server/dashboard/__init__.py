"""The web dashboard the master serves at ``/`` when ``[http]`` is on: one page of plain HTML,
CSS and JavaScript shipped in the package (no CDN: clusters are often offline), which reads
the HTTP API with the user's token and follows ``/api/events`` for live updates."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).parent / "static"
TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


def asset(name: str) -> tuple[bytes, str] | None:
    """A shipped file's bytes and content type; None for any other name."""
    if name not in TYPES:
        return None
    return (STATIC / name).read_bytes(), TYPES[name]
