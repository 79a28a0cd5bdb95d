"""The classical anchor of the regimen-ranking benchmark: what the observed data allows without privacy.

Pooled training splits of every site, NO differential privacy, one model per cancer type on the same encoded
features the network sees (shared/encoding.py), with the regimen and regimen × feature interactions:
- response: scikit-learn's L2 logistic regression;
- overall survival: lifelines' penalised Cox model, whose predicted median OS ranks the regimens.
Penalties are chosen on the sites' validation splits only. Like the network it learns associations from
observational practice: where regimens were given for reasons the data do not record, it is confounded too.
With `weight_bound`, both are fitted with the same stabilised, truncated inverse-probability weights as the
federated option (shared/propensity.py), from a non-private multinomial logistic propensity model.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from lifelines.utils import concordance_index
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss

from shared.contract import MODALITIES
from shared.encoding import SurvivalGrid, encode_cohort
from shared.harmonisation import NormalisationStats
from shared.vocabulary import RESPONDER, BestResponse, CancerType, regimens_for

LOGISTIC_C = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)  # inverse L2 strength, chosen on validation log-loss
COX_PENALIZER = (0.05, 0.5)  # lifelines L2 penalizer, chosen on validation concordance
PROPENSITY_C = 0.1  # the anchor's propensity model: L2-penalised multinomial logistic regression


def design_matrix(frame: pd.DataFrame, stats: NormalisationStats, grid: SurvivalGrid, cancer: CancerType,
                  keep: np.ndarray | None = None, regimen_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(patient features, regimen indicators, regimen × feature interactions) of one cancer type's rows, and
    the columns kept (those that vary in the training rows: constant columns carry nothing and stall Cox).

    `regimen_only`: the regimen indicators alone (each regimen's crude response rate and survival in practice)."""
    encoded = encode_cohort(frame, stats, grid)
    features = np.column_stack([encoded.blocks[m].numpy() for m in MODALITIES] + [encoded.modality_mask.numpy()])
    codes = [r.code for r in regimens_for(cancer)][1:]  # the first regimen is the reference level
    indicators = np.column_stack([(frame["regimen"].to_numpy() == code).astype(float) for code in codes])
    interactions = np.column_stack([indicators[:, [j]] * features for j in range(len(codes))])
    design = indicators if regimen_only else np.column_stack([features, indicators, interactions])
    if keep is None:
        keep = design.std(axis=0) > 1e-9
    return design[:, keep], keep


@dataclass
class CancerAnchor:
    keep: np.ndarray
    response: LogisticRegression
    survival: CoxPHFitter
    columns: list[str]
    regimen_only: bool = False


