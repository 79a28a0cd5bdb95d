"""Figures of the survival outputs (PFS, OS): Harrell's and Uno's C, time-dependent AUC, Brier at horizons, Kaplan–Meier by risk group."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sksurv.compare import compare_survival
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from shared.ipcw import CensoringWeights
from shared.metrics.estimates import _bootstrapped, harrell_c_value, suppress_small_cells
from shared.metrics.results import Curve, Estimate, EvaluationSettings, HorizonEvaluation, KaplanMeierByRisk, KaplanMeierGroup, SurvivalEvaluation


def _check_survival(survival: np.ndarray, time_grid_days: np.ndarray, days: np.ndarray,
                    event: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    curve = np.asarray(survival, dtype=float)
    grid = np.asarray(time_grid_days, dtype=float)
    time = np.asarray(days, dtype=float)
    happened = np.asarray(event, dtype=bool)
    if curve.ndim != 2 or curve.shape != (time.shape[0], grid.shape[0]) or happened.shape != time.shape:
        raise ValueError(f"survival {curve.shape} must be (n, K) with days/event (n,) = {time.shape}/"
                         f"{happened.shape} and time_grid_days (K,) = {grid.shape}")
    return curve, grid, time, happened


def restricted_mean_survival_days(survival: np.ndarray, time_grid_days: np.ndarray) -> np.ndarray:
    """Area under each patient's survival curve from day 0 to the last grid day (S(0) = 1, trapezoids)."""
    grid = np.asarray(time_grid_days, dtype=float)
    curve = np.asarray(survival, dtype=float)
    if grid[0] > 0:
        grid = np.r_[0.0, grid]
        curve = np.c_[np.ones(curve.shape[0]), curve]
    return np.trapezoid(curve, grid, axis=1)


def risk_score(survival: np.ndarray, time_grid_days: np.ndarray) -> np.ndarray:
    """The risk score for concordance: minus the restricted mean survival time (higher = worse prognosis)."""
    return -restricted_mean_survival_days(survival, time_grid_days)


def survival_at(survival: np.ndarray, time_grid_days: np.ndarray, days: Sequence[float] | np.ndarray) -> np.ndarray:
    """Each patient's survival at given days, linear between grid days, S(0) = 1, flat after the last."""
    grid = np.r_[0.0, np.asarray(time_grid_days, dtype=float)]
    curve = np.c_[np.ones(survival.shape[0]), np.asarray(survival, dtype=float)]
    wanted = np.asarray(days, dtype=float)
    return np.vstack([np.interp(wanted, grid, row) for row in curve])


def harrell_c(survival: np.ndarray, time_grid_days: np.ndarray, days: np.ndarray, event: np.ndarray,
              settings: EvaluationSettings, rng: np.random.Generator) -> Estimate:
    """Harrell's concordance index of the risk score (share of comparable pairs ordered correctly)."""
    curve, grid, time, happened = _check_survival(survival, time_grid_days, days, event)
    if (blank := suppress_small_cells(len(time), int(happened.sum()), settings.min_cell_size)):
        return blank
    risk = risk_score(curve, grid)
    return _bootstrapped(lambda rows: harrell_c_value(happened[rows], time[rows], risk[rows]),
                         len(time), int(happened.sum()), settings, rng)


def _follow_up_limit(test_days: np.ndarray, train_days: np.ndarray) -> float:
    """IPCW figures are defined only before the end of both the test and the training follow-up."""
    return float(min(test_days.max(), train_days.max()))


def _truncate(time: np.ndarray, happened: np.ndarray, limit: float) -> np.ndarray:
    """Test outcomes administratively censored at the follow-up limit, as a sksurv structured array."""
    late = time >= limit
    return Surv.from_arrays(event=happened & ~late, time=np.where(late, limit, time))


