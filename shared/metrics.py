"""How well predictions agree with what happened to a site's patients: every figure with its interval and count.

Pure functions over numpy arrays. Each figure carries a percentile bootstrap interval (seeded Generator passed
in, no global RNG) and the counts it rests on; a figure resting on fewer than `min_cell_size` patients, events
or non-events is suppressed — never computed, never sent (`suppress_small_cells` is the one place that decides).

Libraries do the statistics: scikit-learn (AUC, balanced accuracy, Brier, calibration curve, ROC),
scikit-survival (Harrell's and Uno's C, cumulative/dynamic AUC, integrated Brier, Kaplan–Meier, log-rank),
scipy (calibration intercept root). Hand-written, because no kept library offers them: decision-curve net
benefit, and the DerSimonian–Laird random-effects meta-analysis (no meta-analysis package is installed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import optimize, special, stats
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_curve
from sksurv.compare import compare_survival
from sksurv.nonparametric import kaplan_meier_estimator
from sksurv.util import Surv

from shared.contract import MODALITY_FIELDS
from shared.ipcw import CensoringWeights

MIN_CELL_SIZE = 10
ENDPOINTS: tuple[str, ...] = ("pfs", "os")
ENDPOINT_NAMES: dict[str, str] = {"pfs": "Progression-free survival", "os": "Overall survival"}
RESPONDER_CODES = frozenset({"CR", "PR"})


# ----------------------------------------------------------------------------------------------------------
# Settings and result models
# ----------------------------------------------------------------------------------------------------------

class EvaluationSettings(BaseModel):
    """How a site is evaluated; the defaults are the ones the consortium reports with."""

    model_config = ConfigDict(frozen=True)

    min_cell_size: int = Field(default=MIN_CELL_SIZE, ge=1,
                               description="fewer patients, events or non-events than this: figure suppressed")
    n_bootstrap: int = Field(default=500, ge=20, description="bootstrap resamples per interval")
    confidence: float = Field(default=0.95, gt=0, lt=1)
    response_threshold: float = Field(default=0.5, gt=0, lt=1,
                                      description="predicted response probability at which a patient is "
                                                  "called a responder (balanced accuracy)")
    horizons_days: tuple[float, ...] = Field(default=(365.0, 730.0, 1095.0),
                                             description="1, 2 and 3 years")
    calibration_bins: int = Field(default=10, ge=2)
    decision_thresholds: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.96, 0.01), 2).tolist())


class Estimate(BaseModel):
    """One figure, its interval and the counts it rests on; all None when the cell is suppressed.

    `events` counts responders for response figures and progressions/deaths (or cases by the horizon) for
    survival figures.
    """

    model_config = ConfigDict(frozen=True)

    value: float | None
    lower: float | None = None
    upper: float | None = None
    n: int | None = None
    events: int | None = None
    suppressed: bool = False
    note: str | None = None

    @property
    def available(self) -> bool:
        return self.value is not None and not self.suppressed

    def standard_error(self, scale: Literal["identity", "logit"] = "identity",
                       confidence: float = 0.95) -> float | None:
        """Standard error implied by the interval (normal approximation), for meta-analysis."""
        if not self.available or self.lower is None or self.upper is None:
            return None
        z = stats.norm.ppf(0.5 + confidence / 2)
        lower, upper = _to_scale(self.lower, scale), _to_scale(self.upper, scale)
        spread = (upper - lower) / (2 * z)
        return float(spread) if spread > 0 else None


class Curve(BaseModel):
    """Points of a curve (ROC, calibration, net benefit, survival) ready to plot."""

    x: list[float]
    y: list[float]


class CalibrationCurve(BaseModel):
    predicted: list[float] = Field(description="mean predicted probability per bin")
    observed: list[float] = Field(description="observed response rate per bin")
    bins: int = Field(description="quantile bins, each holding at least the minimum cell size")


class DecisionCurve(BaseModel):
    """Net benefit of acting on the prediction at each threshold probability, with treat-all for reference."""

    thresholds: list[float]
    net_benefit: list[float]
    treat_all: list[float]


class ResponseEvaluation(BaseModel):
    n: int | None
    responders: int | None
    auc: Estimate
    balanced_accuracy: Estimate
    threshold: float
    brier: Estimate
    calibration_slope: Estimate
    calibration_intercept: Estimate
    roc: Curve | None = None
    calibration: CalibrationCurve | None = None
    decision_curve: DecisionCurve | None = None


class HorizonEvaluation(BaseModel):
    """Time-dependent AUC at a horizon and integrated Brier score up to it."""

    requested_days: float
    evaluated_days: float | None
    note: str | None = None
    auc: Estimate
    integrated_brier: Estimate


class KaplanMeierGroup(BaseModel):
    label: str
    n: int | None
    events: int | None
    curve: Curve | None
    lower: list[float] | None = None
    upper: list[float] | None = None


class KaplanMeierByRisk(BaseModel):
    groups: list[KaplanMeierGroup]
    logrank_p: float | None
    note: str | None = None


class SurvivalEvaluation(BaseModel):
    endpoint: str
    n: int | None
    events: int | None
    harrell_c: Estimate
    uno_c: Estimate
    uno_tau_days: float | None
    horizons: list[HorizonEvaluation]
    kaplan_meier: KaplanMeierByRisk | None = None


class PredictionEvaluation(BaseModel):
    """Every figure for one set of predictions (the model's or a baseline's) on a site's test patients."""

    response: ResponseEvaluation
    survival: dict[str, SurvivalEvaluation]


