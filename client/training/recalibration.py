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
from shared.model import OncoFedNet


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
