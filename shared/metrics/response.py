"""Figures of the response output: AUC, balanced accuracy, Brier, calibration, ROC and decision curves."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import optimize, special
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_curve

from shared.metrics.estimates import _bootstrapped, roc_auc, suppress_small_cells
from shared.metrics.results import CalibrationCurve, Curve, DecisionCurve, Estimate, EvaluationSettings, ResponseEvaluation


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
