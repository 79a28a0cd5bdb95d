"""How well a model ranks the candidate regimens of each patient, against the synthetic generator's truth.

Pure functions over long tables (one row per patient × candidate regimen). Only a simulation has the truth
(every patient's outcome under every regimen), so these live in simulations/. Hand-written because no kept
library scores within-group rankings against a known counterfactual (scikit-learn's ranking metrics score one
list against labels, not the regret of a choice).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

# pairs of regimens of one patient whose true values differ by less than this are not scored: a model need not
# order what barely differs (stated beside every figure)
RESPONSE_PAIR_THRESHOLD = 0.05  # absolute difference in true response probability
OS_PAIR_THRESHOLD_DAYS = 30.0  # difference in true median OS (both capped at the survival horizon)


class RankingFigures(BaseModel):
    """One model's ranking of the regimens of the same patients (all figures against the truth)."""

    model_config = ConfigDict(frozen=True)

    n_patients: int
    n_rows: int
    response_concordance: float  # share of meaningfully different pairs ordered as the truth orders them
    response_pairs: int
    os_concordance: float
    os_pairs: int
    top1_agreement: float  # first choice by predicted response == truly best regimen (by true response)
    top1_chance: float  # mean of 1 / number of candidates: what a random pick reaches
    regret: float  # true response probability lost by following the model's first choice
    regret_random: float  # … by a uniformly random candidate (expected)
    regret_given: float | None  # … by the regimen actually given (None when no row is marked given)
    response_mae: float  # mean |predicted − true| response probability over every patient × regimen


def _groups(patient_ids: np.ndarray) -> list[np.ndarray]:
    """Row indices of each patient, in order of first appearance."""
    codes = pd.factorize(pd.Series(patient_ids))[0]
    order = np.argsort(codes, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(codes[order])) + 1)


def pairwise_concordance(patient_ids: np.ndarray, predicted: np.ndarray, truth: np.ndarray,
                         threshold: float) -> tuple[float, int]:
    """(concordance, pairs): within each patient, over pairs with |true difference| ≥ threshold, the share the
    prediction orders the same way (a predicted tie counts one half). NaN when no pair qualifies."""
    predicted, truth = np.asarray(predicted, dtype=float), np.asarray(truth, dtype=float)
    score, pairs = 0.0, 0
    for rows in _groups(np.asarray(patient_ids)):
        first, second = np.triu_indices(len(rows), k=1)
        true_diff = truth[rows][first] - truth[rows][second]
        kept = np.abs(true_diff) >= threshold
        predicted_diff = predicted[rows][first][kept] - predicted[rows][second][kept]
        agree = np.sign(predicted_diff) * np.sign(true_diff[kept])
        score += float(np.sum(agree > 0) + 0.5 * np.sum(agree == 0))
        pairs += int(kept.sum())
    return (score / pairs if pairs else float("nan")), pairs


def choice_figures(patient_ids: np.ndarray, predicted: np.ndarray, truth: np.ndarray,
                   given: np.ndarray | None = None) -> dict[str, float | None]:
    """Top-1 agreement, its chance level, and the regret of the model's, a random and the given choice.

    The model's first choice is its highest prediction (the first listed on a tie); the truly best regimen is
    the highest true value.
    """
    predicted, truth = np.asarray(predicted, dtype=float), np.asarray(truth, dtype=float)
    top1, chance, regret, regret_random, regret_given = [], [], [], [], []
    for rows in _groups(np.asarray(patient_ids)):
        best = float(truth[rows].max())
        chosen = rows[int(np.argmax(predicted[rows]))]
        top1.append(float(truth[chosen] == best))
        chance.append(1.0 / len(rows))
        regret.append(best - float(truth[chosen]))
        regret_random.append(best - float(truth[rows].mean()))
        if given is not None and np.asarray(given)[rows].any():
            regret_given.append(best - float(truth[rows][np.asarray(given)[rows].astype(bool)][0]))
    return {"top1_agreement": float(np.mean(top1)), "top1_chance": float(np.mean(chance)),
            "regret": float(np.mean(regret)), "regret_random": float(np.mean(regret_random)),
            "regret_given": float(np.mean(regret_given)) if regret_given else None}


def ranking_figures(table: pd.DataFrame, horizon_days: float) -> RankingFigures:
    """Every figure from a long table with columns patient_id, predicted_response, true_response,
    predicted_median_os_days, true_median_os_days (inf = not reached) and optionally given (bool).

    Median OS is compared on what a model with this horizon can show: both sides capped at `horizon_days`.
    """
    required = {"patient_id", "predicted_response", "true_response", "predicted_median_os_days",
                "true_median_os_days"}
    missing = required - set(table.columns)
    if missing:
        raise ValueError(f"the ranking table lacks column(s) {sorted(missing)}; one row per patient × regimen with "
                         f"{sorted(required)}")
    ids = table["patient_id"].astype(str).to_numpy()
    predicted, truth = table["predicted_response"].to_numpy(float), table["true_response"].to_numpy(float)
    predicted_os = np.minimum(table["predicted_median_os_days"].to_numpy(float), horizon_days)
    true_os = np.minimum(table["true_median_os_days"].to_numpy(float), horizon_days)
    response_c, response_pairs = pairwise_concordance(ids, predicted, truth, RESPONSE_PAIR_THRESHOLD)
    os_c, os_pairs = pairwise_concordance(ids, predicted_os, true_os, OS_PAIR_THRESHOLD_DAYS)
    given = table["given"].to_numpy(bool) if "given" in table.columns else None
    choices = choice_figures(ids, predicted, truth, given)
    return RankingFigures(n_patients=len(set(ids)), n_rows=len(table), response_concordance=response_c,
                          response_pairs=response_pairs, os_concordance=os_c, os_pairs=os_pairs,
                          response_mae=float(np.mean(np.abs(predicted - truth))), **choices)