class Comparison(BaseModel):
    """The model against a baseline on the same patients: paired-bootstrap difference and relative change."""

    metric: str
    model: Estimate
    baseline: Estimate
    difference: Estimate
    relative_improvement_percent: float | None


class SubgroupEvaluation(BaseModel):
    group: str
    level: str
    n: int | None
    response_auc: Estimate
    response_brier: Estimate
    pfs_harrell_c: Estimate
    os_harrell_c: Estimate


class MetaAnalysis(BaseModel):
    """DerSimonian–Laird random-effects summary of per-site figures."""

    pooled: float
    lower: float
    upper: float
    tau2: float = Field(description="between-site variance (on the pooling scale)")
    i2_percent: float = Field(description="share of variability due to between-site heterogeneity")
    q: float
    q_p_value: float | None
    sites: int
    scale: str = "identity"
    weights: list[float | None] = Field(description="random-effects weights in percent, in input order; None for "
                                                    "a site left out (figure suppressed or without interval)")


# ----------------------------------------------------------------------------------------------------------
# Inputs: predictions in the model's interface
# ----------------------------------------------------------------------------------------------------------

class OutcomePredictions(BaseModel):
    """Predictions for the rows of a site's test table, in the model's output interface.

    Baselines return the same shape, so every metric applies identically. Rows align with the test table;
    patients without a known outcome are dropped per endpoint at evaluation.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    response_prob: np.ndarray = Field(description="(n,) probability of response (CR or PR)")
    pfs_survival: np.ndarray = Field(description="(n, K) progression-free survival S(t_k)")
    os_survival: np.ndarray = Field(description="(n, K) overall survival S(t_k)")
    time_grid_days: np.ndarray = Field(description="(K,) increasing days at which survival is given")

    @field_validator("response_prob", "pfs_survival", "os_survival", "time_grid_days", mode="before")
    @classmethod
    def _as_float_array(cls, value: object) -> np.ndarray:
        return np.asarray(value, dtype=float)

    @model_validator(mode="after")
    def _shapes(self) -> OutcomePredictions:
        grid, n = self.time_grid_days, self.response_prob.shape[0]
        if self.response_prob.ndim != 1:
            raise ValueError("response_prob must be one probability per patient, shape (n,)")
        if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) <= 0) or grid[0] < 0:
            raise ValueError("time_grid_days must be a non-empty, strictly increasing array of days >= 0")
        for name in ("pfs_survival", "os_survival"):
            curve = getattr(self, name)
            if curve.shape != (n, grid.size):
                raise ValueError(f"{name} has shape {curve.shape}; expected (n patients, len(time_grid_days)) "
                                 f"= ({n}, {grid.size})")
        for name in ("response_prob", "pfs_survival", "os_survival"):
            values = getattr(self, name)
            if not np.all(np.isfinite(values)) or values.min(initial=0) < 0 or values.max(initial=0) > 1:
                raise ValueError(f"{name} must hold probabilities in [0, 1] with no NaN")
        return self

    def survival(self, endpoint: str) -> np.ndarray:
        return self.pfs_survival if endpoint == "pfs" else self.os_survival

    def subset(self, rows: np.ndarray) -> OutcomePredictions:
        return OutcomePredictions(response_prob=self.response_prob[rows], pfs_survival=self.pfs_survival[rows],
                                  os_survival=self.os_survival[rows], time_grid_days=self.time_grid_days)


# ----------------------------------------------------------------------------------------------------------
# Small cells, bootstrap, scales
# ----------------------------------------------------------------------------------------------------------

def suppress_small_cells(n: int, events: int, min_cell_size: int = MIN_CELL_SIZE, *,
                         what: str = "events") -> Estimate | None:
    """The one rule for small cells: a suppressed Estimate if n, events or non-events < min_cell_size, else None.

    Counts of a suppressed cell are not reported either (a count of 3 is itself disclosive).
    """
    if n < min_cell_size:
        return Estimate(value=None, suppressed=True, note=f"fewer than {min_cell_size} patients")
    if events < min_cell_size:
        return Estimate(value=None, suppressed=True, note=f"fewer than {min_cell_size} {what}")
    if n - events < min_cell_size:
        return Estimate(value=None, suppressed=True, note=f"fewer than {min_cell_size} patients without {what}")
    return None


def bootstrap_interval(statistic: Callable[[np.ndarray], float | np.ndarray], n: int, rng: np.random.Generator,
                       n_bootstrap: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of a statistic of patient indices (scalar or vector valued).

    Resamples where the statistic is undefined (one class only, horizon outside follow-up) are dropped; a
    component with fewer than half of the resamples defined gets no interval (NaN).
    """
    resamples = rng.integers(0, n, size=(n_bootstrap, n))
    values: list[np.ndarray] = []
    for rows in resamples:
        try:
            values.append(np.atleast_1d(np.asarray(statistic(rows), dtype=float)))
        except (ValueError, ZeroDivisionError, FloatingPointError):
            continue
    if not values:
        return np.array([np.nan]), np.array([np.nan])
    table = np.vstack(values)
    defined = np.sum(np.isfinite(table), axis=0)
    alpha = (1 - confidence) / 2
    with np.errstate(all="ignore"):
        lower = np.nanquantile(np.where(np.isfinite(table), table, np.nan), alpha, axis=0)
        upper = np.nanquantile(np.where(np.isfinite(table), table, np.nan), 1 - alpha, axis=0)
    enough = defined >= n_bootstrap / 2
    return np.where(enough, lower, np.nan), np.where(enough, upper, np.nan)


