"""A registry without ECOG, Charlson, race, stage, histology or line of therapy for some (or all) of its patients
joins a federation: only age, cancer type and treatment are required by the default data dictionary."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from client.flower.app import build_client_app
from server.federation import run_federation
from shared.config import RunConfig
from simulations.in_process import InProcessGrid
from tests.factories import patient_table

OPTIONAL = ("sex", "race_ethnicity", "ecog", "stage_group", "histology", "charlson_index", "prior_lines",
            "line_of_therapy")


@pytest.mark.slow
def test_a_two_round_federation_runs_with_optional_clinical_fields_missing(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    for index, size in enumerate((160, 140, 120)):
        frame = patient_table(size, seed=index, site=f"s{index}")
        rng = np.random.default_rng(index)
        for column in OPTIONAL:
            frame.loc[rng.random(size) < 0.3, column] = None
        if index == 2:  # a site that never records these at all
            frame = frame.drop(columns=["ecog", "charlson_index", "race_ethnicity"])
        (tmp_path / "cohort" / f"site_{index}").mkdir(parents=True)
        frame.to_csv(tmp_path / "cohort" / f"site_{index}" / "patients.csv", index=False)
    config = RunConfig.from_mapping({"data-dir": str(tmp_path / "cohort"), "output-dir": str(tmp_path / "runs"),
                                     "run-name": "r", "num-rounds": 2, "survival-interval-days": 180,
                                     "bootstrap-samples": 20, "shap-patients": 5, "shap-samples": 10})
    run_federation(InProcessGrid(build_client_app(config.to_flower()), num_nodes=3), config,
                   tmp_path / "runs" / "r", progress=lambda *args, **kwargs: None)
    metrics = json.loads((tmp_path / "runs" / "r" / "metrics.json").read_text())
    assert sorted(metrics["test"]) == ["site_0", "site_1", "site_2"] and not metrics["test_missing"]
    assert all(np.isfinite(metrics["test_mean"][key]) for key in ("test-loss", "pfs-cindex", "os-cindex"))
    for site in ("site_0", "site_1", "site_2"):  # each site's full evaluation ran: report, intervals, subgroups
        assert (tmp_path / "runs" / "r" / "sites" / site / "report.html").is_file()
        assert "sub:age:lt70:n" in metrics["test"][site] and "sub:sex:female:n" in metrics["test"][site]
