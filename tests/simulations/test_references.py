"""Simulation-only references: the oracle from the generator's ground truth, pooled centralised training."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from shared.config import RunConfig
from simulations.cohort import default_consortium, generate_consortium, read_ground_truth, write_consortium
from simulations.references import ORACLE_LABEL, POOLED_LABEL, oracle_reference, pooled_reference, simulated_sites

pytestmark = pytest.mark.slow  # generates a 900-patient cohort and trains a small model


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> RunConfig:
    root = write_consortium(generate_consortium(default_consortium(900)), tmp_path_factory.mktemp("cohort") / "c")
    return RunConfig.from_mapping({"data-dir": str(root), "num-rounds": 1, "local-epochs": 1, "hidden-size": 16,
                                   "survival-interval-days": 180, "bootstrap-samples": 20})


def test_the_oracle_is_the_true_risk_on_each_sites_test_split(config: RunConfig) -> None:
    sites = simulated_sites(config)
    row, figures = oracle_reference(sites, config)
    assert row.label == ORACLE_LABEL and sorted(figures) == sorted(s.site_id for s in sites)
    site = max(sites, key=lambda s: len(s.part("test")))
    test = site.part("test")
    truth = read_ground_truth(config.data_dir, [site.site_id])
    given = truth[truth["given"]].set_index("patient_id").loc[test["patient_id"].astype(str)]
    known = test["best_response"].notna().to_numpy()
    responder = test["best_response"].isin(["CR", "PR"]).to_numpy()[known]
    expected = roc_auc_score(responder, given["p_response"].to_numpy(dtype=float)[known])
    assert figures[site.site_id]["num-examples"] == len(test)
    assert figures[site.site_id]["response-auc"] == pytest.approx(expected)


def test_pooled_training_is_evaluated_on_every_sites_test_split(config: RunConfig) -> None:
    sites = simulated_sites(config)
    row, figures = pooled_reference(sites, config)
    assert row.label == POOLED_LABEL and "ε=3" in row.description
    for site in sites:
        assert figures[site.site_id]["num-examples"] == len(site.part("test"))
        for key in ("response-auc", "pfs-cindex", "os-cindex"):
            if key in figures[site.site_id]:
                value = figures[site.site_id][key]
                assert figures[site.site_id][f"{key}-lower"] <= value <= figures[site.site_id][f"{key}-upper"]
                assert np.isfinite(value)
