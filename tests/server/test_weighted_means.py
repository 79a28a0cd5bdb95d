"""The consortium's weighted means of the sites' figures (server/federation.py)."""

from __future__ import annotations

import pytest

from server.federation import weighted_means
from shared.messages import COUNT_KEY


def test_each_figure_is_weighted_by_the_patient_counts_of_the_sites_that_report_it() -> None:
    figures = {"a": {"auc": 0.6, COUNT_KEY: 100.0}, "b": {"auc": 0.9, "c_index": 0.7, COUNT_KEY: 50.0}}
    assert weighted_means(figures) == {"auc": pytest.approx(0.7), "c_index": pytest.approx(0.7)}


def test_a_site_whose_released_count_was_suppressed_weighs_nothing() -> None:
    # release DP can suppress a noisy count to 0 while the site's figures still arrive
    figures = {"a": {"auc": 0.6, COUNT_KEY: 0.0}, "b": {"auc": 0.8, "c_index": 0.7, COUNT_KEY: 40.0},
               "c": {"c_index": 0.5, COUNT_KEY: 0.0}}
    assert weighted_means(figures) == {"auc": pytest.approx(0.8), "c_index": pytest.approx(0.7)}
    assert weighted_means({"a": {"auc": 0.6, COUNT_KEY: 0.0}}) == {}
