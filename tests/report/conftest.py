"""Fixtures for the browser tests: one headless Chromium per session, a fresh recording page per test."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from _browser import Page, chromium_path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    p = Page(browser)
    try:
        yield p
    finally:
        p.close()