def _responders(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    known = frame["best_response"].notna().to_numpy()
    responded = frame["best_response"].map(lambda v: v is not None and not pd.isna(v) and BestResponse(v) in RESPONDER)
    return known, responded.to_numpy(dtype=float)


def _os_frame(design: np.ndarray, frame: pd.DataFrame, columns: list[str], weights: np.ndarray | None = None
              ) -> pd.DataFrame:
    days = pd.to_numeric(frame["os_days"], errors="coerce").to_numpy(float)
    event = frame["os_event"].map(lambda v: bool(v) if v is not None and not pd.isna(v) else False).to_numpy()
    table = pd.DataFrame(design, columns=columns)
    table["os_days"], table["os_event"] = np.maximum(days, 1.0), event
    table["weight"] = 1.0 if weights is None else weights
    return table[np.isfinite(days)].reset_index(drop=True)


def inverse_probability_weights(frame: pd.DataFrame, stats: NormalisationStats, grid: SurvivalGrid,
                                cancer: CancerType, bound: float) -> np.ndarray:
    """(1 / candidates) / ê(regimen given | features), truncated at `bound`: the federated option's formula."""
    encoded = encode_cohort(frame, stats, grid)
    features = np.column_stack([encoded.blocks[m].numpy() for m in MODALITIES] + [encoded.modality_mask.numpy()])
    given = frame["regimen"].to_numpy()
    if len(set(given)) < 2:
        return np.ones(len(frame))
    propensity = LogisticRegression(C=PROPENSITY_C, max_iter=3000).fit(features, given)
    column = {code: i for i, code in enumerate(propensity.classes_)}
    probability = propensity.predict_proba(features)[np.arange(len(frame)), [column[g] for g in given]]
    return np.minimum((1.0 / len(regimens_for(cancer))) / probability, bound)


def fit_anchor(train: pd.DataFrame, validation: pd.DataFrame, stats: NormalisationStats, grid: SurvivalGrid,
               weight_bound: float | None = None, regimen_only: bool = False) -> dict[str, CancerAnchor]:
    """One logistic and one Cox model per cancer type; penalties chosen on `validation` (unweighted)."""
    anchors = {}
    for cancer in CancerType:
        fit_rows = train[train["cancer_type"] == cancer.value].reset_index(drop=True)
        check_rows = validation[validation["cancer_type"] == cancer.value].reset_index(drop=True)
        if len(fit_rows) < 20 or len(check_rows) < 10:
            continue
        design, keep = design_matrix(fit_rows, stats, grid, cancer, regimen_only=regimen_only)
        check, _ = design_matrix(check_rows, stats, grid, cancer, keep, regimen_only)
        known, responded = _responders(fit_rows)
        check_known, check_responded = _responders(check_rows)
        weights = (np.ones(len(fit_rows)) if weight_bound is None
                   else inverse_probability_weights(fit_rows, stats, grid, cancer, weight_bound))
        response = min((LogisticRegression(C=c, max_iter=3000).fit(design[known], responded[known],
                                                                   sample_weight=weights[known])
                        for c in LOGISTIC_C),
                       key=lambda m: log_loss(check_responded[check_known], m.predict_proba(check[check_known])[:, 1],
                                              labels=[0.0, 1.0]))
        columns = [f"x{i}" for i in range(design.shape[1])]
        fit_os, check_os = _os_frame(design, fit_rows, columns, weights), _os_frame(check, check_rows, columns)
        candidates = []
        for penalizer in COX_PENALIZER:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # lifelines' convergence chatter on near-collinear columns
                cox = CoxPHFitter(penalizer=penalizer).fit(fit_os, duration_col="os_days", event_col="os_event",
                                                           weights_col="weight")
            score = concordance_index(check_os["os_days"], -cox.predict_partial_hazard(check_os[columns]),
                                      check_os["os_event"])
            candidates.append((score, cox))
        anchors[cancer.value] = CancerAnchor(keep=keep, response=response,
                                             survival=max(candidates, key=lambda c: c[0])[1], columns=columns,
                                             regimen_only=regimen_only)
    return anchors


def predict_anchor(anchors: dict[str, CancerAnchor], candidates: pd.DataFrame, stats: NormalisationStats,
                   grid: SurvivalGrid) -> pd.DataFrame:
    """Predicted response probability and median OS (inf = not reached) of each candidate row, same order."""
    response = np.full(len(candidates), np.nan)
    median_os = np.full(len(candidates), np.nan)
    unfitted = sorted(set(candidates["cancer_type"]) - set(anchors))
    if unfitted:
        raise ValueError(f"the anchor has no model for cancer type(s) {unfitted}: fewer than 20 training or 10 "
                         f"validation patients; use a larger cohort (oncofed-cohort --patients N)")
    for cancer_code, anchor in anchors.items():
        rows = np.flatnonzero(candidates["cancer_type"].to_numpy() == cancer_code)
        if len(rows) == 0:
            continue
        design, _ = design_matrix(candidates.iloc[rows].reset_index(drop=True), stats, grid, CancerType(cancer_code),
                                  anchor.keep, anchor.regimen_only)
        response[rows] = anchor.response.predict_proba(design)[:, 1]
        median_os[rows] = anchor.survival.predict_median(pd.DataFrame(design, columns=anchor.columns)).to_numpy()
    return pd.DataFrame({"predicted_response": response, "predicted_median_os_days": median_os})
