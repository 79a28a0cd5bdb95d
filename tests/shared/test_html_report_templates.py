"""Report templates are found when the app runs from a Flower FAB, which cannot carry .j2 files."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shared import html_report

REPO = Path(__file__).resolve().parents[2]


def test_templates_come_from_the_installed_project_when_the_fab_copy_has_none(tmp_path: Path, monkeypatch) -> None:
    fab_copy = tmp_path / "fab" / "shared" / "templates"  # where a FAB-installed `shared` would look
    monkeypatch.setattr(html_report, "TEMPLATES", fab_copy)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "fab"), str(REPO)])
    assert html_report.template_dirs() == [fab_copy, REPO / "shared" / "templates"]
    assert html_report._environment().get_template("base.html.j2")


def test_without_any_copy_the_error_names_the_template(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(html_report, "TEMPLATES", tmp_path / "none")
    monkeypatch.setattr(sys, "path", [str(tmp_path)])
    with pytest.raises(Exception, match="base.html.j2"):
        html_report._environment().get_template("base.html.j2")
