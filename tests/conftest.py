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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest first, so that the README's `-n 2 --dist loadfile` run ends with both workers busy: the deployment
    files (real SuperLink and SuperNodes, mostly waiting on heartbeats and per-message processes), then the other
    files with end-to-end (`slow`) tests, then the unit tests. A stable sort: each file keeps its own order."""

    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: 0 if item.path.parent.name == "deploy" else 1 if item.path in slow_files else 2)
