"""The dashboard in a real browser (headless Chromium driven by selenium): it signs in with a
user's token, shows every node's GPUs and who holds them, lists the queue, redraws by itself
when the state changes (server-sent events, no reload), and its cancel button cancels."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.dashboard import headless_chromium
from mgpu_core.models import JobSpec
from tests.helpers.cluster import Cluster, running_cluster, wait_for

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = headless_chromium()
    if driver is None:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup.sh installs them)")
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    config = tmp_path / "master.toml"
    config.write_text('[http]\nlisten = "127.0.0.1:0"\n')
    with running_cluster(tmp_path, "--config", str(config)) as c:
        c.start_node("n1", gpus=2)
        yield c


def test_the_dashboard_shows_jobs_live_and_cancels(
    cluster: Cluster, browser: Any, tmp_path: Path
) -> None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    port = int((cluster.master_state / "http.port").read_text())
    with cluster.client("alice") as alice:
        running = alice.submit(JobSpec(argv=["sleep", "300"], gpus=1, cwd=str(cluster.tmp)))
    browser.get(f"https://127.0.0.1:{port}/")
    browser.find_element(By.ID, "token").send_keys(str(cluster.token("alice")))
    browser.find_element(By.CSS_SELECTOR, "#login-form button").click()

    def cell(selector: str) -> str | None:
        """The element's text now (None while it is absent or being redrawn)."""
        try:
            found = browser.find_elements(By.CSS_SELECTOR, selector)
            return found[0].text if found else None
        except StaleElementReferenceException:
            return None

    def click(selector: str) -> bool:
        try:
            browser.find_element(By.CSS_SELECTOR, selector).click()
            return True
        except (StaleElementReferenceException, NoSuchElementException):
            return False  # redrawn under us: the next try finds the new one

    wait_for(lambda: "alice" in (cell(f'[data-job="{running}"]') or ""), 20, "the GPU grid")
    assert cell(f"#job-{running} .state") == "RUNNING"
    # The utilisation plot: one bar an hour over the last day, the last one not empty.
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#plot rect")) >= 24, 20, "plot")
    # A job submitted after the page loaded appears by itself (no reload).
    with cluster.client("alice") as alice:
        later = alice.submit(JobSpec(argv=["sleep", "9"], gpus=1, cwd=str(cluster.tmp), hold=True))
    wait_for(lambda: cell(f"#job-{later} .state") == "PENDING", 20, "the live update")
    cancel = f'button[data-action="cancel"][data-job="{running}"]'
    wait_for(lambda: click(cancel), 20, "the cancel button")
    wait_for(lambda: cell(f"#job-{running} .state") in ("CANCELLED", "COMPLETING"), 20, "cancel")
    wait_for(lambda: cluster.job(running)["state"] == "CANCELLED", 20, "the job cancelled")
    browser.save_screenshot(str(tmp_path / "dashboard.png"))
    assert (tmp_path / "dashboard.png").read_bytes()[:4] == b"\x89PNG"