def _horizon(requested: float, test_days: np.ndarray, limit: float) -> tuple[float | None, str | None]:
    """The day a horizon is evaluated at, clipped to the follow-up available, and why if it moved."""
    if requested < test_days.min():
        return None, f"{requested:,.0f} days is before the first follow-up time ({test_days.min():,.0f} days)"
    if requested < limit:
        return float(requested), None
    earlier = test_days[test_days < limit]
    if earlier.size == 0:
        return None, "no follow-up time before the end of follow-up"
    clipped = float(earlier.max())
    return clipped, (f"clipped from {requested:,.0f} to {clipped:,.0f} days: follow-up ends at {limit:,.0f} days "
                     f"(figures are constant between observed times, so this is the value at the end of "
                     f"follow-up)")


def uno_c(survival: np.ndarray, time_grid_days: np.ndarray, days: np.ndarray, event: np.ndarray,
          train_days: np.ndarray, train_event: np.ndarray, tau_days: float, settings: EvaluationSettings,
          rng: np.random.Generator, weights: CensoringWeights | None = None) -> Estimate:
    """Uno's concordance truncated at tau, weighted by the training split's censoring distribution."""
    curve, grid, time, happened = _check_survival(survival, time_grid_days, days, event)
    if (blank := suppress_small_cells(len(time), int(happened.sum()), settings.min_cell_size)):
        return blank
    risk = risk_score(curve, grid)
    if weights is None:
        train = Surv.from_arrays(event=np.asarray(train_event, dtype=bool),
                                 time=np.asarray(train_days, dtype=float))
        weights = _censoring_weights(train, time, happened, _follow_up_limit(time, np.asarray(train_days, float)))
    return _bootstrapped(lambda rows: weights.uno_c(rows, risk, tau_days), len(time), int(happened.sum()),
                         settings, rng, note=f"truncated at {tau_days:,.0f} days")


def _censoring_weights(train: np.ndarray, time: np.ndarray, happened: np.ndarray, limit: float) -> CensoringWeights:
    """The censoring Kaplan–Meier of the training split, fitted once for every resample of these test patients."""
    test = _truncate(time, happened, limit)
    return CensoringWeights(train, test["time"], test["event"])


def _horizon_figures(curve: np.ndarray, grid: np.ndarray, time: np.ndarray, happened: np.ndarray,
                     weights: CensoringWeights, horizon: float, settings: EvaluationSettings,
                     rng: np.random.Generator, note: str | None) -> tuple[Estimate, Estimate]:
    cases = int(np.sum(happened & (time <= horizon)))
    controls = int(np.sum(time > horizon))
    blank = suppress_small_cells(cases + controls, cases, settings.min_cell_size, what="events by the horizon")
    if blank:
        return blank, blank
    risk_by_horizon = 1 - survival_at(curve, grid, [horizon])[:, 0]
    brier_days = np.unique(np.r_[grid[(grid >= time.min()) & (grid < horizon)], horizon])
    if brier_days.size < 2:
        brier_days = np.r_[time.min(), horizon]
    survival_for_brier = survival_at(curve, grid, brier_days)
    auc_estimate = _bootstrapped(lambda rows: weights.dynamic_auc(rows, risk_by_horizon, horizon), len(time), cases,
                                 settings, rng, note=note)
    brier_estimate = _bootstrapped(lambda rows: weights.integrated_brier(rows, survival_for_brier, brier_days),
                                   len(time), cases, settings, rng,
                                   note=f"from {brier_days[0]:,.0f} to {horizon:,.0f} days")
    return auc_estimate, brier_estimate


