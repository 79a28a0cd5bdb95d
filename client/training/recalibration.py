"""A site's part in the federated recalibration of the response logit: aggregate sums over its validation split.

The coordinator fits p = σ(a·z + b) on z, the global model's response logit, by Newton's method on the sums of
every site (server/recalibration.py). Each site sends, for its validation patients with a known response, only
the gradient (2 numbers) and Hessian (3 numbers) of the summed logistic log-loss at the current (a, b) and
their count; a site with fewer such patients than the minimum cell size sends nothing.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy import special

from shared.encoding import SurvivalGrid, encode_cohort
from shared.harmonisation import NormalisationStats
from shared.messages import RECALIBRATION_COUNT_KEY
from shared.model import OncoFedNet, fold_response_recalibration

MIN_SITE_SLOPE = 0.05  # the coordinator's floor for its own fit (server/recalibration.py MIN_SLOPE), at the site


def response_logits(model: OncoFedNet, patients: pd.DataFrame, stats: NormalisationStats, grid: SurvivalGrid
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The model's response logit z and the responder flag for the patients whose best response is known."""
    cohort = encode_cohort(patients, stats, grid)
    model.eval()
    with torch.no_grad():
        logit = model(*cohort.inputs())[0].numpy().astype(float)
    known = cohort.responder_known.numpy() > 0.5
    return logit[known], cohort.responder.numpy()[known].astype(float)


def recalibration_sums(logit: np.ndarray, responder: np.ndarray, a: float, b: float) -> dict[str, float]:
    """Gradient and Hessian in (a, b) of Σ −log-likelihood of y under σ(a·z + b), and the count they rest on."""
    z, y = np.asarray(logit, dtype=float), np.asarray(responder, dtype=float)
    p = special.expit(a * z + b)
    residual, weight = p - y, p * (1.0 - p)
    return {RECALIBRATION_COUNT_KEY: float(len(z)),
            "recal-gradient-a": float(np.sum(residual * z)), "recal-gradient-b": float(np.sum(residual)),
            "recal-hessian-aa": float(np.sum(weight * z * z)), "recal-hessian-ab": float(np.sum(weight * z)),
            "recal-hessian-bb": float(np.sum(weight))}


def fit_site_recalibration(logit: np.ndarray, responder: np.ndarray, ridge_slope: float, ridge_intercept: float,
                           iterations: int = 50) -> tuple[float, float]:
    """A site's own (a, b) of p = σ(a·z + b) on its validation patients, shrunk towards the consortium's fit.

    Maximises the log-likelihood minus ridge/2 · ((a − 1)², b²): z already carries the consortium's recalibration,
    so (1, 0) keeps it; an infinite ridge holds that parameter there. It runs at the site and (a, b) stay there.
    Newton's method on the same sums as the federated fit; hand-written because scikit-learn's logistic regression
    cannot shrink towards a non-zero prior."""
    a, b = 1.0, 0.0
    free = np.array([not np.isinf(ridge_slope), not np.isinf(ridge_intercept)])
    if not free.any():
        return a, b
    ridges = np.where(free, [ridge_slope, ridge_intercept], 0.0)
    index = np.flatnonzero(free)
    for _ in range(iterations):
        sums = recalibration_sums(logit, responder, a, b)
        gradient = np.array([sums["recal-gradient-a"], sums["recal-gradient-b"]]) + ridges * np.array([a - 1.0, b])
        hessian = np.array([[sums["recal-hessian-aa"], sums["recal-hessian-ab"]],
                            [sums["recal-hessian-ab"], sums["recal-hessian-bb"]]]) + np.diag(ridges) + 1e-9 * np.eye(2)
        step = np.zeros(2)
        step[index] = np.linalg.solve(hessian[np.ix_(index, index)], gradient[index])
        step *= min(1.0, 1.0 / max(float(np.linalg.norm(step)), 1e-300))  # saturated σ: no overshoot
        a, b = a - float(step[0]), b - float(step[1])
        if np.linalg.norm(step) < 1e-10:
            break
    return a, b


def recalibrate_at_site(model: OncoFedNet, validation: pd.DataFrame, stats: NormalisationStats, grid: SurvivalGrid,
                        mode: str, ridge: float, min_cell_size: int) -> tuple[OncoFedNet, tuple[float, float] | None]:
    """The model with the site's own (a, b), fitted on its validation split, folded into its response head.

    mode "intercept": b only (a stays 1); "platt": a and b, each shrunk towards the consortium's fit by `ridge`.
    Used for the site's test figures and report (run-config site-recalibration). Too few validation patients with a
    known response (or only one outcome), or a fitted slope below MIN_SITE_SLOPE (on its validation patients the
    model barely ranks responders higher: a ≤ 0 would reverse or erase its ranking, not calibrate it), leaves the
    model as it came, and says so with None."""
    logit, responder = response_logits(model, validation, stats, grid)
    if len(logit) < min_cell_size or responder.all() or not responder.any():
        return model, None
    if mode not in ("intercept", "platt"):
        raise ValueError(f"site recalibration mode must be 'intercept' or 'platt', not {mode!r}")
    a, b = fit_site_recalibration(logit, responder, np.inf if mode == "intercept" else ridge, ridge)
    if a < MIN_SITE_SLOPE:
        return model, None
    model.load_state_dict(fold_response_recalibration(model.state_dict(), a, b))
    return model, (a, b)