def roc_auc(responder: np.ndarray, response_prob: np.ndarray) -> float:
    """ROC AUC as the Mann–Whitney rank statistic (ties count ½): equals sklearn's roc_auc_score.

    Used inside the bootstrap, where roc_auc_score's own input checks cost more than the figure itself.
    """
    positive = np.asarray(responder, dtype=bool)
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        raise ValueError("AUC is undefined with only one class present")
    ranks = stats.rankdata(response_prob)
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def harrell_c_value(event: np.ndarray, time: np.ndarray, risk: np.ndarray, tied_tol: float = 1e-8) -> float:
    """Harrell's C exactly as sksurv's concordance_index_censored counts it, over all pairs at once.

    A pair (i, j) is comparable when i had the event and either i's time is earlier, or the times tie and j
    is censored; it is concordant when i has the higher risk, and counts ½ when the risks tie.
    """
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=float)
    risk = np.asarray(risk, dtype=float)
    if not event.any():
        raise ValueError("all samples are censored")
    earlier = time[:, None] < time[None, :]
    tied_censored = (time[:, None] == time[None, :]) & ~event[None, :]
    comparable = event[:, None] & (earlier | tied_censored)
    total = comparable.sum()
    if total == 0:
        raise ZeroDivisionError("no comparable pairs")
    difference = risk[:, None] - risk[None, :]
    tied = np.abs(difference) <= tied_tol
    concordant = (comparable & (difference > 0) & ~tied).sum() + 0.5 * (comparable & tied).sum()
    return float(concordant / total)


