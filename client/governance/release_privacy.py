"""DP on a site's releases besides the model: its harmonisation statistics and its test figures (Gaussian mechanism).

With `release-epsilon-share` s > 0 (shared/release_privacy.py) a site spends s × its ε on these releases, in the
same privacy ledger as its training (budget group "release"), and its federated rounds are calibrated beside them,
so the ledger's one ε covers the weights, the harmonisation statistics and the test figures.

Each release is one Gaussian mechanism over a vector: every coordinate is divided by what one patient can change
it by (its sensitivity), so the vector's L2 sensitivity to adding or removing one patient is √K, K being the
coordinates one patient can touch; noise N(0, (σ·√K)²) goes on each scaled coordinate and the ledger records
(σ, sample rate 1, 1 step), which Opacus's RDP accountant composes with the training rounds. The noise comes from a numpy Generator seeded afresh from the
operating system's entropy at every release: not Flower's add_gaussian_noise_inplace, which draws from numpy's global
generator (SHAP's GradientExplainer, run for the site report just before the test figures, re-seeds that one with a
fixed seed, which would make the noise predictable), and nothing seeded from the run's public seed. Everything after
the noise (clamping, suppressing small noisy counts, converting back to sums) is post-processing and costs nothing
more.

Sensitivities. Harmonisation: a patient adds 1 to the site's count, and for each numeric feature with a value 1
to its count, at most 1 to the sum and to the sum of squares of the value scaled to [-1, 1] over the fixed grid's
range (values outside are clipped to it), and 1 to one histogram bin; for each categorical feature 1 to one code.
Test figures: a response AUC moves by at most 1/min(responders, non-responders) when one patient is added or
removed, a Harrell C-index over P comparable pairs by at most (n-1)/(P-(n-1)); the bootstrap bounds are given the
figure's own sensitivity. These two are the sensitivities at the site's own counts (local sensitivity): a strict
worst case over all datasets would need a public lower bound on those counts (docs/privacy.md says so).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from client.data.site import Site
from client.training.privacy import LedgerEntry, calibrate_noise, check_budget, load_ledger, save_ledger
from shared.config import RunConfig
from shared.harmonisation import (
    CATEGORICAL_FEATURES,
    FLAG_FEATURES,
    HISTOGRAM_EDGES,
    NUMERIC_FEATURES,
    NUMERIC_TRANSFORMS,
    FeatureSummary,
    NumericSummary,
    coarsen_histogram,
    suppress_small_counts,
)
from shared.messages import CINDEX_KEYS, COUNT_KEY, FIGURE_ESTIMATES, RESPONSE_AUC, interval_keys
from shared.release_privacy import planned_releases

RELEASED_FIGURES = tuple(FIGURE_ESTIMATES)  # the headline figures (response AUC, PFS and OS C-index)


def release_noise_multiplier(site: Site, plan: RunConfig) -> float:
    """σ of each release: the planned releases together spend exactly the release share of the site's ε."""
    releases = len(planned_releases(plan))
    return calibrate_noise(site.target_epsilon * plan.release_epsilon_share, site.delta(), 1.0, releases)


def planned_release_history(site: Site, plan: RunConfig) -> tuple[float, float, int] | None:
    """The run's releases in the ledger's terms, for calibrating the federated rounds beside them."""
    releases = len(planned_releases(plan))
    if not releases:
        return None
    return release_noise_multiplier(site, plan), 1.0, releases


def charge_release(site: Site, plan: RunConfig, run_id: str, release: str) -> float:
    """Record one release in the site's ledger and return its σ; PrivacyBudgetExceeded (nothing recorded) when it
    would take the releases past their share or the site past its ε."""
    sigma = release_noise_multiplier(site, plan)
    ledger = load_ledger(site.ledger_path, site.delta())
    check_budget(ledger, site.target_epsilon, (sigma, 1.0, 1), "release",
                 site.target_epsilon * plan.release_epsilon_share)
    ledger.entries.append(LedgerEntry(run_id=f"{run_id}:release:{release}", server_round=0, noise_multiplier=sigma,
                                      sample_rate=1.0, steps=1, epsilon_after=0.0, phase="release"))
    ledger.entries[-1].epsilon_after = ledger.epsilon()
    save_ledger(ledger, site.ledger_path)
    return sigma


def _gaussian(scaled: np.ndarray, sigma: float) -> np.ndarray:
    """The Gaussian mechanism on a vector whose every coordinate one patient moves by at most 1."""
    return _add_noise(np.array(scaled, dtype=float), sigma * math.sqrt(len(scaled)))


def _add_noise(values: np.ndarray, std: float) -> np.ndarray:
    """values + N(0, std²) per coordinate, from fresh OS entropy (never a seed anyone else could know)."""
    return values + np.random.default_rng().normal(0.0, std, size=values.shape)


def _range(feature: str) -> tuple[float, float]:
    """Centre and half-width of a feature's fixed grid on the transformed scale (public: the same at every site)."""
    edges = HISTOGRAM_EDGES[feature]
    low, high = (float(v) for v in NUMERIC_TRANSFORMS[feature](np.array([edges[0], edges[-1]])))
    return (low + high) / 2, (high - low) / 2


