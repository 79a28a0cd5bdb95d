"""Aggregate figures of the model on a site's own held-out patients (only these leave the site)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from shared.encoding import EncodedCohort, SurvivalGrid
from shared.losses import batch_loss
from shared.metrics import risk_score
from shared.model import OncoFedNet, predict


def evaluate_cohort(model: OncoFedNet, patients: pd.DataFrame, cohort: EncodedCohort, grid: SurvivalGrid,
                    min_cell_size: int, prefix: str) -> dict[str, float]:
    """Loss, response AUC and PFS/OS Harrell C-index, each only where its counts reach the minimum cell size."""
    model.eval()
    with torch.no_grad():
        loss = float(batch_loss(model(*cohort.inputs()), cohort.tensors()[len(cohort.inputs()):]))
    predictions = predict(model, cohort.inputs())
    figures: dict[str, float] = {"num-examples": len(cohort), f"{prefix}-loss": loss}
    known = cohort.responder_known.numpy() > 0.5
    responders = cohort.responder.numpy()[known] > 0.5
    if min(responders.sum(), (~responders).sum()) >= min_cell_size:
        figures["response-auc"] = float(roc_auc_score(responders, predictions.response_prob[known]))
    for endpoint in ("pfs", "os"):
        days = pd.to_numeric(patients[f"{endpoint}_days"], errors="coerce").to_numpy(dtype=float)
        known = ~np.isnan(days)
        time = days[known]
        event = patients[f"{endpoint}_event"].to_numpy()[known].astype(float) > 0.5
        if event.sum() >= min_cell_size:
            risk = risk_score(getattr(predictions, f"{endpoint}_survival")[known], grid.time_grid_days)
            figures[f"{endpoint}-cindex"] = float(concordance_index_censored(event, time, risk)[0])
    return figures

