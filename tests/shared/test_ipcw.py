"""The bootstrap's IPCW figures with one censoring fit equal scikit-survival's, resample by resample."""

import numpy as np
import pytest
from sksurv.metrics import concordance_index_ipcw, cumulative_dynamic_auc, integrated_brier_score
from sksurv.util import Surv

from shared.ipcw import CensoringWeights
from shared.metrics import EvaluationSettings, bootstrap_interval, evaluate_survival, risk_score, survival_at

TOLERANCE = 1e-12  # the same estimator; only the order of floating-point sums differs


def outcomes(n: int, seed: int, rounded: bool) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    event_day, censor_day = rng.exponential(500, n), rng.uniform(60, 1500, n)
    if rounded:  # tied times and tied censoring, as registries record whole days or months
        event_day, censor_day = np.round(event_day, -1), np.round(censor_day, -1)
    return np.minimum(event_day, censor_day), event_day <= censor_day


def sksurv_or_error(function, *args) -> float | str:
    try:
        return float(function(*args))
    except ValueError:
        return "undefined"


def ours_or_error(function, *args) -> float | str:
    try:
        value = function(*args)
    except ValueError:
        return "undefined"
    return value if np.isfinite(value) else "undefined"


@pytest.mark.parametrize("rounded", [False, True])
def test_every_resample_gives_scikit_survivals_figure(rounded):
    train_day, train_event = outcomes(300, 1, rounded)
    day, event = outcomes(40, 2, rounded)  # small: some resamples are undefined, as in a small subgroup
    limit = min(day.max(), train_day.max())
    late = day >= limit
    day, event = np.where(late, limit, day), event & ~late
    train = Surv.from_arrays(event=train_event, time=train_day)
    rng = np.random.default_rng(3)
    risk = rng.normal(size=day.size).round(1 if rounded else 8)  # tied risks too
    horizon, tau = float(np.median(day)), float(np.quantile(day, 0.8))
    brier_days = np.unique(np.r_[np.linspace(day.min(), horizon, 6), horizon])
    survival = np.exp(-np.outer(np.exp(risk), brier_days / 800))
    weights = CensoringWeights(train, day, event)
    undefined = 0
    for rows in rng.integers(0, day.size, size=(150, day.size)):
        test = Surv.from_arrays(event=event[rows], time=day[rows])
        pairs = [
            (sksurv_or_error(lambda: concordance_index_ipcw(train, test, risk[rows], tau=tau)[0]),
             ours_or_error(weights.uno_c, rows, risk, tau)),
            (sksurv_or_error(lambda: cumulative_dynamic_auc(train, test, risk[rows], [horizon])[0][0]),
             ours_or_error(weights.dynamic_auc, rows, risk, horizon)),
            (sksurv_or_error(lambda: integrated_brier_score(train, test, survival[rows], brier_days)),
             ours_or_error(weights.integrated_brier, rows, survival, brier_days)),
        ]
        for expected, got in pairs:
            if isinstance(expected, str) or not np.isfinite(expected):
                undefined += 1
                assert got == "undefined"
            else:
                assert got == pytest.approx(expected, abs=TOLERANCE)
    assert undefined > 0  # the undefined cases were exercised, not only the easy ones


def test_site_intervals_are_those_of_the_per_resample_refit():
    """The old bootstrap re-fitted the censoring distribution in every resample; same seed, same intervals."""
    train_day, train_event = outcomes(400, 5, rounded=True)
    day, event = outcomes(200, 6, rounded=True)
    grid = np.arange(30.0, 1530.0, 30.0)
    hazard = np.random.default_rng(7).uniform(0.002, 0.03, (day.size, 1))
    curve = np.exp(-hazard * grid[None, :])
    settings = EvaluationSettings(n_bootstrap=60, horizons_days=[365.0])
    evaluation = evaluate_survival("pfs", curve, grid, day, event, train_day, train_event, settings,
                                   np.random.default_rng(11))

    # the old statistics, drawn from the same generator in the same order as evaluate_survival draws them
    limit = min(day.max(), train_day.max())
    late = day >= limit
    truncated = Surv.from_arrays(event=event & ~late, time=np.where(late, limit, day))
    train = Surv.from_arrays(event=train_event, time=train_day)
    horizon = evaluation.horizons[0].evaluated_days
    risk_at = 1 - survival_at(curve, grid, [horizon])[:, 0]
    brier_days = np.unique(np.r_[grid[(grid >= day.min()) & (grid < horizon)], horizon])
    survival = survival_at(curve, grid, brier_days)
    risk = risk_score(curve, grid)
    rng = np.random.default_rng(11)
    old_auc = bootstrap_interval(lambda r: cumulative_dynamic_auc(train, truncated[r], risk_at[r], [horizon])[0][0],
                                 len(day), rng, 60, 0.95)
    old_brier = bootstrap_interval(lambda r: integrated_brier_score(train, truncated[r], survival[r], brier_days),
                                   len(day), rng, 60, 0.95)
    rng.integers(0, len(day), size=(60, len(day)))  # Harrell's C draws next
    old_uno = bootstrap_interval(lambda r: concordance_index_ipcw(train, truncated[r], risk[r],
                                                                  tau=evaluation.uno_tau_days)[0],
                                 len(day), rng, 60, 0.95)
    for old, new in ((old_auc, evaluation.horizons[0].auc), (old_brier, evaluation.horizons[0].integrated_brier),
                     (old_uno, evaluation.uno_c)):
        assert (new.lower, new.upper) == pytest.approx((old[0][0], old[1][0]), abs=TOLERANCE)
