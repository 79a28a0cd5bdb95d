"""Per-site calibration study: the site fits are right on hand-made data, and they never see the test outcomes."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import special

from shared.config import RunConfig
from shared.metrics import calibration_slope_value
from simulations.benchmarks import site_calibration as sc


def outcomes(logit: np.ndarray, a: float, b: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(len(logit)) < special.expit(a * logit + b)).astype(float)


def test_site_platt_recovers_a_known_miscalibration_and_the_ridges_hold_it_to_the_consortium_fit():
    logit = np.random.default_rng(0).normal(0.0, 1.5, 20_000)
    responder = outcomes(logit, 0.5, 0.3, seed=1)
    a, b = sc.fit_site_platt(logit, responder, 0.0, 0.0)
    assert (a, b) == (pytest.approx(0.5, abs=0.03), pytest.approx(0.3, abs=0.04))
    assert sc.fit_site_platt(logit, responder, math.inf, math.inf) == (1.0, 0.0)
    a_only, b_only = sc.fit_site_platt(logit, responder, math.inf, 0.0)
    assert a_only == 1.0 and b_only > 0.1  # the intercept alone moves
    shrunk = sc.fit_site_platt(logit, responder, 1e6, 1e6)
    assert shrunk == (pytest.approx(1.0, abs=0.05), pytest.approx(0.0, abs=0.05))
    # the slope with its error agrees with the site report's estimator (scikit-learn)
    slope, error = sc.slope_with_error(logit, responder)
    assert slope == pytest.approx(calibration_slope_value(special.expit(logit), responder.astype(bool)), abs=1e-4)
    assert 0.0 < error < 0.05


def test_each_candidate_is_a_run_configuration_of_the_product():
    from shared.config import RunConfig

    assert sc.product_setting(sc.NONE) == {"site-recalibration": "none"}
    assert sc.product_setting("site intercept only") == {"site-recalibration": "intercept"}
    assert sc.product_setting("site Platt, ridge 10") == {"site-recalibration": "platt", "site-recalibration-ridge": 10}
    for name in sc.CANDIDATES:
        RunConfig.from_mapping(sc.product_setting(name))  # each one is a valid configuration


def test_cochran_q_separates_sampling_noise_from_real_differences():
    same = sc.cochran_q([1.0, 1.0, 1.0], [0.2, 0.3, 0.25])
    assert same["q"] == pytest.approx(0.0) and same["p"] == pytest.approx(1.0) and same["i2"] == 0.0
    apart = sc.cochran_q([0.5, 1.5], [0.1, 0.1])
    assert apart["q"] == pytest.approx(50.0) and apart["p"] < 1e-6 and apart["pooled_slope"] == pytest.approx(1.0)


def test_cross_validation_prefers_the_site_fit_only_where_the_site_is_miscalibrated():
    logit = np.random.default_rng(2).normal(0.0, 1.5, 600)
    calibrated = sc.cross_validated_log_loss(logit, outcomes(logit, 1.0, 0.0, seed=3), seed=0)
    skewed = sc.cross_validated_log_loss(logit, outcomes(logit, 0.4, 0.8, seed=3), seed=0)
    assert min(calibrated, key=calibrated.get) != "site Platt"  # refitting a calibrated site only adds noise
    assert skewed["site Platt"] < skewed[sc.NONE] - 0.01


def test_the_chance_a_calibrated_models_slope_lands_in_range_shrinks_with_the_test_set():
    rng = np.random.default_rng(4)
    probability = special.expit(rng.normal(0.0, 0.8, 4000))
    assert sc.slope_in_range_chance(probability, np.random.default_rng(5), draws=100) > 0.9
    assert sc.slope_in_range_chance(probability[:100], np.random.default_rng(5), draws=100) < 0.8


def test_the_site_fit_uses_validation_outcomes_only(monkeypatch, tmp_path):
    """Flipping every test outcome changes the test slope but not the site's fitted (a, b)."""
    rng = np.random.default_rng(6)
    validation_logit, test_logit = rng.normal(0, 1.2, 300), rng.normal(0, 1.2, 200)
    validation = {"logit": validation_logit, "responder": outcomes(validation_logit, 0.6, 0.2, seed=7),
                  "patient_id": pd.Series([f"v{i}" for i in range(300)]), "n": 300}
    test_responder = outcomes(test_logit, 0.6, 0.2, seed=8)

    def fake_sites(responder):
        test = {"logit": test_logit, "responder": responder, "patient_id": pd.Series([f"t{i}" for i in range(200)]),
                "n": 200}
        return RunConfig.from_mapping({"data-dir": str(tmp_path)}), {"site_a": {"validation": validation, "test": test}}

    reports = []
    for responder in (test_responder, 1.0 - test_responder):
        monkeypatch.setattr(sc, "site_logits", lambda run_dir, responder=responder: fake_sites(responder))
        reports.append(sc.test_report(tmp_path, "site Platt", seed=0)["sites"]["site_a"])
    assert reports[0]["site_fit"] == reports[1]["site_fit"]
    assert reports[0]["site_fit"]["a"] == pytest.approx(sc.fit_site_platt(validation_logit, validation["responder"],
                                                                          0.0, 0.0)[0])
    assert reports[0]["slope_consortium_fit"] > 0 > reports[1]["slope_consortium_fit"]
    # an affine map of the logit divides the slope by a
    assert reports[0]["slope_site_fit"] == pytest.approx(reports[0]["slope_consortium_fit"] /
                                                         reports[0]["site_fit"]["a"], rel=1e-3)
    assert reports[0]["chance_in_range_true_probabilities"] is None  # no generator truth in this folder
