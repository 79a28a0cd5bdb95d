"""The DP study's model forms and the main-job target summary (simulations/benchmarks)."""

import pytest

from shared.model import build_model
from simulations.benchmarks.dp_study import MODEL_FORMS, SETTINGS, model_form
from simulations.benchmarks.main_job_summary import targets


def test_a_model_form_applies_to_every_network_built_inside_it_and_only_there():
    with model_form(MODEL_FORMS["recipe:deep"]):
        inside = build_model(10, 16, seed=0)
    outside = build_model(10, 16, seed=0)
    assert not inside.wide and inside.interaction_rank == 0
    assert outside.wide and outside.interaction_rank == 2
    assert all(name in SETTINGS for name in MODEL_FORMS)  # every form is runnable by name


def _run(auc: float, pfs: float, os_: float, slopes: list[float], above: int) -> dict:
    sites = {f"s{i}": {"n_test": 150, "slope": s} for i, s in enumerate(slopes)}
    return {"test_mean": {"response-auc": auc, "pfs-cindex": pfs, "os-cindex": os_},
            "pooled_mean": {"response-auc": 0.69, "pfs-cindex": 0.65, "os-cindex": 0.70}, "sites": sites,
            "slope_in_range": sum(0.8 <= s <= 1.25 for s in slopes), "slope_sites": len(slopes),
            "above_clinical": [f"s{i}" for i in range(above)]}


def test_the_target_summary_says_which_targets_are_met_and_by_how_much_the_others_miss():
    runs = [_run(0.71, 0.64, 0.70, [0.9, 1.0], 5), _run(0.69, 0.66, 0.68, [0.7, 1.3], 4)]
    checks = targets(runs)["targets"]
    assert checks["response-auc"]["met"] and checks["response-auc"]["value"] == pytest.approx(0.70)
    assert not checks["pfs-cindex"]["met"] and checks["pfs-cindex"]["miss"] == pytest.approx(0.01)
    assert checks["os-cindex"]["met"]
    assert checks["within-0.02-of-pooled"]["os-cindex"]["met"] is True
    assert checks["within-0.02-of-pooled"]["pfs-cindex"]["met"] is True  # 0.65 ≥ 0.65 − 0.02
    assert checks["calibration-slope"] == {"in_range": 2, "cells": 4, "met": False}
    assert checks["above-clinical-model"]["per_seed"] == [5, 4] and not checks["above-clinical-model"]["met"]
