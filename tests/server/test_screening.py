"""Update screening: unusable and implausibly large updates are named with their figures."""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord

from server.screening import oversized_updates, update_distance, update_problem

REFERENCE = {"w": np.zeros((2, 3), dtype=np.float32), "b": np.zeros(3, dtype=np.float32)}


def arrays(w, b) -> ArrayRecord:
    return ArrayRecord({"w": Array(np.asarray(w, dtype=np.float32)), "b": Array(np.asarray(b, dtype=np.float32))})


def test_shape_nan_and_missing_parameters_are_problems():
    assert update_problem(arrays(np.ones((2, 3)), np.ones(3)), REFERENCE) is None
    assert "shape" in update_problem(arrays(np.ones((3, 2)), np.ones(3)), REFERENCE)
    assert "NaN or infinite" in update_problem(arrays(np.full((2, 3), np.inf), np.ones(3)), REFERENCE)
    only_w = ArrayRecord({"w": Array(np.ones((2, 3), dtype=np.float32))})
    assert update_problem(only_w, REFERENCE) == "missing parameter b"


def test_the_distance_is_the_l2_norm_of_the_whole_update():
    assert np.isclose(update_distance(arrays(np.ones((2, 3)), np.full(3, 2.0)), REFERENCE), np.sqrt(6 + 12))


def test_an_update_far_above_the_median_is_rejected_with_its_figures():
    rejected = oversized_updates({"a": 1.0, "b": 1.2, "c": 0.9, "d": 30.0}, ratio=5)
    assert list(rejected) == ["d"]
    assert "30" in rejected["d"] and "median" in rejected["d"] and "update-norm-ratio" in rejected["d"]


def test_no_size_screen_with_fewer_than_three_updates_or_when_off():
    assert oversized_updates({"a": 1.0, "d": 30.0}, ratio=5) == {}
    assert oversized_updates({"a": 1.0, "b": 1.0, "d": 30.0}, ratio=0) == {}
    assert oversized_updates({"a": 0.0, "b": 0.0, "d": 0.0}, ratio=5) == {}
