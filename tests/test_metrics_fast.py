"""The bootstrap's fast AUC and Harrell's C give the libraries' own values on known inputs, ties included."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from shared.metrics import harrell_c_value, roc_auc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_equals_sklearn_with_tied_scores(seed):
    rng = np.random.default_rng(seed)
    responder = rng.random(120) < 0.4
    score = np.round(rng.random(120) + 0.3 * responder, 1)  # rounding makes many ties
    assert roc_auc(responder, score) == pytest.approx(roc_auc_score(responder, score), abs=1e-12)


def test_roc_auc_refuses_one_class():
    with pytest.raises(ValueError):
        roc_auc(np.ones(5, dtype=bool), np.linspace(0, 1, 5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_harrell_c_equals_sksurv_with_tied_times_and_risks(seed):
    rng = np.random.default_rng(seed)
    time = rng.integers(1, 40, size=150).astype(float)  # many tied times
    event = rng.random(150) < 0.6
    risk = np.round(-time / 40 + rng.normal(0, 0.3, 150), 1)  # tied risks too
    expected = concordance_index_censored(event, time, risk)[0]
    assert harrell_c_value(event, time, risk) == pytest.approx(expected, abs=1e-12)


def test_harrell_c_on_a_hand_counted_example():
    # pairs (0,1), (0,2), (1,2) comparable; (0,1) and (0,2) concordant, (1,2) tied risk: (2 + 0.5) / 3
    assert harrell_c_value(np.array([True, True, False]), np.array([1.0, 2.0, 3.0]),
                           np.array([0.9, 0.5, 0.5])) == pytest.approx(2.5 / 3)
