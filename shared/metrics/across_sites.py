"""Across sites: random-effects meta-analysis and pooling of the sites' estimates."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import stats

from shared.metrics.results import Estimate, MetaAnalysis, _from_scale, _to_scale


def random_effects_meta_analysis(estimates: Sequence[float], standard_errors: Sequence[float],
                                 confidence: float = 0.95) -> MetaAnalysis:
    """DerSimonian–Laird random-effects pooling of per-site estimates (hand-written: no meta-analysis package kept).

    Returns the pooled estimate with its interval, tau² (between-site variance), I² and Cochran's Q.
    """
    y = np.asarray(estimates, dtype=float)
    se = np.asarray(standard_errors, dtype=float)
    if y.ndim != 1 or y.shape != se.shape or y.size < 2:
        raise ValueError("give at least two sites, one estimate and one standard error each")
    if np.any(~np.isfinite(se)) or np.any(se <= 0):
        raise ValueError("standard errors must be positive and finite")
    within = 1 / se**2
    fixed = np.sum(within * y) / np.sum(within)
    q = float(np.sum(within * (y - fixed) ** 2))
    df = y.size - 1
    c = np.sum(within) - np.sum(within**2) / np.sum(within)
    tau2 = max(0.0, (q - df) / c)
    weights = 1 / (se**2 + tau2)
    pooled = float(np.sum(weights * y) / np.sum(weights))
    pooled_se = float(np.sqrt(1 / np.sum(weights)))
    z = stats.norm.ppf(0.5 + confidence / 2)
    i2 = max(0.0, (q - df) / q) * 100 if q > 0 else 0.0
    return MetaAnalysis(pooled=pooled, lower=pooled - z * pooled_se, upper=pooled + z * pooled_se, tau2=tau2,
                        i2_percent=i2, q=q, q_p_value=float(stats.chi2.sf(q, df)), sites=int(y.size),
                        weights=(100 * weights / weights.sum()).tolist())


def pool_site_estimates(site_estimates: Sequence[Estimate], scale: Literal["identity", "logit"] = "logit",
                        confidence: float = 0.95) -> MetaAnalysis | None:
    """Random-effects summary of per-site Estimates, standard errors read from their intervals.

    AUC and C-index are pooled on the logit scale (bounded in [0, 1]) and reported back on their own scale.
    Sites whose figure is suppressed or has no interval are left out; fewer than two left → None.
    """
    used = [i for i, e in enumerate(site_estimates) if e.available and e.standard_error(scale, confidence)]
    if len(used) < 2:
        return None
    values = [_to_scale(site_estimates[i].value, scale) for i in used]  # type: ignore[arg-type]
    errors = [site_estimates[i].standard_error(scale, confidence) for i in used]
    pooled = random_effects_meta_analysis(values, errors, confidence)  # type: ignore[arg-type]
    weights: list[float | None] = [None] * len(site_estimates)
    for i, weight in zip(used, pooled.weights, strict=True):
        weights[i] = weight
    return pooled.model_copy(update={"pooled": _from_scale(pooled.pooled, scale),
                                     "lower": _from_scale(pooled.lower, scale),
                                     "upper": _from_scale(pooled.upper, scale), "scale": scale,
                                     "weights": weights})
