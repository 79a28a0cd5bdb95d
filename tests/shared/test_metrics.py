"""Figures of shared.metrics against the libraries, hand-computable cases and a textbook meta-analysis."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special
from sklearn.calibration import calibration_curve
from sklearn.metrics import balanced_accuracy_score, brier_score_loss, roc_auc_score
from sksurv.metrics import (
    concordance_index_censored,
    concordance_index_ipcw,
    cumulative_dynamic_auc,
    integrated_brier_score,
)
from sksurv.util import Surv

from shared import metrics
from shared.metrics import (
    Estimate,
    EvaluationSettings,
    OutcomePredictions,
    evaluate_predictions,
    evaluate_response,
    evaluate_subgroups,
    evaluate_survival,
    net_benefit,
    pool_site_estimates,
    random_effects_meta_analysis,
    restricted_mean_survival_days,
    risk_score,
    suppress_small_cells,
)
from tests.shared.test_metrics_support import (
    TIME_GRID_DAYS,
    contract_only,
    make_site_table,
    predictions_from_prognosis,
)

FAST = EvaluationSettings(n_bootstrap=40)


def _response_data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.05, 0.95, n)
    return p, rng.random(n) < p


def _survival_data(n: int, seed: int, follow_up: float = 1500.0):
    rng = np.random.default_rng(seed)
    score = rng.normal(0, 1, n)
    true_days = rng.exponential(700 * np.exp(-0.7 * score))
    censor = rng.uniform(100, follow_up, n)
    days, event = np.minimum(true_days, censor).round() + 1, true_days <= censor
    curve = np.exp(-np.outer(np.exp(0.7 * (score + rng.normal(0, 0.5, n))), TIME_GRID_DAYS) / 700)
    return curve, days, event


# ------------------------------------------------------------------ response

def test_response_figures_match_scikit_learn() -> None:
    p, y = _response_data(300, 1)
    result = evaluate_response(p, y, FAST, np.random.default_rng(0))
    assert result.auc.value == pytest.approx(roc_auc_score(y, p))
    assert result.brier.value == pytest.approx(brier_score_loss(y, p))
    assert result.balanced_accuracy.value == pytest.approx(balanced_accuracy_score(y, p >= 0.5))
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="quantile")
    assert result.calibration.observed == pytest.approx(observed.tolist())
    assert result.calibration.predicted == pytest.approx(predicted.tolist())
    assert (result.n, result.responders) == (300, int(y.sum()))
    assert result.auc.n == 300 and result.auc.events == int(y.sum())


def test_hand_computable_response_cases() -> None:
    # 12 responders all ranked above 12 non-responders: AUC 1; threshold 0.5 splits them exactly.
    p = np.r_[np.linspace(0.6, 0.9, 12), np.linspace(0.1, 0.4, 12)]
    y = np.r_[np.ones(12, bool), np.zeros(12, bool)]
    settings = EvaluationSettings(n_bootstrap=20)
    assert metrics.response_auc(p, y, settings, np.random.default_rng(0)).value == 1.0
    assert metrics.response_balanced_accuracy(p, y, settings, np.random.default_rng(0)).value == 1.0
    # Brier of a constant 0.5 is 0.25 whatever happens.
    assert metrics.response_brier(np.full(24, 0.5), y, settings, np.random.default_rng(0)).value == 0.25


def test_calibration_slope_and_intercept() -> None:
    rng = np.random.default_rng(3)
    true_p = special.expit(rng.normal(0, 1.2, 20000))
    y = rng.random(true_p.size) < true_p
    assert metrics.calibration_slope_value(true_p, y) == pytest.approx(1.0, abs=0.05)
    assert metrics.calibration_intercept_value(true_p, y) == pytest.approx(0.0, abs=0.05)
    overconfident = special.expit(2 * special.logit(true_p))
    assert metrics.calibration_slope_value(overconfident, y) == pytest.approx(0.5, abs=0.03)
    # Constant prediction: the intercept is exactly logit(observed rate) - logit(prediction).
    constant = np.full(200, 0.3)
    outcome = np.r_[np.ones(80, bool), np.zeros(120, bool)]
    expected = special.logit(0.4) - special.logit(0.3)
    assert metrics.calibration_intercept_value(constant, outcome) == pytest.approx(expected, abs=1e-9)


def test_net_benefit_by_hand() -> None:
    p = np.array([0.9, 0.8, 0.3, 0.2])
    y = np.array([True, False, True, False])
    # At threshold 0.5: act on the first two, TP = 1, FP = 1 → 1/4 - 1/4 · 0.5/0.5 = 0.
    # At 0.25: act on three, TP = 2, FP = 1 → 2/4 - 1/4 · (0.25/0.75) = 0.41667.
    assert net_benefit(p, y, [0.5, 0.25]) == pytest.approx([0.0, 0.5 - 0.25 / 3])
    treat_all = net_benefit(np.ones(4), y, [0.25])
    assert treat_all == pytest.approx([0.5 - 0.5 / 3])


# ------------------------------------------------------------------ survival

def test_restricted_mean_and_risk_score() -> None:
    grid = np.array([100.0, 200.0])
    never = np.ones((1, 2))
    halving = np.array([[0.5, 0.25]])
    assert restricted_mean_survival_days(never, grid) == pytest.approx([200.0])
    # trapezoids: (1 + 0.5)/2·100 + (0.5 + 0.25)/2·100 = 75 + 37.5
    assert restricted_mean_survival_days(halving, grid) == pytest.approx([112.5])
    assert risk_score(halving, grid)[0] > risk_score(never, grid)[0]


def test_survival_figures_match_scikit_survival() -> None:
    curve, days, event = _survival_data(300, 5)
    train_curve, train_days, train_event = _survival_data(400, 6, follow_up=1800)
    result = evaluate_survival("os", curve, TIME_GRID_DAYS, days, event, train_days, train_event, FAST,
                               np.random.default_rng(0))
    risk = risk_score(curve, TIME_GRID_DAYS)
    assert result.harrell_c.value == pytest.approx(concordance_index_censored(event, days, risk)[0])
    train, test = Surv.from_arrays(train_event, train_days), Surv.from_arrays(event, days)
    assert result.uno_tau_days == 1095.0
    assert result.uno_c.value == pytest.approx(concordance_index_ipcw(train, test, risk, tau=1095.0)[0])
    for horizon in result.horizons:
        assert horizon.evaluated_days == horizon.requested_days and horizon.note is None
        by_horizon = 1 - metrics.survival_at(curve, TIME_GRID_DAYS, [horizon.requested_days])[:, 0]
        auc = cumulative_dynamic_auc(train, test, by_horizon, [horizon.requested_days])[0][0]
        assert horizon.auc.value == pytest.approx(auc)
        brier_days = np.r_[TIME_GRID_DAYS[TIME_GRID_DAYS < horizon.requested_days], horizon.requested_days]
        brier = integrated_brier_score(train, test, metrics.survival_at(curve, TIME_GRID_DAYS, brier_days),
                                       brier_days)
        assert horizon.integrated_brier.value == pytest.approx(brier)
    assert result.harrell_c.value > 0.6
    assert [g.n for g in result.kaplan_meier.groups] == [100, 100, 100]
    assert result.kaplan_meier.logrank_p < 0.01


def test_perfect_ordering_gives_concordance_one() -> None:
    days = np.arange(1.0, 31.0) * 30
    event = np.r_[np.ones(20, bool), np.zeros(10, bool)]
    # earlier event → lower survival at every grid day
    curve = np.exp(-np.outer(1 / days, TIME_GRID_DAYS))
    estimate = metrics.harrell_c(curve, TIME_GRID_DAYS, days, event, EvaluationSettings(n_bootstrap=20),
                                 np.random.default_rng(0))
    assert estimate.value == 1.0


def test_horizons_beyond_follow_up_are_clipped_and_said_so() -> None:
    curve, days, event = _survival_data(300, 7, follow_up=650)
    _, train_days, train_event = _survival_data(300, 8, follow_up=650)
    result = evaluate_survival("pfs", curve, TIME_GRID_DAYS, days, event, train_days, train_event, FAST,
                               np.random.default_rng(0))
    limit = min(days.max(), train_days.max())
    one_year, two_years, three_years = result.horizons
    assert one_year.evaluated_days == 365.0 and one_year.note is None
    for horizon in (two_years, three_years):
        assert horizon.evaluated_days is not None and horizon.evaluated_days < limit
        assert "clipped" in horizon.note
    assert result.uno_tau_days < limit


# ------------------------------------------------------------------ intervals and small cells

def test_bootstrap_interval_contains_estimate_and_narrows_with_n() -> None:
    widths = []
    for n in (100, 1600):
        p, y = _response_data(n, 11)
        estimate = metrics.response_auc(p, y, EvaluationSettings(n_bootstrap=200), np.random.default_rng(1))
        assert estimate.lower <= estimate.value <= estimate.upper
        widths.append(estimate.upper - estimate.lower)
    assert widths[1] < widths[0] / 2


def test_intervals_depend_only_on_the_generator_passed_in() -> None:
    p, y = _response_data(150, 12)
    np.random.seed(1)
    first = metrics.response_auc(p, y, FAST, np.random.default_rng(42))
    np.random.seed(2)
    second = metrics.response_auc(p, y, FAST, np.random.default_rng(42))
    assert first == second
    assert metrics.response_auc(p, y, FAST, np.random.default_rng(43)) != first


def test_suppress_small_cells_rule() -> None:
    assert suppress_small_cells(9, 5) is not None
    assert suppress_small_cells(100, 9).suppressed
    assert "without" in suppress_small_cells(100, 95).note
    assert suppress_small_cells(100, 50) is None
    blank = suppress_small_cells(5, 2)
    assert blank.value is None and blank.n is None and blank.events is None


def test_small_response_cells_are_never_computed() -> None:
    p, y = _response_data(200, 13)
    y[:] = False
    y[:9] = True
    result = evaluate_response(p, y, FAST, np.random.default_rng(0))
    for figure in (result.auc, result.brier, result.balanced_accuracy, result.calibration_slope):
        assert figure.suppressed and figure.value is None and figure.n is None
    assert result.roc is None and result.calibration is None and result.decision_curve is None
    assert result.n is None and result.responders is None


def test_subgroup_of_nine_patients_yields_no_figure() -> None:
    rng = np.random.default_rng(21)
    table = make_site_table(rng, 160)
    table["race_ethnicity"] = "white"
    table.loc[table.index[:9], "race_ethnicity"] = "asian"
    predictions = predictions_from_prognosis(table, rng)
    results = evaluate_subgroups(contract_only(table), predictions, EvaluationSettings(n_bootstrap=20), rng)
    asian = next(r for r in results if r.group == "Race/ethnicity" and r.level == "asian")
    assert asian.n is None
    for figure in (asian.response_auc, asian.response_brier, asian.pfs_harrell_c, asian.os_harrell_c):
        assert figure.suppressed and figure.value is None and figure.n is None
    white = next(r for r in results if r.group == "Race/ethnicity" and r.level == "white")
    assert white.n == 151 and white.response_auc.available
    groups = {r.group for r in results}
    assert {"Age", "Sex", "Race/ethnicity", "Cancer type", "Comorbidity (Charlson)", "Imaging data",
            "Genomic data"} <= groups
    older = next(r for r in results if r.group == "Age" and r.level == "≥ 70")
    assert older.n == int((table["age_years"] >= 70).sum())


def test_evaluate_predictions_drops_unknown_outcomes_and_checks_alignment() -> None:
    rng = np.random.default_rng(22)
    train, test = make_site_table(rng, 300), make_site_table(rng, 200)
    predictions = predictions_from_prognosis(test, rng)
    result = evaluate_predictions(contract_only(test), predictions, contract_only(train), FAST, rng)
    assert result.response.n == int(test["best_response"].notna().sum())
    assert result.response.auc.value > 0.6
    assert set(result.survival) == {"pfs", "os"}
    with pytest.raises(ValueError, match="predict every test row"):
        evaluate_predictions(contract_only(test).iloc[:-1], predictions, contract_only(train), FAST, rng)


def test_prediction_shapes_are_checked_at_the_boundary() -> None:
    with pytest.raises(ValueError, match="expected"):
        OutcomePredictions(response_prob=np.full(3, 0.5), pfs_survival=np.ones((3, 2)), os_survival=np.ones((3, 3)),
                           time_grid_days=[90, 180, 270])
    with pytest.raises(ValueError, match="increasing"):
        OutcomePredictions(response_prob=np.full(2, 0.5), pfs_survival=np.ones((2, 2)), os_survival=np.ones((2, 2)),
                           time_grid_days=[180, 90])


# ------------------------------------------------------------------ across sites

def _bcg_trials() -> tuple[np.ndarray, np.ndarray]:
    """Colditz et al. (1994) BCG vaccine trials (metafor's dat.bcg): log risk ratios and their variances."""
    counts = [(4, 119, 11, 128), (6, 300, 29, 274), (3, 228, 11, 209), (62, 13536, 248, 12619),
              (33, 5036, 47, 5761), (180, 1361, 372, 1079), (8, 2537, 10, 619), (505, 87886, 499, 87892),
              (29, 7470, 45, 7232), (17, 1699, 65, 1600), (186, 50448, 141, 27197), (5, 2493, 3, 2338),
              (27, 16886, 29, 17825)]
    log_rr = np.array([np.log((a / (a + b)) / (c / (c + d))) for a, b, c, d in counts])
    variance = np.array([1 / a - 1 / (a + b) + 1 / c - 1 / (c + d) for a, b, c, d in counts])
    return log_rr, variance


def test_dersimonian_laird_matches_textbook_bcg_example() -> None:
    # metafor: rma(yi, vi, data = dat.bcg, method = "DL") → -0.7141 (-1.0644, -0.3638), τ² 0.3088, I² 92.12%, Q 152.23
    log_rr, variance = _bcg_trials()
    result = random_effects_meta_analysis(log_rr, np.sqrt(variance))
    assert result.pooled == pytest.approx(-0.7141, abs=1e-4)
    assert (result.lower, result.upper) == (pytest.approx(-1.0644, abs=1e-4), pytest.approx(-0.3638, abs=1e-4))
    assert result.tau2 == pytest.approx(0.3088, abs=1e-4)
    assert result.i2_percent == pytest.approx(92.12, abs=0.01)
    assert result.q == pytest.approx(152.2330, abs=1e-3)
    assert sum(result.weights) == pytest.approx(100.0)


def test_pooling_site_estimates_skips_suppressed_sites() -> None:
    same = Estimate(value=0.7, lower=0.65, upper=0.75, n=200, events=80)
    suppressed = Estimate(value=None, suppressed=True)
    pooled = pool_site_estimates([same, same, suppressed, same])
    assert pooled.sites == 3 and pooled.tau2 == 0.0 and pooled.i2_percent == 0.0
    assert pooled.pooled == pytest.approx(0.7)
    assert pooled.lower > 0.65 and pooled.upper < 0.75
    assert pooled.weights[2] is None
    assert pool_site_estimates([same, suppressed]) is None
