"""Uno's C, time-dependent AUC and integrated Brier for a bootstrap: the censoring fit once per site.

scikit-survival's `concordance_index_ipcw`, `cumulative_dynamic_auc` and `integrated_brier_score` re-fit the
censoring Kaplan–Meier of the training split (and re-check every input) on every call; inside a bootstrap that
is the same fit hundreds of times per site and most of a site report's time. Here scikit-survival's
`CensoringDistributionEstimator` is fitted once and each test patient's censoring probability is looked up
once; a resample only indexes them. The estimators are scikit-survival 0.28's, formula for formula, including
which resamples are undefined (ValueError); tests/shared/test_ipcw.py checks every figure against
scikit-survival's own functions. Summation order differs, so figures agree to about 1e-15, not bit for bit.
"""

from __future__ import annotations

import numpy as np
from sksurv.nonparametric import CensoringDistributionEstimator

TIED_TOL = 1e-8


def _censoring_probability(censoring: CensoringDistributionEstimator, time: np.ndarray) -> np.ndarray:
    """Ĝ(t) per time, NaN where scikit-survival refuses (beyond the last training time with Ĝ > 0)."""
    extends = time > censoring.unique_time_[-1]
    if censoring.prob_[-1] > 0:
        probability = np.full(time.shape, np.nan)
        probability[~extends] = censoring.predict_proba(time[~extends]) if (~extends).any() else []
        return probability
    return censoring.predict_proba(time)


class CensoringWeights:
    """The training split's censoring distribution and each test patient's Ĝ at their own time.

    `time` and `event` are the test outcomes already truncated at the end of follow-up.
    """

    def __init__(self, train: np.ndarray, time: np.ndarray, event: np.ndarray) -> None:
        self.censoring = CensoringDistributionEstimator().fit(train)
        self.time = np.asarray(time, dtype=float)
        self.event = np.asarray(event, dtype=bool)
        self.g_at_time = _censoring_probability(self.censoring, self.time)

    def _checked(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        time, event = self.time[rows], self.event[rows]
        if not event.any():
            raise ValueError("all samples are censored")
        return time, event

    def _ipcw(self, rows: np.ndarray, counted: np.ndarray) -> np.ndarray:
        """1/Ĝ(tᵢ) for the resample's events among `counted`, 0 elsewhere (sksurv's predict_ipcw)."""
        g = self.g_at_time[rows]
        events = self.event[rows] & counted
        if not events.any():
            raise ValueError("all samples are censored")
        if np.isnan(g[events]).any():
            raise ValueError("time must be smaller than the largest observed training time")
        if (g[events] == 0.0).any():
            raise ValueError("censoring survival function is zero at one or more time points")
        weights = np.zeros(len(rows))
        weights[events] = 1.0 / g[events]
        return weights

    def uno_c(self, rows: np.ndarray, risk: np.ndarray, tau: float) -> float:
        """concordance_index_ipcw(train, test[rows], risk, tau)[0]: Harrell's pairs weighted by Ĝ(tᵢ)⁻²."""
        time, event = self._checked(rows)
        weight = np.square(self._ipcw(rows, time < tau))
        estimate = risk[rows]
        earlier = time[:, None] < time[None, :]
        tied_censored = (time[:, None] == time[None, :]) & ~event[None, :]
        comparable = event[:, None] & (earlier | tied_censored)
        np.fill_diagonal(comparable, False)
        if not comparable.any():
            raise ValueError("Data has no comparable pairs, cannot estimate concordance index.")
        difference = estimate[:, None] - estimate[None, :]
        tied = np.abs(difference) <= TIED_TOL
        concordant = (comparable & (difference > 0) & ~tied).sum(axis=1) + 0.5 * (comparable & tied).sum(axis=1)
        return float(np.sum(weight * concordant) / np.sum(weight * comparable.sum(axis=1)))

    def dynamic_auc(self, rows: np.ndarray, risk: np.ndarray, horizon: float) -> float:
        """cumulative_dynamic_auc(train, test[rows], risk, [horizon])[0][0]: cases weighted by 1/Ĝ(tᵢ)."""
        time, event = self._checked(rows)
        if horizon >= time.max() or horizon < time.min():
            raise ValueError("all times must be within follow-up time of test data")
        ipcw = self._ipcw(rows, np.ones(len(rows), dtype=bool))
        estimate = risk[rows]
        order = np.argsort(-estimate[:, None], axis=0)[:, 0]
        time, event, estimate, ipcw = time[order], event[order], estimate[order], ipcw[order]
        is_case = (time <= horizon) & event
        is_control = time > horizon
        is_tied = np.absolute(np.diff(np.r_[np.inf, estimate])) <= TIED_TOL
        cumsum_tp = np.cumsum(is_case * ipcw)
        cumsum_fp = np.cumsum(is_control)
        with np.errstate(invalid="ignore", divide="ignore"):
            true_pos = cumsum_tp / cumsum_tp[-1]
            false_pos = cumsum_fp / is_control.sum()
        last_of_ties = np.flatnonzero(is_tied) - 1
        true_pos, false_pos = np.delete(true_pos, last_of_ties), np.delete(false_pos, last_of_ties)
        return float(np.trapezoid(np.r_[0, true_pos], np.r_[0, false_pos]))

    def integrated_brier(self, rows: np.ndarray, survival: np.ndarray, days: np.ndarray) -> float:
        """integrated_brier_score(train, test[rows], survival[rows], days) at the unique `days`."""
        time, event = self._checked(rows)
        days = np.unique(days)
        if days.max() >= time.max() or days.min() < time.min():
            raise ValueError("all times must be within follow-up time of test data")
        if days.shape[0] < 2:
            raise ValueError("At least two time points must be given")
        g_days = _censoring_probability(self.censoring, days)
        g_time = self.g_at_time[rows]
        if np.isnan(g_days).any() or np.isnan(g_time).any():
            raise ValueError("time must be smaller than the largest observed training time")
        g_days, g_time = np.where(g_days == 0, np.inf, g_days), np.where(g_time == 0, np.inf, g_time)
        estimate = survival[rows]
        is_case = ((time[:, None] <= days[None, :]) & event[:, None]).astype(int)
        is_control = (time[:, None] > days[None, :]).astype(int)
        scores = np.mean(np.square(estimate) * is_case / g_time[:, None]
                         + np.square(1.0 - estimate) * is_control / g_days[None, :], axis=0)
        return float(np.trapezoid(scores, days) / (days[-1] - days[0]))
