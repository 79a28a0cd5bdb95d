"""DP over what leaves a site besides the model: the mechanism's scale, the sensitivities, and one ledger's ε."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from client.flower.app import build_client_app
from client.training.privacy import load_ledger, plan_round, rdp_epsilon
from client.governance.release_privacy import figure_sensitivities, noisy_feature_summary, noisy_test_figures
from server.federation import run_federation
from shared.config import ConfigError, RunConfig, run_directory
from shared.harmonisation import CATEGORICAL_FEATURES, NUMERIC_FEATURES, pool_summaries, summarise_site
from shared.metrics import responder_labels, survival_outcomes
from simulations.in_process import InProcessGrid
from tests.factories import patient_table

BLOCKS = 1 + 4 * len(NUMERIC_FEATURES) + len(CATEGORICAL_FEATURES)


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def test_harmonisation_noise_has_the_gaussian_mechanisms_scale_and_vanishes_with_sigma():
    frame = patient_table(300, seed=3)
    exact = pool_summaries([summarise_site(frame, min_cell_size=10)])
    near = pool_summaries([noisy_feature_summary(frame, 10, sigma=1e-4)])
    for feature in ("age_years", "tumour_size_mm", "ecog"):
        assert near.mean[feature] == pytest.approx(exact.mean[feature], abs=1e-3)
        assert near.std[feature] == pytest.approx(exact.std[feature], rel=1e-3)
    sigma = 0.5  # the released patient count's noise has std σ·√K, K = the blocks one patient can touch
    counts = np.array([noisy_feature_summary(frame, 10, sigma).n_patients for _ in range(300)], dtype=float)
    assert counts.mean() == pytest.approx(300, abs=1.0)
    assert counts.std() == pytest.approx(sigma * math.sqrt(BLOCKS), rel=0.15)


def test_figure_sensitivities_bound_what_removing_any_one_patient_changes():
    patients = patient_table(80, seed=5)
    sensitivity = figure_sensitivities(patients)
    rng = np.random.default_rng(0)
    score = rng.random(len(patients))

    def figures(frame, s):
        known, responder = responder_labels(frame)
        result = {"response-auc": roc_auc_score(responder[known], s[known])}
        for endpoint in ("pfs", "os"):
            followed, days, event = survival_outcomes(frame, endpoint)
            result[f"{endpoint}-cindex"] = concordance_index_censored(event[followed], days[followed],
                                                                      s[followed])[0]
        return result

    full = figures(patients, score)
    largest = {key: 0.0 for key in full}
    for removed in range(len(patients)):
        keep = np.arange(len(patients)) != removed
        for key, value in figures(patients[keep].reset_index(drop=True), score[keep]).items():
            largest[key] = max(largest[key], abs(value - full[key]))
    for key in full:
        assert 0 < largest[key] <= sensitivity[key], key


def test_released_test_figures_keep_only_headline_figures_with_noise_of_their_scale():
    patients = patient_table(200, seed=2)
    figures = {"num-examples": 200, "test-loss": 1.3, "response-auc": 0.7, "response-auc-lower": 0.6,
               "response-auc-upper": 0.8, "pfs-cindex": 0.65, "sub:age:ge70:n": 40, "shap:response:age_years": 0.1}
    released = noisy_test_figures(figures, patients, 10, sigma=1e-6)
    assert set(released) == {"num-examples", "response-auc", "response-auc-lower", "response-auc-upper",
                             "pfs-cindex"}
    assert released["response-auc"] == pytest.approx(0.7, abs=1e-4)
    draws = np.array([noisy_test_figures(figures, patients, 10, sigma=0.05)["pfs-cindex"] for _ in range(300)])
    scale = 0.05 * math.sqrt(5) * figure_sensitivities(patients)["pfs-cindex"]  # 5 coordinates released
    assert draws.std() == pytest.approx(scale, rel=0.2)


def test_release_privacy_refuses_phases_whose_figures_it_does_not_noise():
    with pytest.raises(ConfigError, match="recalibrate-response"):
        RunConfig.from_mapping({"release-epsilon-share": 0.1})
    with pytest.raises(ConfigError, match="dp=true"):
        RunConfig.from_mapping({"release-epsilon-share": 0.1, "dp": False, "recalibrate-response": False})
    RunConfig.from_mapping({"release-epsilon-share": 0.1, "recalibrate-response": False})


def test_the_federated_rounds_are_calibrated_beside_the_planned_releases():
    releases = (20.0, 1.0, 2)
    planned = plan_round(3.0, 1e-4, 0.2, "federated", 20, 0, 600, 256, 1, releases=releases)
    total = rdp_epsilon([(planned.noise_multiplier, planned.sample_rate, planned.steps * 20), releases], 1e-4)
    assert total == pytest.approx(3.0, abs=0.01)
    alone = plan_round(3.0, 1e-4, 0.2, "federated", 20, 0, 600, 256, 1)
    assert planned.noise_multiplier > alone.noise_multiplier  # the releases take their part of ε


def test_one_ledger_epsilon_covers_the_weights_the_harmonisation_and_the_test_figures(tmp_path):
    """A federation with release DP: every site's ledger holds both releases beside its rounds, and its ε (their
    composition) is the site's target — what docs/privacy.md states as the one ε per site."""
    for index in range(3):
        (tmp_path / "cohort" / f"site_{index}").mkdir(parents=True)
        patient_table(240, seed=index, site=f"s{index}").to_csv(tmp_path / "cohort" / f"site_{index}" /
                                                                 "patients.csv", index=False)
    config = RunConfig.from_mapping({"data-dir": str(tmp_path / "cohort"), "output-dir": str(tmp_path / "runs"),
                                     "run-name": "r", "num-rounds": 2, "survival-interval-days": 180,
                                     "release-epsilon-share": 0.2, "recalibrate-response": False,
                                     "bootstrap-samples": 20, "shap-patients": 0})
    run_dir = run_directory(config, 1)
    results = run_federation(InProcessGrid(build_client_app(config.to_flower()), num_nodes=3), config, run_dir,
                             progress=lambda line: None)
    assert all(record.validation == {} for record in results.rounds)  # no per-round figures were released
    for site in ("site_0", "site_1", "site_2"):
        raw = json.loads((run_dir / "sites" / site / "privacy_ledger.json").read_text())
        ledger = load_ledger(run_dir / "sites" / site / "privacy_ledger.json", raw["delta"])
        groups = [entry.phase for entry in ledger.entries]
        assert groups == ["release", "federated", "federated", "release"]
        assert [e.run_id.rsplit(":", 1)[-1] for e in ledger.entries if e.phase == "release"] == \
               ["harmonisation", "test-figures"]
        assert ledger.epsilon() == pytest.approx(3.0, abs=0.02)  # one ε: every release of the run composed
        assert ledger.epsilon(group="release") == pytest.approx(0.2 * 3.0, abs=0.01)
        assert ledger.epsilon(group="federated") < ledger.epsilon()  # the releases are counted, not left out
        test = results.test[site]
        assert not any(key.startswith(("sub:", "shap:", "test-loss")) for key in test)
        assert "train-loss" not in results.rounds[0].train[site]


def test_the_release_noise_does_not_follow_numpys_global_seed():
    """SHAP's GradientExplainer seeds numpy's global generator in the site's process; the noise must not follow."""
    patients = patient_table(200, seed=2)
    figures = {"num-examples": 200, "response-auc": 0.7}
    np.random.seed(0)
    first = noisy_test_figures(figures, patients, 10, sigma=0.05)
    np.random.seed(0)
    second = noisy_test_figures(figures, patients, 10, sigma=0.05)
    assert first["response-auc"] != second["response-auc"]
