"""A tiny trained-looking run directory for tumour-board tests: three rounds of a small model, one site cohort.

The "rounds" are the tiny model trained a few steps further each time, so members differ as real rounds do.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from server.checkpoint import ServerState, save_checkpoint
from shared.config import RunConfig
from shared.encoding import encode_cohort
from shared.harmonisation import pool_summaries, summarise_site
from shared.losses import patient_losses
from tests.factories import GRID, patient_table, tiny_model

SITE = "hospital_a"


def make_run(root: Path, rounds: int = 3) -> tuple[Path, Path]:
    """(run directory, cohort directory) with SITE's patients at cohort/SITE/patients.csv."""
    cohort = root / "cohort"
    (cohort / SITE).mkdir(parents=True)
    frame = patient_table(240, seed=5, site=SITE)
    frame.to_csv(cohort / SITE / "patients.csv", index=False)
    config = RunConfig(num_rounds=rounds, hidden_size=16, survival_interval_days=GRID.interval_days,
                       survival_horizon_days=GRID.horizon_days, data_dir=str(cohort), seed=3)
    run_dir = root / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_flower()))
    stats = pool_summaries([summarise_site(frame, min_cell_size=10)])
    cohort_tensors = encode_cohort(frame, stats, GRID)
    model = tiny_model(seed=config.seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    for server_round in range(1, rounds + 1):
        for _ in range(15):
            optimiser.zero_grad()
            loss = patient_losses(*model(*cohort_tensors.inputs()), *cohort_tensors.tensors()[6:]).mean()
            loss.backward()
            optimiser.step()
        save_checkpoint(run_dir, ServerState(completed_round=server_round, normalisation=stats, history=[]),
                        model.state_dict(), {})
    metrics = {"config": config.to_flower(), "rounds": [], "epsilon": {SITE: 2.9},
               "test": {SITE: {"num-examples": 48.0, "response-auc": 0.61, "response-auc-lower": 0.5,
                               "response-auc-upper": 0.72, "sub:cancer-type:breast:n": 20.0,
                               "sub:cancer-type:breast:response-auc": 0.64,
                               "sub:cancer-type:breast:response-auc-lower": 0.41,
                               "sub:cancer-type:breast:response-auc-upper": 0.85}},
               "test_missing": {}, "test_mean": {"response-auc": 0.61}}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir, cohort


def breast_patient(**changes: object) -> dict:
    """A prospective breast-cancer patient (no regimen chosen, no outcomes) as contract JSON."""
    patient = {"patient_id": "tb-001", "age_years": 58, "sex": "female", "race_ethnicity": "white", "ecog": 1,
               "stage_group": "III", "cancer_type": "breast", "histology": "breast_ductal", "charlson_index": 1,
               "prior_lines": 0, "line_of_therapy": 1, "grade": 2, "er_positive": True, "her2_positive": False,
               "ki67_percent": 30.0, "tumour_size_mm": 32.0, "suv_max": 6.5, "mtv_ml": 20.0, "lesion_count": 2}
    patient.update(changes)
    return {k: v for k, v in patient.items() if v is not None}