def noisy_feature_summary(train: pd.DataFrame, min_cell_size: int, sigma: float) -> FeatureSummary:
    """The harmonisation statistics with Gaussian noise, then small noisy cells suppressed as without DP."""
    exact: list[float] = [float(len(train))]
    for feature in NUMERIC_FEATURES:
        edges = np.asarray(HISTOGRAM_EDGES[feature])
        values = np.clip(pd.to_numeric(train[feature], errors="coerce").dropna().to_numpy(dtype=float),
                         edges[0], edges[-1])
        centre, half = _range(feature)
        scaled = (NUMERIC_TRANSFORMS[feature](values) - centre) / half
        histogram, _ = np.histogram(values, bins=edges)
        exact += [float(len(values)), float(scaled.sum()), float(np.square(scaled).sum()), *histogram.astype(float)]
    for feature, codes in CATEGORICAL_FEATURES.items():
        column = train[feature]
        if feature in FLAG_FEATURES:
            column = column.map({1.0: "true", 0.0: "false", True: "true", False: "false"})
        observed = column.dropna().astype(str).value_counts()
        exact += [float(observed.get(code, 0)) for code in codes]
    # one patient touches one coordinate per block: n, then per numeric feature its count, sums and one bin, then
    # one code per categorical feature; the mechanism's √K counts the blocks, not the coordinates
    blocks = 1 + 4 * len(NUMERIC_FEATURES) + len(CATEGORICAL_FEATURES)
    noisy = _add_noise(np.array(exact), sigma * math.sqrt(blocks))
    return _summary_from_noisy(noisy, min_cell_size)


def _summary_from_noisy(noisy: np.ndarray, min_cell_size: int) -> FeatureSummary:
    """Post-processing: clamp to what is possible, suppress noisy cells below the minimum cell size."""
    position = 1
    n_patients = int(round(max(noisy[0], 0.0)))
    numeric: dict[str, NumericSummary] = {}
    for feature in NUMERIC_FEATURES:
        bins = len(HISTOGRAM_EDGES[feature]) - 1
        count, scaled_sum, scaled_squares = noisy[position:position + 3]
        histogram = coarsen_histogram(np.clip(noisy[position + 3:position + 3 + bins], 0, None), min_cell_size)
        position += 3 + bins
        if count < min_cell_size:
            numeric[feature] = NumericSummary(count=0, sum=0.0, sum_squares=0.0, histogram=histogram)
            continue
        scaled_sum = float(np.clip(scaled_sum, -count, count))
        scaled_squares = float(np.clip(scaled_squares, scaled_sum ** 2 / count, count))
        centre, half = _range(feature)
        total = half * scaled_sum + centre * count
        squares = half ** 2 * scaled_squares + 2 * centre * half * scaled_sum + centre ** 2 * count
        numeric[feature] = NumericSummary(count=float(count), sum=float(total), sum_squares=max(float(squares), 0.0),
                                          histogram=histogram)
    categorical: dict[str, dict[str, float]] = {}
    for feature, codes in CATEGORICAL_FEATURES.items():
        counts = {code: max(float(v), 0.0) for code, v in zip(codes, noisy[position:position + len(codes)])}
        position += len(codes)
        categorical[feature] = suppress_small_counts(counts, min_cell_size)
    return FeatureSummary(n_patients=n_patients if n_patients >= min_cell_size else 0, min_cell_size=min_cell_size,
                          numeric=numeric, categorical=categorical)


def figure_sensitivities(patients: pd.DataFrame) -> dict[str, float]:
    """What one patient added or removed can change each released figure by, at this site's counts."""
    from shared.metrics import responder_labels, survival_outcomes

    known, responder = responder_labels(patients)
    sensitivity: dict[str, float] = {}
    smaller_class = min(int(responder[known].sum()), int((known & ~responder).sum()))
    if smaller_class > 0:
        sensitivity[RESPONSE_AUC] = 1.0 / smaller_class
    for endpoint, key in CINDEX_KEYS.items():
        followed, days, event = survival_outcomes(patients, endpoint)
        times, events = np.sort(days[followed]), days[followed][event[followed]]
        pairs = float(np.sum(len(times) - np.searchsorted(times, events, side="right")))
        others = len(times) - 1
        if pairs > others > 0:
            sensitivity[key] = others / (pairs - others)
    return sensitivity


def noisy_test_figures(figures: dict[str, float], patients: pd.DataFrame, min_cell_size: int, sigma: float
                       ) -> dict[str, float]:
    """The headline figures with their intervals and the patient count, with Gaussian noise; nothing else.

    Losses, subgroup figures and SHAP means are not released under release DP (their sensitivity is unbounded
    or rests on small subgroups); the site report on the site's own disk keeps them all."""
    sensitivity = figure_sensitivities(patients)
    of = {key: figure for figure in RELEASED_FIGURES for key in (figure, *interval_keys(figure))}
    keys = [key for key, figure in of.items() if key in figures and figure in figures and figure in sensitivity]
    scales = np.array([1.0] + [sensitivity[of[key]] for key in keys])
    exact = np.array([float(figures[COUNT_KEY])] + [figures[key] for key in keys])
    noisy = _gaussian(exact / scales, sigma) * scales
    count = int(round(noisy[0]))
    released: dict[str, float] = {COUNT_KEY: count if count >= min_cell_size else 0}
    values = dict(zip(keys, np.clip(noisy[1:], 0.0, 1.0)))
    for figure in RELEASED_FIGURES:
        if figure not in values:
            continue
        lower_key, upper_key = interval_keys(figure)
        if lower_key in values and upper_key in values:  # post-processing: keep the bounds ordered
            lower, value, upper = sorted((values[lower_key], values[figure], values[upper_key]))
            released |= {figure: float(value), lower_key: float(lower), upper_key: float(upper)}
        else:
            released[figure] = float(values[figure])
    return released
