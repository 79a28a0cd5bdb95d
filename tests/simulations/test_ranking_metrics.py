"""The regimen-ranking figures on a hand-made case: 2 patients × 3 regimens, every figure computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from simulations.ranking_metrics import choice_figures, pairwise_concordance, ranking_figures

HORIZON = 1825.0


def hand_made() -> pd.DataFrame:
    """Patient A: truly best is regimen 1, the model prefers 2; patient B: both prefer regimen 3."""
    return pd.DataFrame({
        "patient_id": ["A", "A", "A", "B", "B", "B"],
        "true_response": [0.50, 0.30, 0.28, 0.10, 0.20, 0.60],
        "predicted_response": [0.40, 0.45, 0.10, 0.30, 0.30, 0.50],
        "true_median_os_days": [400.0, 2500.0, math.inf, 100.0, 120.0, 300.0],
        "predicted_median_os_days": [500.0, 300.0, math.inf, 200.0, 100.0, 250.0],
        "given": [False, False, True, False, False, True],
    })


def test_response_concordance_by_hand():
    # A: (1,2) true +0.20 predicted −0.05 discordant; (1,3) +0.22/+0.30 concordant; (2,3) differs by 0.02 < 0.05,
    # not scored. B: (1,2) −0.10 with a predicted tie = 1/2; (1,3) and (2,3) concordant. (1 + 2.5) / 5 = 0.70
    table = hand_made()
    value, pairs = pairwise_concordance(table["patient_id"].to_numpy(), table["predicted_response"].to_numpy(),
                                        table["true_response"].to_numpy(), threshold=0.05)
    assert pairs == 5
    assert value == pytest.approx(0.70)


def test_choice_figures_by_hand():
    table = hand_made()
    figures = choice_figures(table["patient_id"].to_numpy(), table["predicted_response"].to_numpy(),
                             table["true_response"].to_numpy(), table["given"].to_numpy())
    assert figures["top1_agreement"] == pytest.approx(0.5)  # A wrong (picks 2), B right (picks 3)
    assert figures["top1_chance"] == pytest.approx(1 / 3)
    assert figures["regret"] == pytest.approx((0.20 + 0.0) / 2)  # A: 0.50 − 0.30; B: 0
    assert figures["regret_random"] == pytest.approx(((0.50 - 0.36) + (0.60 - 0.30)) / 2)  # best − mean
    assert figures["regret_given"] == pytest.approx((0.22 + 0.0) / 2)  # A was given regimen 3 (0.28)


def test_all_figures_by_hand_with_median_os_capped_at_the_horizon():
    figures = ranking_figures(hand_made(), HORIZON)
    # OS, capped at 1825: A (1,2) true 400 < 1825 but predicted 500 > 300: discordant; (1,3) 400 < 1825 and
    # 500 < 1825: concordant; (2,3) both capped at 1825: not scored. B (1,2) differs by 20 < 30 days: not scored;
    # (1,3), (2,3) concordant. 3 / 4
    assert figures.os_pairs == 4 and figures.os_concordance == pytest.approx(0.75)
    assert figures.response_concordance == pytest.approx(0.70) and figures.response_pairs == 5
    assert figures.response_mae == pytest.approx((0.10 + 0.15 + 0.18 + 0.20 + 0.10 + 0.10) / 6)
    assert (figures.n_patients, figures.n_rows) == (2, 6)


def test_row_order_does_not_matter():
    table = hand_made()
    shuffled = table.iloc[np.random.default_rng(0).permutation(len(table))].reset_index(drop=True)
    assert ranking_figures(shuffled, HORIZON) == ranking_figures(table, HORIZON)


def test_the_truth_itself_is_a_perfect_ranking():
    table = hand_made().assign(predicted_response=lambda t: t["true_response"],
                               predicted_median_os_days=lambda t: t["true_median_os_days"])
    figures = ranking_figures(table, HORIZON)
    assert figures.response_concordance == 1.0 and figures.os_concordance == 1.0
    assert figures.top1_agreement == 1.0 and figures.regret == 0.0 and figures.response_mae == 0.0


def test_a_table_without_the_needed_columns_says_which():
    with pytest.raises(ValueError, match="true_median_os_days"):
        ranking_figures(hand_made().drop(columns="true_median_os_days"), HORIZON)
