"""The whole evaluation of one prediction set on a site's test table, and its comparison with a baseline."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from shared.metrics.estimates import _bootstrapped, harrell_c_value, roc_auc
from shared.metrics.response import evaluate_response
from shared.metrics.results import Comparison, ENDPOINTS, Estimate, EvaluationSettings, OutcomePredictions, PredictionEvaluation, RESPONDER_CODES, SurvivalEvaluation
from shared.metrics.survival import evaluate_survival, risk_score


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
