"""The range-calibration figures: coverage, width and the width/error correlation on known numbers."""

from __future__ import annotations

import numpy as np
import pytest

from simulations.tumour_board_calibration import _interval_figures


def test_interval_figures_on_known_members() -> None:
    members = np.array([[0.1, 0.5, 0.2, 0.6], [0.3, 0.5, 0.4, 0.9]])  # (members, pairs)
    point = members[-1]
    truth = np.array([0.2, 0.7, 0.45, 0.1])
    figures = _interval_figures(members, point, truth)
    assert figures["coverage"] == pytest.approx(0.25)  # only the first pair's truth lies inside its range
    assert figures["median_width"] == pytest.approx(np.median([0.2, 0.0, 0.2, 0.3]))
    assert figures["mean_abs_error"] == pytest.approx(np.mean([0.1, 0.2, 0.05, 0.8]))
    assert figures["n"] == 4


def test_not_reached_medians_count_as_unbounded() -> None:
    members = np.array([[300.0, np.inf], [400.0, np.inf]])
    figures = _interval_figures(members, members[-1], np.array([350.0, np.inf]), log=True)
    assert figures["coverage"] == pytest.approx(1.0)  # "not reached" covers a true median beyond the horizon
    assert figures["mean_abs_error"] == pytest.approx(abs(np.log(400) - np.log(350)))
