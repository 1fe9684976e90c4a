"""Fixtures of the console's tests: one real three-node cluster per module and headless
Chromium sessions signed in to its console."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fades.cluster import LocalCluster

from .browser import chrome, missing

#: generous waits: a busy 2-core machine runs eight engineers' tests at once
WAIT_S = 60.0


def wait_for(cond: Callable[[], Any], timeout: float = WAIT_S, what: str = "condition") -> Any:
    """Poll ``cond`` until it returns something truthy (its value), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
        except Exception as exc:  # a stale element while the page re-renders
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} ({last_exc!r})")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    home: Path = tmp_path_factory.mktemp("console") / "up"
    c = LocalCluster(home, nodes=3, days=0.05, devices=True, down_after_s=5.0)
    c.prepare()
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def browser_missing() -> str | None:
    return missing()


@pytest.fixture
def open_browser(browser_missing: str | None) -> Iterator[Callable[[], Any]]:
    """``open_browser()``: a new headless Chromium (closed after the test)."""
    if browser_missing:
        pytest.skip(f"no browser for the console tests: {browser_missing}")
    opened: list[Any] = []

    def open_() -> Any:
        driver = chrome()
        opened.append(driver)
        return driver

    yield open_
    for d in opened:
        d.quit()


def sign_in(driver: Any, cluster: LocalCluster, token: str) -> None:
    """Open the console and sign in with ``token`` through its form."""
    from selenium.webdriver.common.by import By

    driver.get(cluster.url + "/")
    driver.find_element(By.ID, "token").send_keys(token)
    driver.find_element(By.ID, "login-go").click()
    wait_for(lambda: driver.find_element(By.ID, "live").text == "live", what="the live feed")
