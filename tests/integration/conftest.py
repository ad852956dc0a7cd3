"""Fixtures for the real-process tests (the cluster itself is tests/helpers/cluster.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.cluster import Cluster


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    try:
        c.start_master("--kill-grace", "2")
        yield c
    finally:
        c.stop()