def _estimate(value: float, lower: float, upper: float, n: int, events: int | None,
              note: str | None = None) -> Estimate:
    finite = np.isfinite(lower) and np.isfinite(upper)
    return Estimate(value=float(value), lower=float(lower) if finite else None,
                    upper=float(upper) if finite else None, n=int(n),
                    events=None if events is None else int(events),
                    note=note if finite else (note or "bootstrap interval undefined on too many resamples"))


def _bootstrapped(statistic: Callable[[np.ndarray], float], n: int, events: int | None,
                  settings: EvaluationSettings, rng: np.random.Generator, note: str | None = None) -> Estimate:
    everyone = np.arange(n)
    value = statistic(everyone)
    lower, upper = bootstrap_interval(statistic, n, rng, settings.n_bootstrap, settings.confidence)
    return _estimate(value, lower[0], upper[0], n, events, note)


def _to_scale(value: float, scale: str) -> float:
    if scale == "logit":
        clipped = min(max(value, 1e-6), 1 - 1e-6)
        return float(special.logit(clipped))
    return float(value)


def _from_scale(value: float, scale: str) -> float:
    return float(special.expit(value)) if scale == "logit" else float(value)


# ----------------------------------------------------------------------------------------------------------
# Response
# ----------------------------------------------------------------------------------------------------------

