"""The onboarding walkthrough (docs/onboarding.md) works as written: its command blocks run in order, in bash, and
give three usable sites, a federated run of the example consortium's dictionary and the reports it names.
The example sites' exports are the generator's output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from shared.dictionary import load_dictionary

REPO = Path(__file__).resolve().parents[1]
WALKTHROUGH = REPO / "docs" / "onboarding.md"
EXAMPLE = REPO / "examples" / "new-consortium"
SITES = ("northfield", "riverside", "lakeside")


def walkthrough_commands() -> list[str]:
    """The bash blocks of the walkthrough's own section, in order."""
    section = WALKTHROUGH.read_text(encoding="utf-8").split("## The walkthrough", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, flags=re.DOTALL)


def test_the_walkthrough_has_its_five_steps_of_commands() -> None:
    blocks = walkthrough_commands()
    assert len(blocks) == 5, blocks
    assert "oncofed-check-site" in blocks[2] and "--dictionary dictionary.yaml" in blocks[2]
    assert blocks[3].startswith("oncofed-simulate --data-dir sites")


def test_the_example_exports_are_the_generators_output(tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, str(EXAMPLE / "generate_exports.py"), str(tmp_path)], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
    assert finished.returncode == 0, finished.stderr[-3000:]
    for site in SITES:
        assert (tmp_path / site / "patients.csv").read_bytes() == (EXAMPLE / "sites" / site / "patients.csv").read_bytes()
    assert list(pd.read_csv(EXAMPLE / "sites" / "riverside" / "patients.csv").columns[:3]) == ["MRN", "AGE", "ECOG_PS"]


@pytest.mark.slow
def test_the_walkthrough_runs_as_written(tmp_path: Path) -> None:
    work = tmp_path / "onboarding"
    environment = os.environ | {"ONCOFED": str(REPO), "WORK": str(work),
                                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    script = "set -euo pipefail\n" + "\n".join(walkthrough_commands())
    finished = subprocess.run(["bash", "-c", script], cwd=REPO, env=environment, capture_output=True, text=True,
                              timeout=1800)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    assert finished.stdout.count("Usable: yes") == 3 and finished.stdout.count("\nOS: events") == 3
    assert "Best response:" not in finished.stdout  # not an endpoint of this consortium
    dictionary_sha256 = load_dictionary(EXAMPLE / "dictionary.yaml").content_sha256()
    assert finished.stdout.count(f"sha256 {dictionary_sha256}") == 3
    metrics = json.loads((work / "runs" / "first-run" / "metrics.json").read_text())
    assert metrics["provenance"]["dictionary_sha256"] == dictionary_sha256
    assert sorted(metrics["test"]) == sorted(SITES) and not metrics["test_missing"]
    for site, figures in metrics["test"].items():
        assert 0.0 <= figures["os-cindex"] <= 1.0 and "response-auc" not in figures
        assert (work / "sites" / site / "state" / "report.html").is_file()
        assert (work / "sites" / site / "state" / "privacy_ledger.json").is_file()
    assert (work / "runs" / "first-run" / "consortium_report.html").is_file()
    assert "Traceback" not in finished.stderr, finished.stderr[-3000:]
