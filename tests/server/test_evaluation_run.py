"""Evaluation-only runs: a registered model at its training sites and at a site that never saw it, no training."""

from __future__ import annotations

import json
import shutil

import pytest

from client.flower.app import build_client_app
from server.evaluation_run import run_evaluation_only
from server.federation import run_federation
from shared.config import ConfigError, RunConfig, run_directory
from simulations.in_process import InProcessGrid
from tests.factories import patient_table

TRAINING_SITES = ("site_a", "site_b", "site_c")
CHEAP = {"num-rounds": 1, "dp": False, "recalibrate-response": False, "bootstrap-samples": 20, "shap-patients": 0,
         "survival-interval-days": 180, "min-sites": 2}


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-round federation of three sites; its run directory holds the registered model."""
    root = tmp_path_factory.mktemp("evaluation")
    for index, site in enumerate(TRAINING_SITES):
        (root / "train" / site).mkdir(parents=True)
        patient_table(220, seed=index, site=site).to_csv(root / "train" / site / "patients.csv", index=False)
    (root / "all").mkdir()
    for site in TRAINING_SITES:
        shutil.copytree(root / "train" / site, root / "all" / site)
    (root / "all" / "site_new").mkdir()
    patient_table(180, seed=9, site="site_new").to_csv(root / "all" / "site_new" / "patients.csv", index=False)
    config = RunConfig.from_mapping(CHEAP | {"data-dir": str(root / "train"), "output-dir": str(root / "runs"),
                                             "run-name": "trained", "site-reports": False})
    results = run_federation(InProcessGrid(build_client_app(config.to_flower()), num_nodes=3), config,
                             run_directory(config, 1), progress=lambda line: None)
    return root, results


def _evaluate(root, **extra):
    config = RunConfig.from_mapping(CHEAP | {"data-dir": str(root / "all"), "output-dir": str(root / "runs"),
                                             "run-name": "evaluated", "evaluate-model": str(root / "runs" / "trained")}
                                    | extra)
    grid = InProcessGrid(build_client_app(config.to_flower()), num_nodes=4)
    return run_evaluation_only(grid, config, run_directory(config, 1), progress=lambda line: None), config


def test_a_new_site_evaluates_the_registered_model_on_all_its_patients_without_spending_epsilon(trained):
    root, training = trained
    results, config = _evaluate(root)
    assert results.model["trained_on"] == list(TRAINING_SITES)
    assert sorted(results.internal) == list(TRAINING_SITES) and sorted(results.external) == ["site_new"]
    assert results.missing == {}
    # the external site reports on all its patients; a training site on its held-out test split only, and there its
    # figures are exactly the training run's final test figures (same model, same patients)
    assert results.external["site_new"]["num-examples"] == 180
    for site in TRAINING_SITES:
        assert results.internal[site]["num-examples"] == training.test[site]["num-examples"] < 220
        for key in ("response-auc", "pfs-cindex", "os-cindex"):
            if key in training.test[site]:
                assert results.internal[site][key] == pytest.approx(training.test[site][key], abs=1e-9)
    assert {"response-auc-lower", "pfs-cindex-upper"} <= set(results.external["site_new"])
    # every site wrote its report on its own disk; nothing was trained, so no site keeps a privacy ledger
    run_dir = run_directory(config, 1)
    for site in (*TRAINING_SITES, "site_new"):
        report = run_dir / "sites" / site / "report.html"
        assert report.is_file(), site
        assert not (run_dir / "sites" / site / "privacy_ledger.json").exists()
    assert "all its patients (external)" in (run_dir / "sites" / "site_new" / "report.html").read_text()
    saved = json.loads((run_dir / "metrics.json").read_text())
    assert saved["epsilon_for_weights"] == 0.0
    external = saved["external"]["site_new"]["response-auc"]
    assert saved["external_mean"]["response-auc"] == pytest.approx(external, rel=1e-12)
    html = (run_dir / "consortium_report.html").read_text()
    assert "Internal vs external performance" in html and "site_new" in html


def test_a_run_with_other_splits_or_another_network_is_refused(trained):
    root, _ = trained
    with pytest.raises(ConfigError, match="test-fraction"):
        _evaluate(root, **{"test-fraction": 0.3})
    with pytest.raises(ConfigError, match="hidden-size=32"):
        _evaluate(root, **{"hidden-size": 32})
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _evaluate(root, **{"evaluate-model": str(root / "nowhere")})