def _check_response(response_prob: np.ndarray, responder: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probability = np.asarray(response_prob, dtype=float)
    outcome = np.asarray(responder, dtype=bool)
    if probability.shape != outcome.shape or probability.ndim != 1:
        raise ValueError(f"response_prob {probability.shape} and responder {outcome.shape} must both be (n,); "
                         f"drop patients with unknown best_response first")
    return probability, outcome


def response_auc(response_prob: np.ndarray, responder: np.ndarray, settings: EvaluationSettings,
                 rng: np.random.Generator) -> Estimate:
    """Area under the ROC curve for response (CR/PR) vs no response."""
    p, y = _check_response(response_prob, responder)
    if (blank := suppress_small_cells(len(y), int(y.sum()), settings.min_cell_size, what="responders")):
        return blank
    return _bootstrapped(lambda rows: roc_auc(y[rows], p[rows]), len(y), int(y.sum()), settings, rng)


def response_balanced_accuracy(response_prob: np.ndarray, responder: np.ndarray, settings: EvaluationSettings,
                               rng: np.random.Generator) -> Estimate:
    """Mean of sensitivity and specificity when patients at or above the threshold are called responders."""
    p, y = _check_response(response_prob, responder)
    if (blank := suppress_small_cells(len(y), int(y.sum()), settings.min_cell_size, what="responders")):
        return blank
    called = p >= settings.response_threshold
    return _bootstrapped(lambda rows: balanced_accuracy_score(y[rows], called[rows]), len(y), int(y.sum()),
                         settings, rng, note=f"threshold {settings.response_threshold:.2f}")


def response_brier(response_prob: np.ndarray, responder: np.ndarray, settings: EvaluationSettings,
                   rng: np.random.Generator) -> Estimate:
    """Mean squared error of the response probability (lower is better)."""
    p, y = _check_response(response_prob, responder)
    if (blank := suppress_small_cells(len(y), int(y.sum()), settings.min_cell_size, what="responders")):
        return blank
    return _bootstrapped(lambda rows: float(np.mean((p[rows] - y[rows]) ** 2)), len(y), int(y.sum()),
                        settings, rng)


def _logit(p: np.ndarray) -> np.ndarray:
    return special.logit(np.clip(p, 1e-6, 1 - 1e-6))


def calibration_slope_value(response_prob: np.ndarray, responder: np.ndarray) -> float:
    """Slope of logistic recalibration logit P(y) = a + b·logit(p): 1 is ideal, < 1 means too extreme."""
    lp = _logit(np.asarray(response_prob, dtype=float))
    y = np.asarray(responder, dtype=bool)
    if y.all() or not y.any():
        raise ValueError("calibration slope needs responders and non-responders")
    fit = LogisticRegression(C=np.inf, max_iter=1000).fit(lp[:, None], y)
    return float(fit.coef_[0, 0])


def calibration_intercept_value(response_prob: np.ndarray, responder: np.ndarray) -> float:
    """Calibration-in-the-large: a in logit P(y) = a + logit(p) (slope fixed at 1); 0 is ideal, > 0 = under-predicts.

    The maximum-likelihood a solves sum(y - expit(a + lp)) = 0, a one-dimensional root (scipy).
    """
    lp = _logit(np.asarray(response_prob, dtype=float))
    y = np.asarray(responder, dtype=float)
    if y.all() or not y.any():
        raise ValueError("calibration intercept needs responders and non-responders")
    return float(optimize.brentq(lambda a: float(np.sum(y - special.expit(a + lp))), -30.0, 30.0))


def response_calibration(response_prob: np.ndarray, responder: np.ndarray, settings: EvaluationSettings,
                         rng: np.random.Generator) -> tuple[Estimate, Estimate]:
    """Calibration slope and intercept, each with its bootstrap interval."""
    p, y = _check_response(response_prob, responder)
    if (blank := suppress_small_cells(len(y), int(y.sum()), settings.min_cell_size, what="responders")):
        return blank, blank
    events = int(y.sum())
    slope = _bootstrapped(lambda rows: calibration_slope_value(p[rows], y[rows]), len(y), events, settings, rng)
    intercept = _bootstrapped(lambda rows: calibration_intercept_value(p[rows], y[rows]), len(y), events,
                              settings, rng)
    return slope, intercept


def response_calibration_curve(response_prob: np.ndarray, responder: np.ndarray,
                               settings: EvaluationSettings) -> CalibrationCurve | None:
    """Observed vs predicted response by quantile bin, with no bin smaller than the minimum cell size."""
    p, y = _check_response(response_prob, responder)
    if suppress_small_cells(len(y), int(y.sum()), settings.min_cell_size, what="responders"):
        return None
    bins = max(2, min(settings.calibration_bins, len(y) // settings.min_cell_size))
    observed, predicted = calibration_curve(y, p, n_bins=bins, strategy="quantile")
    return CalibrationCurve(predicted=predicted.tolist(), observed=observed.tolist(), bins=len(observed))


def response_roc(response_prob: np.ndarray, responder: np.ndarray, settings: EvaluationSettings) -> Curve | None:
    p, y = _check_response(response_prob, responder)
    if suppress_small_cells(len(y), int(y.sum()), settings.min_cell_size, what="responders"):
        return None
    fpr, tpr, _ = roc_curve(y, p)
    return Curve(x=fpr.tolist(), y=tpr.tolist())


def net_benefit(response_prob: np.ndarray, responder: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """Decision-curve net benefit TP/n − FP/n · t/(1−t) at each threshold t (Vickers & Elkin 2006).

    Hand-written: no kept library offers decision curves.
    """
    p, y = _check_response(response_prob, responder)
    t = np.asarray(thresholds, dtype=float)
    acted = p[None, :] >= t[:, None]
    true_positive = np.sum(acted & y[None, :], axis=1) / len(y)
    false_positive = np.sum(acted & ~y[None, :], axis=1) / len(y)
    return true_positive - false_positive * t / (1 - t)


def response_decision_curve(response_prob: np.ndarray, responder: np.ndarray,
                            settings: EvaluationSettings) -> DecisionCurve | None:
    p, y = _check_response(response_prob, responder)
    if suppress_small_cells(len(y), int(y.sum()), settings.min_cell_size, what="responders"):
        return None
    thresholds = np.asarray(settings.decision_thresholds, dtype=float)
    treat_all = net_benefit(np.ones_like(p), y, thresholds)
    return DecisionCurve(thresholds=thresholds.tolist(), net_benefit=net_benefit(p, y, thresholds).tolist(),
                         treat_all=treat_all.tolist())


def evaluate_response(response_prob: np.ndarray, responder: np.ndarray, settings: EvaluationSettings,
                      rng: np.random.Generator) -> ResponseEvaluation:
    """Discrimination, accuracy, calibration and decision curve for response."""
    p, y = _check_response(response_prob, responder)
    small = suppress_small_cells(len(y), int(y.sum()), settings.min_cell_size, what="responders")
    slope, intercept = response_calibration(p, y, settings, rng)
    return ResponseEvaluation(
        n=None if small else len(y), responders=None if small else int(y.sum()),
        auc=response_auc(p, y, settings, rng), balanced_accuracy=response_balanced_accuracy(p, y, settings, rng),
        threshold=settings.response_threshold, brier=response_brier(p, y, settings, rng),
        calibration_slope=slope, calibration_intercept=intercept, roc=response_roc(p, y, settings),
        calibration=response_calibration_curve(p, y, settings),
        decision_curve=response_decision_curve(p, y, settings))


# ----------------------------------------------------------------------------------------------------------
# Survival (PFS, OS)
# ----------------------------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------------------------
# Whole evaluation of a prediction set on a site's test table
# ----------------------------------------------------------------------------------------------------------

def responder_labels(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(known, responder): which rows have a best_response, and whether it is CR or PR."""
    response = frame["best_response"].map(lambda v: getattr(v, "value", v))
    known = response.notna().to_numpy()
    return known, response.isin(RESPONDER_CODES).to_numpy() & known


def survival_outcomes(frame: pd.DataFrame, endpoint: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(known, days, event) of an endpoint; rows without follow-up are not known."""
    days = pd.to_numeric(frame[f"{endpoint}_days"], errors="coerce")
    event = frame[f"{endpoint}_event"]
    known = (days.notna() & event.notna()).to_numpy()
    return known, days.fillna(0).to_numpy(dtype=float), event.fillna(False).astype(bool).to_numpy()


def evaluate_predictions(test_frame: pd.DataFrame, predictions: OutcomePredictions, train_frame: pd.DataFrame,
                         settings: EvaluationSettings, rng: np.random.Generator) -> PredictionEvaluation:
    """All figures of one prediction set; rows of `test_frame` align with `predictions`."""
    if len(test_frame) != predictions.response_prob.shape[0]:
        raise ValueError(f"the test table has {len(test_frame)} rows but predictions cover "
                         f"{predictions.response_prob.shape[0]} patients; predict every test row in order")
    known, responder = responder_labels(test_frame)
    response = evaluate_response(predictions.response_prob[known], responder[known], settings, rng)
    survival: dict[str, SurvivalEvaluation] = {}
    for endpoint in ENDPOINTS:
        rows, days, event = survival_outcomes(test_frame, endpoint)
        train_rows, train_days, train_event = survival_outcomes(train_frame, endpoint)
        survival[endpoint] = evaluate_survival(
            endpoint, predictions.survival(endpoint)[rows], predictions.time_grid_days, days[rows], event[rows],
            train_days[train_rows], train_event[train_rows], settings, rng)
    return PredictionEvaluation(response=response, survival=survival)


def compare_with_baseline(test_frame: pd.DataFrame, model: OutcomePredictions, baseline: OutcomePredictions,
                          model_evaluation: PredictionEvaluation, baseline_evaluation: PredictionEvaluation,
                          settings: EvaluationSettings, rng: np.random.Generator) -> list[Comparison]:
    """The model minus the baseline (response AUC, PFS and OS Harrell's C) on the same resampled patients."""
    comparisons: list[Comparison] = []
    known, responder = responder_labels(test_frame)
    y, p_model, p_base = responder[known], model.response_prob[known], baseline.response_prob[known]
    comparisons.append(_paired(
        "Response AUC", model_evaluation.response.auc, baseline_evaluation.response.auc,
        lambda rows: roc_auc(y[rows], p_model[rows]) - roc_auc(y[rows], p_base[rows]),
        len(y), int(y.sum()), settings, rng))
    for endpoint in ENDPOINTS:
        rows_known, days, event = survival_outcomes(test_frame, endpoint)
        time, happened = days[rows_known], event[rows_known]
        risk_model = risk_score(model.survival(endpoint)[rows_known], model.time_grid_days)
        risk_base = risk_score(baseline.survival(endpoint)[rows_known], baseline.time_grid_days)

        def difference(rows: np.ndarray, a: np.ndarray = risk_model, b: np.ndarray = risk_base,
                       t: np.ndarray = time, e: np.ndarray = happened) -> float:
            return harrell_c_value(e[rows], t[rows], a[rows]) - harrell_c_value(e[rows], t[rows], b[rows])

        comparisons.append(_paired(
            f"{endpoint.upper()} Harrell's C", model_evaluation.survival[endpoint].harrell_c,
            baseline_evaluation.survival[endpoint].harrell_c, difference, len(time), int(happened.sum()),
            settings, rng))
    return comparisons


def _paired(metric: str, model: Estimate, baseline: Estimate, difference: Callable[[np.ndarray], float], n: int,
            events: int, settings: EvaluationSettings, rng: np.random.Generator) -> Comparison:
    if not (model.available and baseline.available):
        blank = Estimate(value=None, suppressed=True, note="a figure is suppressed or unavailable")
        return Comparison(metric=metric, model=model, baseline=baseline, difference=blank,
                          relative_improvement_percent=None)
    delta = _bootstrapped(difference, n, events, settings, rng)
    relative = 100 * delta.value / baseline.value if baseline.value else None
    return Comparison(metric=metric, model=model, baseline=baseline, difference=delta,
                      relative_improvement_percent=relative)


# ----------------------------------------------------------------------------------------------------------
# Subgroups
# ----------------------------------------------------------------------------------------------------------

def _value(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].map(lambda v: getattr(v, "value", v))


def subgroup_masks(frame: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(group, level, rows) for the subgroups every site reports, from the contract's columns."""
    masks: list[tuple[str, str, np.ndarray]] = []
    age = pd.to_numeric(frame["age_years"], errors="coerce").to_numpy()
    masks += [("Age", "< 70", age < 70), ("Age", "≥ 70", age >= 70)]
    for column, group in (("sex", "Sex"), ("race_ethnicity", "Race/ethnicity"), ("cancer_type", "Cancer type")):
        values = _value(frame, column)
        for level in sorted(values.dropna().unique()):
            masks.append((group, str(level), (values == level).to_numpy()))
    charlson = pd.to_numeric(frame["charlson_index"], errors="coerce").to_numpy()
    masks += [("Comorbidity (Charlson)", "0", charlson == 0),
              ("Comorbidity (Charlson)", "1–2", (charlson >= 1) & (charlson <= 2)),
              ("Comorbidity (Charlson)", "≥ 3", charlson >= 3)]
    for modality, fields in MODALITY_FIELDS.items():
        if modality == "clinical":
            continue
        present = frame[[f for f in fields if f in frame.columns]].notna().any(axis=1).to_numpy()
        masks += [(f"{modality.capitalize()} data", "missing", ~present),
                  (f"{modality.capitalize()} data", "present", present)]
    return masks


def evaluate_subgroups(test_frame: pd.DataFrame, predictions: OutcomePredictions, settings: EvaluationSettings,
                       rng: np.random.Generator) -> list[SubgroupEvaluation]:
    """Response AUC and Brier, PFS and OS Harrell's C within each subgroup; small subgroups suppressed whole."""
    known, responder = responder_labels(test_frame)
    outcomes = {endpoint: survival_outcomes(test_frame, endpoint) for endpoint in ENDPOINTS}
    results: list[SubgroupEvaluation] = []
    for group, level, rows in subgroup_masks(test_frame):
        size = int(rows.sum())
        if size < settings.min_cell_size:
            blank = suppress_small_cells(size, 0, settings.min_cell_size)
            assert blank is not None
            results.append(SubgroupEvaluation(group=group, level=level, n=None, response_auc=blank,
                                              response_brier=blank, pfs_harrell_c=blank, os_harrell_c=blank))
            continue
        in_response = rows & known
        p, y = predictions.response_prob[in_response], responder[in_response]
        concordance: dict[str, Estimate] = {}
        for endpoint, (followed, days, event) in outcomes.items():
            chosen = rows & followed
            concordance[endpoint] = harrell_c(predictions.survival(endpoint)[chosen], predictions.time_grid_days,
                                              days[chosen], event[chosen], settings, rng)
        results.append(SubgroupEvaluation(
            group=group, level=level, n=size, response_auc=response_auc(p, y, settings, rng),
            response_brier=response_brier(p, y, settings, rng), pfs_harrell_c=concordance["pfs"],
            os_harrell_c=concordance["os"]))
    return results


class FigureSpec(BaseModel):
    """How a shared figure is named, pooled across sites, and what value means 'no better than chance'."""

    model_config = ConfigDict(frozen=True)

    label: str
    scale: Literal["identity", "logit"]
    reference: float | None


SITE_FIGURES: dict[str, FigureSpec] = {
    "response_auc": FigureSpec(label="Response AUC", scale="logit", reference=0.5),
    "response_brier": FigureSpec(label="Response Brier score", scale="logit", reference=None),
    "response_calibration_slope": FigureSpec(label="Response calibration slope", scale="identity", reference=1.0),
    "pfs_harrell_c": FigureSpec(label="PFS Harrell's C", scale="logit", reference=0.5),
    "pfs_uno_c": FigureSpec(label="PFS Uno's C", scale="logit", reference=0.5),
    "os_harrell_c": FigureSpec(label="OS Harrell's C", scale="logit", reference=0.5),
    "os_uno_c": FigureSpec(label="OS Uno's C", scale="logit", reference=0.5),
}


def site_figures(evaluation: PredictionEvaluation) -> dict[str, Estimate]:
    """The headline figures a site shares with the consortium (already suppressed where cells are small)."""
    figures = {"response_auc": evaluation.response.auc, "response_brier": evaluation.response.brier,
               "response_calibration_slope": evaluation.response.calibration_slope}
    for endpoint, result in evaluation.survival.items():
        figures[f"{endpoint}_harrell_c"] = result.harrell_c
        figures[f"{endpoint}_uno_c"] = result.uno_c
    return figures


# ----------------------------------------------------------------------------------------------------------
# Across sites
# ----------------------------------------------------------------------------------------------------------

def random_effects_meta_analysis(estimates: Sequence[float], standard_errors: Sequence[float],
                                 confidence: float = 0.95) -> MetaAnalysis:
    """DerSimonian–Laird random-effects pooling of per-site estimates (hand-written: no meta-analysis package kept).

    Returns the pooled estimate with its interval, tau² (between-site variance), I² and Cochran's Q.
    """
    y = np.asarray(estimates, dtype=float)
    se = np.asarray(standard_errors, dtype=float)
    if y.ndim != 1 or y.shape != se.shape or y.size < 2:
        raise ValueError("give at least two sites, one estimate and one standard error each")
    if np.any(~np.isfinite(se)) or np.any(se <= 0):
        raise ValueError("standard errors must be positive and finite")
    within = 1 / se**2
    fixed = np.sum(within * y) / np.sum(within)
    q = float(np.sum(within * (y - fixed) ** 2))
    df = y.size - 1
    c = np.sum(within) - np.sum(within**2) / np.sum(within)
    tau2 = max(0.0, (q - df) / c)
    weights = 1 / (se**2 + tau2)
    pooled = float(np.sum(weights * y) / np.sum(weights))
    pooled_se = float(np.sqrt(1 / np.sum(weights)))
    z = stats.norm.ppf(0.5 + confidence / 2)
    i2 = max(0.0, (q - df) / q) * 100 if q > 0 else 0.0
    return MetaAnalysis(pooled=pooled, lower=pooled - z * pooled_se, upper=pooled + z * pooled_se, tau2=tau2,
                        i2_percent=i2, q=q, q_p_value=float(stats.chi2.sf(q, df)), sites=int(y.size),
                        weights=(100 * weights / weights.sum()).tolist())


def pool_site_estimates(site_estimates: Sequence[Estimate], scale: Literal["identity", "logit"] = "logit",
                        confidence: float = 0.95) -> MetaAnalysis | None:
    """Random-effects summary of per-site Estimates, standard errors read from their intervals.

    AUC and C-index are pooled on the logit scale (bounded in [0, 1]) and reported back on their own scale.
    Sites whose figure is suppressed or has no interval are left out; fewer than two left → None.
    """
    used = [i for i, e in enumerate(site_estimates) if e.available and e.standard_error(scale, confidence)]
    if len(used) < 2:
        return None
    values = [_to_scale(site_estimates[i].value, scale) for i in used]  # type: ignore[arg-type]
    errors = [site_estimates[i].standard_error(scale, confidence) for i in used]
    pooled = random_effects_meta_analysis(values, errors, confidence)  # type: ignore[arg-type]
    weights: list[float | None] = [None] * len(site_estimates)
    for i, weight in zip(used, pooled.weights, strict=True):
        weights[i] = weight
    return pooled.model_copy(update={"pooled": _from_scale(pooled.pooled, scale),
                                     "lower": _from_scale(pooled.lower, scale),
                                     "upper": _from_scale(pooled.upper, scale), "scale": scale,
                                     "weights": weights})
