"""The model card is generated from a run directory's outputs alone and shows what the run shared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from server.model_card import main, model_card
from tests.client.board_run import SITE, make_run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir, _ = make_run(tmp_path_factory.mktemp("card"), rounds=1)
    return run_dir


def test_card_sections_and_figures(run: Path) -> None:
    card = model_card(run)
    for section in ("## Intended use and users", "## Data", "## Training and privacy", "## Performance per site",
                    "## Performance per subgroup", "## Known limitations"):
        assert section in card
    assert f"| {SITE} | 0.610 (0.500–0.720) | not reported | not reported |" in card
    assert f"| {SITE} | cancer-type: breast | 20 | 0.640 (0.410–0.850) | not reported | not reported |" in card
    assert f"| {SITE} | 2.90 |" in card, "ε per site"
    assert "Pooled training population (240 patients" in card
    assert "Not measured for this run" in card and "synthetic" in card
    assert "Multimodal network" in card and "hidden size 16" in card and "2 low-rank regimen × patient" in card


def test_card_names_the_networks_form() -> None:
    """A run configured with the linear model (`network = wide`) is not described as the multimodal network."""
    from server.model_card import _network
    from shared.config import RunConfig

    linear = _network(RunConfig.from_mapping({"network": "wide", "interaction-rank": 0}))
    assert linear.startswith("Linear (wide) model") and "no regimen × patient interactions" in linear


def test_card_reports_measured_range_coverage(run: Path, tmp_path: Path) -> None:
    figures = {"coverage": 0.152, "median_width": 0.07, "mean_abs_error": 0.14, "spearman_width_vs_error": 0.08}
    calibration = {"test_patients": 927, "patient_regimen_pairs": 3291,
                   "ensembles": {"last 6 rounds": {"response": figures, "median_pfs": figures, "median_os": figures}}}
    (tmp_path / "calib.json").write_text(json.dumps(calibration))
    card = model_card(run, tmp_path / "calib.json")
    assert "| last 6 rounds | response | 15.2% | 0.070 | +0.08 |" in card and "927 simulated test patients" in card


def test_cli_writes_card_and_refuses_a_non_run(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(run), "--out", str(tmp_path / "card.md")]) == 0
    assert (tmp_path / "card.md").read_text().startswith("# Model card")
    assert main([str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
