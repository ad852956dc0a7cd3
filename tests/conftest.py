"""Suite-wide hooks.

Coverage (``--cov``, as scripts/test.sh runs it) leaves property tests untraced: Hypothesis
runs the code under test hundreds of times per test, and tracing those runs doubled the unit
tests' time (Python 3.11's tracer costs every line) while adding about 1.5 points to the
figure, since the example tests reach nearly every line the properties do.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("_cov"):
        return  # pytest-cov absent or disabled (-p no:cov): nothing to pause
    for item in items:
        if getattr(getattr(item, "obj", None), "is_hypothesis_test", False):
            item.add_marker(pytest.mark.no_cover)
