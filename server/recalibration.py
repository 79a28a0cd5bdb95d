"""Federated logistic recalibration (Platt scaling) of the response output after the last federated round.

DP-trained response logits come out over-confident (calibration slope < 1 at most sites: docs/dp_tuning.md),
and no training setting fixed it. So the coordinator fits p = σ(a·z + b) on the global model's response logit z
over every site's validation split, then folds (a, b) into the response head, so everything downstream
(checkpoint, site reports, tumour board) sees the calibrated model without a new layer.

Newton's method is hand-written because it is two parameters on summed statistics: scikit-learn fits on rows,
and the rows stay at the sites. Each site sends only the gradient, Hessian and count over its patients
(client/training/recalibration.py); no training happens and no ε is spent (the sums are protected by the minimum cell
size, like every evaluation figure).
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord
from pydantic import BaseModel, Field

from server.coordinator import Coordinator
from shared.model import fold_response_recalibration
from shared.messages import (
    RECALIBRATION,
    RECALIBRATION_COUNT_KEY,
    RECALIBRATION_INTERCEPT_KEY,
    RECALIBRATION_SLOPE_KEY,
    RECALIBRATION_SUM_KEYS,
    SPLIT_KEY,
)

RIDGE = 1e-3  # added to the Hessian's diagonal: keeps a step finite when the logits barely vary
MIN_SLOPE = 0.05  # a fitted a below this is not a calibration (the model has no signal left); leave the model
MAX_STEP = 1.0  # longest (a, b) step: far from the fit (saturated σ) a plain Newton step overshoots and diverges


class Recalibration(BaseModel):
    """What the recalibration found (metrics.json "recalibration")."""

    applied: bool
    reason: str = Field(default="", description="why the model was left as it was (applied = false)")
    slope: float = Field(default=1.0, description="a in p = σ(a·z + b), folded into the response head")
    intercept: float = Field(default=0.0, description="b in p = σ(a·z + b)")
    iterations: int = 0
    validation_patients: int = Field(default=0, description="validation patients with a known response, all sites")
    sites: list[str] = Field(default_factory=list, description="sites whose sums were used in the last iteration")
    missing: dict[str, str] = Field(default_factory=dict, description="sites that sent no sums, and why")


def newton_step(sums: dict[str, float], a: float, b: float, ridge: float = RIDGE, max_step: float = MAX_STEP
                ) -> tuple[float, float]:
    """One Newton step for (a, b) from the summed gradient and Hessian of the log-loss, at most `max_step` long."""
    gradient = np.array([sums["recal-gradient-a"], sums["recal-gradient-b"]])
    hessian = np.array([[sums["recal-hessian-aa"], sums["recal-hessian-ab"]],
                        [sums["recal-hessian-ab"], sums["recal-hessian-bb"]]]) + ridge * np.eye(2)
    step = np.linalg.solve(hessian, gradient)
    step *= min(1.0, max_step / max(float(np.linalg.norm(step)), 1e-300))
    return float(a - step[0]), float(b - step[1])


def sum_figures(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    return {key: sum(f[key] for f in figures.values()) for key in (RECALIBRATION_COUNT_KEY, *RECALIBRATION_SUM_KEYS)}


def recalibrate_response(coordinator: Coordinator, arrays: ArrayRecord) -> tuple[ArrayRecord, Recalibration]:
    """Fit (a, b) over the sites' validation splits and return the model with them folded in.

    Each Newton iteration is one exchange through the coordinator (its plan, feature scaling and site names).
    Too few usable sites (min-sites) leaves the model as it is, and says why in the result."""
    config = coordinator.config
    a, b = 1.0, 0.0
    nodes = coordinator.node_ids()
    replies = None
    for iteration in range(1, config.recalibration_iterations + 1):
        records = coordinator.records(**{SPLIT_KEY: "validation", RECALIBRATION_SLOPE_KEY: a,
                                         RECALIBRATION_INTERCEPT_KEY: b})
        replies = coordinator.collect(coordinator.messages(arrays, records, nodes, RECALIBRATION))
        if len(replies.figures) < config.min_sites:
            return arrays, Recalibration(applied=False, iterations=iteration - 1, missing=replies.missing,
                                         reason=f"{len(replies.figures)} site(s) sent sums, min-sites is "
                                                f"{config.min_sites}")
        a, b = newton_step(sum_figures(replies.figures), a, b)
    assert replies is not None  # recalibration-iterations >= 1
    if a < MIN_SLOPE:  # a ≤ 0 would reverse (or erase) the model's ranking of patients, not calibrate it
        return arrays, Recalibration(applied=False, slope=a, intercept=b, iterations=config.recalibration_iterations,
                                     sites=sorted(replies.figures), missing=replies.missing,
                                     reason=f"the fitted slope a = {a:.3g} is below {MIN_SLOPE}: on the validation "
                                            f"splits the model barely ranks responders above non-responders")
    folded = fold_response_recalibration(arrays.to_torch_state_dict(), a, b)
    return ArrayRecord(folded), Recalibration(
        applied=True, slope=a, intercept=b, iterations=config.recalibration_iterations,
        validation_patients=int(sum_figures(replies.figures)[RECALIBRATION_COUNT_KEY]),
        sites=sorted(replies.figures), missing=replies.missing)
