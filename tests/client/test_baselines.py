"""Baselines fit on the training split and predict the test split in the model's interface."""

from __future__ import annotations

import numpy as np
import pytest

from client.evaluation.baselines import choose_biomarkers, fit_baselines
from shared.metrics import EvaluationSettings, evaluate_predictions
from tests.shared.test_metrics_support import TIME_GRID_DAYS, contract_only, make_site_table


@pytest.fixture(scope="module")
def site():
    rng = np.random.default_rng(31)
    return contract_only(make_site_table(rng, 400)), contract_only(make_site_table(rng, 200))


def test_baselines_predict_every_test_row_in_the_model_interface(site) -> None:
    train, test = site
    baselines = fit_baselines(train, test, TIME_GRID_DAYS)
    assert [b.name for b in baselines] == ["ECOG alone", "Stage alone", "Single biomarker", "Clinical model"]
    for baseline in baselines:
        predictions = baseline.predictions
        assert predictions.response_prob.shape == (200,)
        for endpoint in ("pfs", "os"):
            curve = predictions.survival(endpoint)
            assert curve.shape == (200, TIME_GRID_DAYS.size)
            assert np.all(np.diff(curve, axis=1) <= 1e-12), "survival must not increase over time"
        assert np.array_equal(predictions.time_grid_days, TIME_GRID_DAYS)


def test_baselines_evaluate_like_the_model_and_carry_signal(site) -> None:
    train, test = site
    settings = EvaluationSettings(n_bootstrap=20)
    rng = np.random.default_rng(0)
    by_name = {b.name: b for b in fit_baselines(train, test, TIME_GRID_DAYS)}
    ecog = evaluate_predictions(test, by_name["ECOG alone"].predictions, train, settings, rng)
    clinical = evaluate_predictions(test, by_name["Clinical model"].predictions, train, settings, rng)
    assert ecog.response.auc.value > 0.55
    assert clinical.survival["os"].harrell_c.value > 0.58
    assert clinical.survival["pfs"].uno_c.available


def test_biomarker_choice_falls_back_when_the_first_is_not_recorded(site) -> None:
    train, _ = site
    assert choose_biomarkers(train) == {"breast": "her2_positive", "colorectal": "msi_high",
                                        "nsclc": "pdl1_tps_percent", "ovarian": "brca1_or_brca2"}
    no_her2 = train.assign(her2_positive=None)
    assert choose_biomarkers(no_her2)["breast"] == "er_positive"
    no_markers = train.assign(msi_high=None, kras=None, braf=None)
    assert choose_biomarkers(no_markers)["colorectal"] is None
    single = [b for b in fit_baselines(no_her2, train.iloc[:50], TIME_GRID_DAYS) if b.name == "Single biomarker"][0]
    assert "breast: ER" in single.description


def test_a_training_split_without_responders_is_refused_clearly(site) -> None:
    train, test = site
    with pytest.raises(ValueError, match="responders and non-responders"):
        fit_baselines(train.assign(best_response="PD"), test, TIME_GRID_DAYS)
