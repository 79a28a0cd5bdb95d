"""A consortium unlike the default one is onboarded without editing Python: its own dictionary (other cancers,
treatments including no systemic therapy, endocrine therapy and radiotherapy, other features, PFS and OS only)
replaces the app's, and a 2-round federation runs end to end with the encoding and the model sized from it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shared.dictionary import load_dictionary

REPO = Path(__file__).resolve().parents[1]
DICTIONARY = REPO / "tests" / "data" / "survival_only_dictionary.yaml"


@pytest.mark.slow
def test_a_survival_only_consortium_of_other_cancers_federates_for_two_rounds(tmp_path: Path) -> None:
    app = tmp_path / "app"
    for package in ("shared", "client", "server", "simulations", "tests"):
        shutil.copytree(REPO / package, app / package, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(DICTIONARY, app / "shared" / "dictionaries" / "default.yaml")  # the consortium's app carries it
    environment = os.environ | {"PYTHONPATH": str(app), "OMP_NUM_THREADS": "1"}
    finished = subprocess.run([sys.executable, "-m", "tests.federation_with_dictionary", str(tmp_path / "out")],
                              cwd=app, env=environment, capture_output=True, text=True, timeout=900)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(finished.stdout.strip().splitlines()[-1])
    assert result["dictionary"] == "prostate-melanoma-survival"
    assert result["dictionary_sha256"] == load_dictionary(DICTIONARY).content_sha256()
    assert sorted(result["test"]) == ["site_0", "site_1", "site_2"] and not result["test_missing"]
    for site, figures in result["test"].items():  # a C-index needs 10 events and 10 censored (small-cell rule)
        assert 0.0 <= figures["os-cindex"] <= 1.0 and figures["num-examples"] >= 40
        assert "response-auc" not in figures  # no response endpoint: nothing to report
        assert "sub:cancer-type:melanoma:n" in figures or "sub:cancer-type:prostate:n" in figures
        assert (tmp_path / "out" / "runs" / "r" / "sites" / site / "report.html").is_file()
    assert any("pfs-cindex" in figures for figures in result["test"].values())
    assert "Traceback" not in finished.stderr, finished.stderr[-3000:]
