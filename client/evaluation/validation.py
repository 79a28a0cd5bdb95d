"""The site's side of federated validation: what it shares about subgroups and SHAP, and headline intervals.

Everything here turns per-patient values (kept at the site) into aggregate figures named with the keys of
shared/messages.py; client/flower/outbox.py checks them again before anything leaves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from client.evaluation.explanations import OUTPUTS, Explanation, explain
from shared.encoding import SurvivalGrid, encode_cohort
from shared.harmonisation import NormalisationStats
from shared.messages import (
    CINDEX_KEYS,
    FIGURE_ESTIMATES,
    RESPONSE_AUC,
    SHAP_COUNT_KEY,
    SUBGROUP_COUNT,
    interval_keys,
    shap_key,
    subgroup_key,
)
from shared.metrics import (
    ENDPOINTS,
    Estimate,
    EvaluationSettings,
    OutcomePredictions,
    SubgroupEvaluation,
    harrell_c,
    responder_labels,
    response_auc,
    survival_outcomes,
)
from shared.model import OncoFedNet, predict


def _rows(inputs: tuple[torch.Tensor, ...], rows: np.ndarray) -> tuple[torch.Tensor, ...]:
    index = torch.as_tensor(rows, dtype=torch.long)
    return tuple(tensor[index] for tensor in inputs)


def explain_test_patients(model: OncoFedNet, train: pd.DataFrame, test: pd.DataFrame, stats: NormalisationStats,
                          grid: SurvivalGrid, max_patients: int, samples: int, seed: int) -> Explanation | None:
    """SHAP values of (up to `max_patients`) test patients against (up to 100) training patients; None if off."""
    if max_patients == 0 or len(test) == 0 or len(train) == 0:
        return None
    rng = np.random.default_rng(seed)
    patients = np.sort(rng.choice(len(test), size=min(max_patients, len(test)), replace=False))
    background = np.sort(rng.choice(len(train), size=min(100, len(train)), replace=False))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one core per site: simulated sites share the machine
    try:
        return explain(model, grid, _rows(encode_cohort(train, stats, grid).inputs(), background),
                       _rows(encode_cohort(test, stats, grid).inputs(), patients), samples=samples, seed=seed)
    finally:
        torch.set_num_threads(threads)


def shap_importances(explanation: Explanation | None) -> dict[str, dict[str, float]]:
    """Output → contract field → mean |SHAP|: the site report's panel (stays at the site with the values)."""
    if explanation is None:
        return {}
    return {output: explanation.mean_absolute(output) for output in OUTPUTS}


def shap_metrics(explanation: Explanation | None, min_cell_size: int) -> dict[str, float]:
    """The per-field means to share, with the number of patients they average; nothing under the minimum cell."""
    if explanation is None or len(explanation.values) < min_cell_size:
        return {}
    shared: dict[str, float] = {SHAP_COUNT_KEY: len(explanation.values)}
    for output, means in shap_importances(explanation).items():
        shared |= {shap_key(output, field): value for field, value in means.items()}
    return shared


def with_interval(key: str, estimate: Estimate) -> dict[str, float]:
    """A figure and its bootstrap interval under their wire keys; nothing when it is suppressed or has no interval."""
    if not estimate.available or estimate.lower is None or estimate.upper is None:
        return {}
    lower, upper = interval_keys(key)
    return {key: estimate.value, lower: estimate.lower, upper: estimate.upper}


def subgroup_metrics(subgroups: list[SubgroupEvaluation], min_cell_size: int) -> dict[str, float]:
    """Each subgroup's size and figures with intervals; a suppressed subgroup or figure sends nothing at all."""
    shared: dict[str, float] = {}
    for subgroup in subgroups:
        if subgroup.n is None or subgroup.n < min_cell_size:
            continue
        shared[subgroup_key(subgroup.group, subgroup.level, SUBGROUP_COUNT)] = subgroup.n
        for figure, attribute in FIGURE_ESTIMATES.items():
            shared |= with_interval(subgroup_key(subgroup.group, subgroup.level, figure), getattr(subgroup, attribute))
    return shared


def headline_intervals(model: OncoFedNet, test: pd.DataFrame, stats: NormalisationStats, grid: SurvivalGrid,
                       settings: EvaluationSettings, rng: np.random.Generator) -> dict[str, float]:
    """Response AUC and PFS/OS Harrell's C with bootstrap intervals (for models other than the final global one)."""
    raw = predict(model, encode_cohort(test, stats, grid).inputs())
    predictions = OutcomePredictions(response_prob=raw.response_prob, pfs_survival=raw.pfs_survival,
                                     os_survival=raw.os_survival, time_grid_days=grid.time_grid_days)
    known, responder = responder_labels(test)
    estimates = {RESPONSE_AUC: response_auc(predictions.response_prob[known], responder[known], settings, rng)}
    for endpoint in ENDPOINTS:
        followed, days, event = survival_outcomes(test, endpoint)
        estimates[CINDEX_KEYS[endpoint]] = harrell_c(predictions.survival(endpoint)[followed], grid.time_grid_days,
                                                    days[followed], event[followed], settings, rng)
    shared: dict[str, float] = {}
    for key, estimate in estimates.items():
        shared |= with_interval(key, estimate)
    return shared
