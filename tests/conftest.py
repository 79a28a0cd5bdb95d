"""Fixtures shared by several test packages."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a report test writes its pages: ONCOFED_SCREENSHOT_DIR (to look at them afterwards) or a fresh folder."""
    chosen = os.environ.get("ONCOFED_SCREENSHOT_DIR")
    directory = Path(chosen) if chosen else tmp_path_factory.mktemp("report")
    directory.mkdir(parents=True, exist_ok=True)
    return directory
