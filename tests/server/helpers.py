"""Moved to :mod:`tests.helpers.nodes`; this re-export goes once tests/server imports it there."""

from __future__ import annotations

from tests.helpers.nodes import node_info

__all__ = ["node_info"]
