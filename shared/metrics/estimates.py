"""The shared machinery of every figure: the small-cell rule, bootstrap intervals, the two statistics bootstrapped most, and the scales estimates are pooled on."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import stats

from shared.metrics.results import Estimate, EvaluationSettings, MIN_CELL_SIZE


def suppress_small_cells(n: int, events: int, min_cell_size: int = MIN_CELL_SIZE, *,
                         what: str = "events") -> Estimate | None:
    """The one rule for small cells: a suppressed Estimate if n, events or non-events < min_cell_size, else None.

    Counts of a suppressed cell are not reported either (a count of 3 is itself disclosive).
    """
    if n < min_cell_size:
        return Estimate(value=None, suppressed=True, note=f"fewer than {min_cell_size} patients")
    if events < min_cell_size:
        return Estimate(value=None, suppressed=True, note=f"fewer than {min_cell_size} {what}")
    if n - events < min_cell_size:
        return Estimate(value=None, suppressed=True, note=f"fewer than {min_cell_size} patients without {what}")
    return None


def bootstrap_interval(statistic: Callable[[np.ndarray], float | np.ndarray], n: int, rng: np.random.Generator,
                       n_bootstrap: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval of a statistic of patient indices (scalar or vector valued).

    Resamples where the statistic is undefined (one class only, horizon outside follow-up) are dropped; a
    component with fewer than half of the resamples defined gets no interval (NaN).
    """
    resamples = rng.integers(0, n, size=(n_bootstrap, n))
    values: list[np.ndarray] = []
    for rows in resamples:
        try:
            values.append(np.atleast_1d(np.asarray(statistic(rows), dtype=float)))
        except (ValueError, ZeroDivisionError, FloatingPointError):
            continue
    if not values:
        return np.array([np.nan]), np.array([np.nan])
    table = np.vstack(values)
    defined = np.sum(np.isfinite(table), axis=0)
    alpha = (1 - confidence) / 2
    with np.errstate(all="ignore"):
        lower = np.nanquantile(np.where(np.isfinite(table), table, np.nan), alpha, axis=0)
        upper = np.nanquantile(np.where(np.isfinite(table), table, np.nan), 1 - alpha, axis=0)
    enough = defined >= n_bootstrap / 2
    return np.where(enough, lower, np.nan), np.where(enough, upper, np.nan)


def roc_auc(responder: np.ndarray, response_prob: np.ndarray) -> float:
    """ROC AUC as the Mann–Whitney rank statistic (ties count ½): equals sklearn's roc_auc_score.

    Used inside the bootstrap, where roc_auc_score's own input checks cost more than the figure itself.
    """
    positive = np.asarray(responder, dtype=bool)
    n_positive = int(positive.sum())
    n_negative = positive.size - n_positive
    if n_positive == 0 or n_negative == 0:
        raise ValueError("AUC is undefined with only one class present")
    ranks = stats.rankdata(response_prob)
    return float((ranks[positive].sum() - n_positive * (n_positive + 1) / 2) / (n_positive * n_negative))


def harrell_c_value(event: np.ndarray, time: np.ndarray, risk: np.ndarray, tied_tol: float = 1e-8) -> float:
    """Harrell's C exactly as sksurv's concordance_index_censored counts it, over all pairs at once.

    A pair (i, j) is comparable when i had the event and either i's time is earlier, or the times tie and j
    is censored; it is concordant when i has the higher risk, and counts ½ when the risks tie.
    """
    event = np.asarray(event, dtype=bool)
    time = np.asarray(time, dtype=float)
    risk = np.asarray(risk, dtype=float)
    if not event.any():
        raise ValueError("all samples are censored")
    earlier = time[:, None] < time[None, :]
    tied_censored = (time[:, None] == time[None, :]) & ~event[None, :]
    comparable = event[:, None] & (earlier | tied_censored)
    total = comparable.sum()
    if total == 0:
        raise ZeroDivisionError("no comparable pairs")
    difference = risk[:, None] - risk[None, :]
    tied = np.abs(difference) <= tied_tol
    concordant = (comparable & (difference > 0) & ~tied).sum() + 0.5 * (comparable & tied).sum()
    return float(concordant / total)


def _estimate(value: float, lower: float, upper: float, n: int, events: int | None,
              note: str | None = None) -> Estimate:
    finite = np.isfinite(lower) and np.isfinite(upper)
    return Estimate(value=float(value), lower=float(lower) if finite else None,
                    upper=float(upper) if finite else None, n=int(n),
                    events=None if events is None else int(events),
                    note=note if finite else (note or "bootstrap interval undefined on too many resamples"))


def _bootstrapped(statistic: Callable[[np.ndarray], float], n: int, events: int | None,
                  settings: EvaluationSettings, rng: np.random.Generator, note: str | None = None) -> Estimate:
    everyone = np.arange(n)
    value = statistic(everyone)
    lower, upper = bootstrap_interval(statistic, n, rng, settings.n_bootstrap, settings.confidence)
    return _estimate(value, lower[0], upper[0], n, events, note)