def evaluate_survival(endpoint: str, survival: np.ndarray, time_grid_days: np.ndarray, days: np.ndarray,
                      event: np.ndarray, train_days: np.ndarray, train_event: np.ndarray,
                      settings: EvaluationSettings, rng: np.random.Generator) -> SurvivalEvaluation:
    """Harrell's and Uno's C, time-dependent AUC and integrated Brier at each horizon, KM by risk tertile.

    IPCW figures use the censoring distribution of the site's training split (sksurv's `survival_train`).
    """
    curve, grid, time, happened = _check_survival(survival, time_grid_days, days, event)
    train_time = np.asarray(train_days, dtype=float)
    train_happened = np.asarray(train_event, dtype=bool)
    small = suppress_small_cells(len(time), int(happened.sum()), settings.min_cell_size)
    if small or train_time.size == 0:
        blank = small or Estimate(value=None, suppressed=True, note="no training outcomes for IPCW")
        horizons = [HorizonEvaluation(requested_days=h, evaluated_days=None, note=blank.note, auc=blank,
                                      integrated_brier=blank) for h in settings.horizons_days]
        return SurvivalEvaluation(endpoint=endpoint, n=None if small else len(time),
                                  events=None if small else int(happened.sum()),
                                  harrell_c=harrell_c(curve, grid, time, happened, settings, rng),
                                  uno_c=blank, uno_tau_days=None, horizons=horizons, kaplan_meier=None)
    train = Surv.from_arrays(event=train_happened, time=train_time)
    limit = _follow_up_limit(time, train_time)
    weights = _censoring_weights(train, time, happened, limit)  # one censoring fit for every figure and resample
    horizons: list[HorizonEvaluation] = []
    evaluated: list[float] = []
    for requested in settings.horizons_days:
        day, note = _horizon(requested, time, limit)
        if day is None:
            blank = Estimate(value=None, note=note)
            horizons.append(HorizonEvaluation(requested_days=requested, evaluated_days=None, note=note,
                                              auc=blank, integrated_brier=blank))
            continue
        auc, brier = _horizon_figures(curve, grid, time, happened, weights, day, settings, rng, note)
        horizons.append(HorizonEvaluation(requested_days=requested, evaluated_days=day, note=note, auc=auc,
                                          integrated_brier=brier))
        evaluated.append(day)
    tau = max(evaluated) if evaluated else float(time[time < limit].max(initial=limit))
    return SurvivalEvaluation(
        endpoint=endpoint, n=len(time), events=int(happened.sum()),
        harrell_c=harrell_c(curve, grid, time, happened, settings, rng),
        uno_c=uno_c(curve, grid, time, happened, train_time, train_happened, tau, settings, rng, weights),
        uno_tau_days=tau, horizons=horizons,
        kaplan_meier=kaplan_meier_by_risk(curve, grid, time, happened, settings))


def kaplan_meier_by_risk(survival: np.ndarray, time_grid_days: np.ndarray, days: np.ndarray, event: np.ndarray,
                         settings: EvaluationSettings) -> KaplanMeierByRisk:
    """Kaplan–Meier curves (log-log 95% band) of the observed outcome in tertiles of predicted risk, log-rank p."""
    curve, grid, time, happened = _check_survival(survival, time_grid_days, days, event)
    risk = risk_score(curve, grid)
    cuts = np.quantile(risk, [1 / 3, 2 / 3])
    tertile = np.digitize(risk, cuts, right=True)
    labels = ("Low predicted risk", "Intermediate predicted risk", "High predicted risk")
    groups: list[KaplanMeierGroup] = []
    for index, label in enumerate(labels):
        rows = tertile == index
        if suppress_small_cells(int(rows.sum()), int(happened[rows].sum()), settings.min_cell_size):
            groups.append(KaplanMeierGroup(label=label, n=None, events=None, curve=None))
            continue
        km_days, km_survival, band = kaplan_meier_estimator(happened[rows], time[rows], conf_type="log-log")
        groups.append(KaplanMeierGroup(
            label=label, n=int(rows.sum()), events=int(happened[rows].sum()),
            curve=Curve(x=np.r_[0.0, km_days].tolist(), y=np.r_[1.0, km_survival].tolist()),
            lower=np.r_[1.0, band[0]].tolist(), upper=np.r_[1.0, band[1]].tolist()))
    shown = [g for g in groups if g.curve is not None]
    if len(shown) < len(groups) or len(np.unique(tertile)) < 3:
        return KaplanMeierByRisk(groups=groups, logrank_p=None,
                                 note=f"a risk group has fewer than {settings.min_cell_size} patients or events")
    _, p_value = compare_survival(Surv.from_arrays(event=happened, time=time), tertile)
    return KaplanMeierByRisk(groups=groups, logrank_p=float(p_value))
