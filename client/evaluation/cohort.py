"""Aggregate figures of the model on a site's own held-out patients (only these leave the site)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from shared.encoding import EncodedCohort, SurvivalGrid
from shared.losses import batch_loss
from shared.messages import CINDEX_KEYS, COUNT_KEY, LOSS_KEYS, RESPONSE_AUC
from shared.metrics import ENDPOINTS, risk_score, suppress_small_cells
from shared.model import OncoFedNet, predict


def evaluate_cohort(model: OncoFedNet, patients: pd.DataFrame, cohort: EncodedCohort, grid: SurvivalGrid,
                    min_cell_size: int, split: str) -> dict[str, float]:
    """Loss, response AUC and PFS/OS Harrell C-index on one split; a figure whose patients, events or non-events
    fall below the minimum cell size is left out (shared.metrics.suppress_small_cells, the one rule)."""
    model.eval()
    with torch.no_grad():
        loss = float(batch_loss(model(*cohort.inputs()), cohort.tensors()[len(cohort.inputs()):]))
    predictions = predict(model, cohort.inputs())
    figures: dict[str, float] = {COUNT_KEY: len(cohort), LOSS_KEYS[split]: loss}
    known = cohort.responder_known.numpy() > 0.5
    responders = cohort.responder.numpy()[known] > 0.5
    if suppress_small_cells(len(responders), int(responders.sum()), min_cell_size) is None:
        figures[RESPONSE_AUC] = float(roc_auc_score(responders, predictions.response_prob[known]))
    for endpoint in ENDPOINTS:
        days = pd.to_numeric(patients[f"{endpoint}_days"], errors="coerce").to_numpy(dtype=float)
        known = ~np.isnan(days)
        time = days[known]
        event = patients[f"{endpoint}_event"].to_numpy()[known].astype(float) > 0.5
        if suppress_small_cells(len(event), int(event.sum()), min_cell_size) is None:
            risk = risk_score(getattr(predictions, f"{endpoint}_survival")[known], grid.time_grid_days)
            figures[CINDEX_KEYS[endpoint]] = float(concordance_index_censored(event, time, risk)[0])
    return figures

