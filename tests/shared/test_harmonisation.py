"""Federated harmonisation: pooled site summaries give the statistics of the concatenated rows."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.harmonisation import (
    CATEGORICAL_FEATURES,
    GRID_VERSION,
    HISTOGRAM_EDGES,
    LOG1P_FEATURES,
    NUMERIC_FEATURES,
    NUMERIC_TRANSFORMS,
    SUPPRESSED,
    FeatureSummary,
    coarsen_histogram,
    from_metric_record_dict,
    pool_summaries,
    summarise_site,
    suppress_small_counts,
    to_metric_record_dict,
)
from tests.client.test_site_data_examples import example_contract_frame


def three_sites() -> list[pd.DataFrame]:
    return [example_contract_frame(n, seed=seed, prefix=f"S{seed}-") for n, seed in ((120, 1), (75, 2), (200, 3))]


def test_pooled_mean_and_std_equal_the_concatenated_rows() -> None:
    sites = three_sites()
    stats = pool_summaries(summarise_site(frame) for frame in sites)
    rows = pd.concat(sites, ignore_index=True)
    for feature in NUMERIC_FEATURES:
        values = NUMERIC_TRANSFORMS[feature](rows[feature].dropna().to_numpy())
        assert stats.count[feature] == len(values)
        assert stats.mean[feature] == pytest.approx(values.mean(), rel=1e-12, abs=1e-12), feature
        assert stats.std[feature] == pytest.approx(values.std(ddof=1), rel=1e-9), feature
    assert stats.n_patients == len(rows)
    assert stats.transform["tumour_size_mm"] == "log1p" and stats.transform["age_years"] == "identity"


def test_pooled_histograms_and_counts_equal_the_concatenated_rows_without_suppression() -> None:
    sites = three_sites()
    stats = pool_summaries(summarise_site(frame, min_cell_size=1) for frame in sites)
    rows = pd.concat(sites, ignore_index=True)
    for feature in NUMERIC_FEATURES:
        edges = np.asarray(HISTOGRAM_EDGES[feature])
        direct, _ = np.histogram(np.clip(rows[feature].dropna(), edges[0], edges[-1]), bins=edges)
        assert stats.histogram[feature] == direct.astype(float).tolist(), feature
    assert stats.category_counts["regimen"]["FOLFOX"] == (rows["regimen"] == "FOLFOX").sum()
    assert stats.category_counts["er_positive"] == {"false": float((rows["er_positive"] == 0).sum()),
                                                    "true": float((rows["er_positive"] == 1).sum())}
    median = stats.quantile("age_years", 0.5)
    assert abs(median - rows["age_years"].median()) <= 4.0  # within one bin of the fixed grid


def test_nothing_small_leaves_a_site() -> None:
    frame = example_contract_frame(60, seed=4)
    frame["pdl1_tps_percent"] = [50.0] * 5 + [np.nan] * 55  # only five patients tested
    summary = summarise_site(frame, min_cell_size=10)
    for feature, counts in summary.categorical.items():
        assert all(c == 0 or c >= 10 for c in counts.values()), (feature, counts)
        assert sum(counts.values()) in (0, frame[feature].notna().sum())
    for feature, part in summary.numeric.items():
        assert part.count == 0 or part.count >= 10
        assert sum(part.histogram) == pytest.approx(part.count)
    assert summary.numeric["pdl1_tps_percent"].count == 0
    assert summary.numeric["pdl1_tps_percent"].sum == 0 and set(summary.numeric["pdl1_tps_percent"].histogram) == {0}


def test_a_site_below_the_minimum_cell_size_cannot_share() -> None:
    with pytest.raises(ValueError, match="fewer than the minimum cell size 10"):
        summarise_site(example_contract_frame(9), min_cell_size=10)


def test_suppressed_features_fall_back_to_a_defined_standardisation() -> None:
    stats = pool_summaries([summarise_site(example_contract_frame(12, seed=5), min_cell_size=10)])
    assert stats.count["pdl1_tps_percent"] == 0
    assert (stats.mean["pdl1_tps_percent"], stats.std["pdl1_tps_percent"]) == (0.0, 1.0)
    assert math.isnan(stats.quantile("pdl1_tps_percent", 0.5))


def test_metric_record_round_trip() -> None:
    summary = summarise_site(example_contract_frame(80, seed=6))
    record = to_metric_record_dict(summary)
    assert all(isinstance(k, str) and isinstance(v, float) for k, v in record.items())
    assert record["n:age_years"] == 80.0 and "sum:age_years" in record and "sumsq:tumour_size_mm" in record
    assert record["hist:age_years:0"] >= 0 and record["site:grid_version"] == GRID_VERSION
    assert "cat:regimen:FOLFOX" in record and "cat:kras:true" in record
    assert from_metric_record_dict(record) == summary


def test_metric_records_from_another_release_are_refused() -> None:
    record = to_metric_record_dict(summarise_site(example_contract_frame(20)))
    with pytest.raises(ValueError, match="grid version"):
        from_metric_record_dict({**record, "site:grid_version": GRID_VERSION + 1.0})
    with pytest.raises(ValueError, match="outside the grid"):
        from_metric_record_dict({**record, "hist:age_years:99": 1.0})
    with pytest.raises(ValueError, match="not one this OncoFed release writes"):
        from_metric_record_dict({**record, "n:shoe_size": 3.0})


def test_transforms_are_defined_once_for_every_numeric_feature() -> None:
    assert set(NUMERIC_TRANSFORMS) == set(NUMERIC_FEATURES) == set(HISTOGRAM_EDGES)
    assert NUMERIC_TRANSFORMS["tmb_mut_per_mb"](np.array([0.0, math.e - 1])).tolist() == [0.0, 1.0]
    assert NUMERIC_TRANSFORMS["age_years"](np.array([50.0])).tolist() == [50.0]
    assert set(LOG1P_FEATURES) == {"tumour_size_mm", "suv_max", "mtv_ml", "lesion_count", "tmb_mut_per_mb"}
    assert all(f in CATEGORICAL_FEATURES for f in ("sex", "regimen", "kras", "er_positive"))


def test_coarsening_examples() -> None:
    assert coarsen_histogram([12, 0, 3, 4, 5, 20], 10) == [12, 0, 0, 12, 0, 20]  # run total in its middle bin
    assert coarsen_histogram([12, 0, 3], 10) == [0, 15, 0]  # a small tail joins the last run with patients
    assert coarsen_histogram([3, 4], 10) == [0, 0]
    assert suppress_small_counts({"a": 50, "b": 3, "c": 0}, 10) == {"a": 0, "b": 0, "c": 0, SUPPRESSED: 53}
    assert suppress_small_counts({"a": 50, "b": 30, "c": 4, "d": 7}, 10) == {"a": 50, "b": 30, "c": 0, "d": 0,
                                                                              SUPPRESSED: 11}


@settings(max_examples=200, deadline=None)
@given(counts=st.lists(st.integers(0, 40), min_size=1, max_size=25), k=st.integers(1, 15))
def test_coarsened_histograms_keep_the_total_and_show_no_small_count(counts: list[int], k: int) -> None:
    coarse = coarsen_histogram(counts, k)
    assert len(coarse) == len(counts)
    if sum(counts) < k:
        assert coarse == [0.0] * len(counts)
        return
    assert sum(coarse) == pytest.approx(sum(counts))
    assert all(value == 0 or value >= k for value in coarse)


@settings(max_examples=200, deadline=None)
@given(counts=st.dictionaries(st.sampled_from("abcdefg"), st.integers(0, 30), min_size=1), k=st.integers(1, 15))
def test_suppressed_categories_never_show_a_small_count(counts: dict[str, int], k: int) -> None:
    shown = suppress_small_counts(counts, k)
    assert all(v == 0 or v >= k for v in shown.values())
    assert sum(shown.values()) in (0, sum(counts.values()))


def test_summary_is_json_safe() -> None:
    summary = summarise_site(example_contract_frame(40))
    assert FeatureSummary.model_validate_json(summary.model_dump_json()) == summary
