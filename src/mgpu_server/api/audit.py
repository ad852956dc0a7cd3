"""The audit log: one line per authentication (and its failures), admin action, submission and
cancellation, with the user and the peer address. It is the ``mgpu.audit`` logger; the master's
CLI sends it to ``<state-dir>/audit.log`` (and it propagates to the ordinary log).

Lines are ``event=NAME key=value ...`` with values quoted where they contain spaces, so they
grep and parse easily.
"""

from __future__ import annotations

import logging

log = logging.getLogger("mgpu.audit")


def _value(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


def log_event(event: str, **fields: object) -> None:
    log.info(" ".join([f"event={event}", *(f"{k}={_value(v)}" for k, v in fields.items())]))
