"""A real headless Chromium for the report and dashboard tests (Debian's ``chromium``, driven by Playwright).

These tests never skip: CI installs Chromium (``tools/ensure-chromium``, run by ``make test``); a machine
without it fails with a message saying how to get it. ``TRAINDOCTOR_CHROMIUM`` names another binary.
"""
from __future__ import annotations

import io
import os
import shutil
from typing import Any

import pytest


def chromium_path() -> str:
    for cand in (os.environ.get("TRAINDOCTOR_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                 shutil.which("chromium-browser")):
        if cand and os.path.exists(cand):
            return cand
    pytest.fail("no Chromium for the browser tests: run tools/ensure-chromium (apt-get install chromium), "
                "or set TRAINDOCTOR_CHROMIUM to a Chromium binary")


class Page:
    """A page that records console errors, page errors, dialogs and every request it makes."""

    def __init__(self, browser: Any, width: int = 1300, height: int = 900) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda r: self.requests.append(r.url))

    def _dialog(self, d: Any) -> None:
        self.dialogs.append(d.message)
        d.dismiss()

    def close(self) -> None:
        self.context.close()


def distinct_colours(png: bytes) -> int:
    """How many distinct colours a screenshot holds (a blank page has one or two)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    img.thumbnail((400, 400))
    return len(set(img.getdata()))
