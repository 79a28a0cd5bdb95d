"""Per-site response calibration: would a site's own Platt fit on its validation split beat the consortium's one?

The main job recalibrates the response logit once for the whole consortium (server/recalibration.py: p = σ(a·z + b)
over every site's validation split). This benchmark asks, on finished main-job runs and on VALIDATION splits only,
whether a site should then refit (a_s, b_s) on its own validation patients — at the site, nothing leaving it:
- each site's validation slope of the consortium-recalibrated model, with its standard error, and Cochran's Q for
  whether the sites' slopes differ by more than their sampling error;
- repeated stratified 5-fold cross-validation inside each site's validation split of the candidate site fits (own
  Platt; own intercept only; Platt shrunk towards the consortium's fit by a ridge of several strengths; none);
  the one with the lowest held-out log-loss over all sites and runs is chosen.
Then, reported once, on each site's TEST patients: the calibration slope of the product (consortium fit only) and of
the chosen site fit (fitted on the whole validation split), and how often a slope estimated on that many test
patients lands in [0.8, 1.25] when the outcomes truly follow the model's own predicted probabilities (a model
calibrated perfectly at that site) or the generator's true probabilities (simulation only): the attainable ceiling
of the target "slope 0.8–1.25 at every site with ≥ 100 test patients" at these sample sizes. That ceiling uses the
test patients' predictions and truth, never their outcomes.

    python -m simulations.benchmarks.site_calibration RUN_DIR [RUN_DIR ...] --out results/site_calibration.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import special, stats
from sklearn.metrics import log_loss
from sklearn.model_selection import RepeatedStratifiedKFold

from client.training.recalibration import MIN_SITE_SLOPE, fit_site_recalibration, recalibration_sums
from server.checkpoint import load_final_model
from shared.atomic import write_atomically
from shared.config import RunConfig, cohort_directory
from shared.encoding import encode_cohort
from shared.metrics import calibration_intercept_value, calibration_slope_value, responder_labels
from shared.model import predict
from simulations.cohort.io import GROUND_TRUTH_DIR
from simulations.references import simulated_sites

RESULTS = Path(__file__).parent / "results" / "site_calibration.json"
SLOPE_RANGE = (0.8, 1.25)
MIN_TEST_FOR_SLOPE = 100
FOLDS, REPEATS = 5, 20
SIMULATED_DRAWS = 400
# (ridge on a − 1, ridge on b) of each candidate site fit; the consortium's fit is (1, 0), so "none" keeps it
CANDIDATES: dict[str, tuple[float, float]] = {
    "none (consortium fit only)": (math.inf, math.inf),
    "site intercept only": (math.inf, 0.0),
    "site Platt": (0.0, 0.0),
    **{f"site Platt, ridge {s:g}": (s, s) for s in (3.0, 10.0, 30.0, 100.0)},
}
NONE = "none (consortium fit only)"


def product_setting(candidate: str) -> dict[str, Any]:
    """The run configuration that makes the ClientApp use this candidate (client/flower/app.py evaluate)."""
    ridge_slope, ridge_intercept = CANDIDATES[candidate]
    if math.isinf(ridge_intercept):
        return {"site-recalibration": "none"}
    if math.isinf(ridge_slope):
        return {"site-recalibration": "intercept"}
    return {"site-recalibration": "platt", "site-recalibration-ridge": ridge_slope}


def fit_site_platt(logit: np.ndarray, responder: np.ndarray, ridge_slope: float, ridge_intercept: float
                   ) -> tuple[float, float]:
    """The site's own fit as the ClientApp makes it (client/training/recalibration.py recalibrate_at_site): a slope
    below its floor leaves the consortium's fit alone."""
    a, b = fit_site_recalibration(logit, responder, ridge_slope, ridge_intercept)
    return (a, b) if a >= MIN_SITE_SLOPE else (1.0, 0.0)


def slope_with_error(logit: np.ndarray, responder: np.ndarray) -> tuple[float, float]:
    """The calibration slope (own Platt a) and its standard error from the observed information."""
    a, b = fit_site_recalibration(logit, responder, 0.0, 0.0)
    sums = recalibration_sums(logit, responder, a, b)
    information = np.array([[sums["recal-hessian-aa"], sums["recal-hessian-ab"]],
                            [sums["recal-hessian-ab"], sums["recal-hessian-bb"]]])
    return a, float(math.sqrt(np.linalg.inv(information)[0, 0]))


def cochran_q(slopes: list[float], errors: list[float]) -> dict[str, float]:
    """Do the sites' slopes differ by more than their sampling errors? Q, its degrees of freedom, p and I²."""
    weights = 1.0 / np.square(errors)
    pooled = float(np.sum(weights * np.array(slopes)) / np.sum(weights))
    q = float(np.sum(weights * np.square(np.array(slopes) - pooled)))
    dof = len(slopes) - 1
    return {"q": q, "dof": dof, "p": float(stats.chi2.sf(q, dof)), "i2": max(0.0, (q - dof) / q) if q > 0 else 0.0,
            "pooled_slope": pooled}


def cross_validated_log_loss(logit: np.ndarray, responder: np.ndarray, seed: int) -> dict[str, float]:
    """Held-out log-loss of each candidate site fit, repeated stratified K-fold inside one validation split."""
    splitter = RepeatedStratifiedKFold(n_splits=FOLDS, n_repeats=REPEATS, random_state=seed)
    losses: dict[str, list[float]] = {name: [] for name in CANDIDATES}
    for fit_rows, held_rows in splitter.split(logit, responder):
        for name, ridges in CANDIDATES.items():
            a, b = fit_site_platt(logit[fit_rows], responder[fit_rows], *ridges)
            p = special.expit(a * logit[held_rows] + b)
            losses[name].append(log_loss(responder[held_rows], p, labels=[0, 1]) * len(held_rows))
    return {name: float(np.sum(values)) / (REPEATS * len(logit)) for name, values in losses.items()}


def slope_in_range_chance(probability: np.ndarray, rng: np.random.Generator, draws: int = SIMULATED_DRAWS
                          ) -> float:
    """How often the slope of these predictions lands in the target range when outcomes follow `probability`."""
    hits = 0
    for _ in range(draws):
        outcome = rng.random(len(probability)) < probability
        if outcome.all() or not outcome.any():
            continue
        hits += SLOPE_RANGE[0] <= calibration_slope_value(probability, outcome) <= SLOPE_RANGE[1]
    return hits / draws


def true_response_probability(config: RunConfig, site_id: str, patient_ids: pd.Series) -> np.ndarray | None:
    """The generator's probability of response under the regimen given (simulation only; None without truth)."""
    path = cohort_directory(config) / GROUND_TRUTH_DIR / site_id / "regimen_truth.csv"
    if not path.is_file():
        return None
    truth = pd.read_csv(path, usecols=["patient_id", "given", "p_response"])
    given = truth.loc[truth["given"].astype(str).str.lower() == "true"].set_index("patient_id")["p_response"]
    return given.reindex(patient_ids).to_numpy(dtype=float)


def site_logits(run_dir: Path) -> tuple[RunConfig, dict[str, dict[str, Any]]]:
    """Each site's response logits of the run's final (consortium-recalibrated) model on validation and test."""
    config, state, grid, model = load_final_model(run_dir)
    sites = {}
    for site in simulated_sites(config):
        parts = {}
        for split in ("validation", "test"):
            frame = site.part(split)
            known, responder = responder_labels(frame)
            probability = predict(model, encode_cohort(frame, state.normalisation, grid).inputs()).response_prob
            parts[split] = {"logit": special.logit(np.clip(probability[known], 1e-7, 1 - 1e-7)),
                            "responder": responder[known].astype(float),
                            "patient_id": frame["patient_id"][known].reset_index(drop=True), "n": len(frame)}
        sites[site.site_id] = parts
    return config, sites


def validation_study(run_dir: Path) -> dict[str, Any]:
    """Validation splits only: slopes with errors, heterogeneity, and the cross-validated candidate fits."""
    config, sites = site_logits(run_dir)
    rows = {}
    for offset, (site_id, parts) in enumerate(sorted(sites.items())):
        z, y = parts["validation"]["logit"], parts["validation"]["responder"]
        slope, error = slope_with_error(z, y)
        rows[site_id] = {"n_validation": len(z), "slope": slope, "slope_se": error,
                         "cv_log_loss": cross_validated_log_loss(z, y, config.seed + offset)}
    return {"run_dir": str(run_dir), "seed": config.seed, "sites": rows,
            "heterogeneity": cochran_q([r["slope"] for r in rows.values()], [r["slope_se"] for r in rows.values()])}


def choose(studies: list[dict[str, Any]]) -> tuple[str, dict[str, float]]:
    """The candidate with the lowest validation log-loss, weighted by validation patients over sites and runs."""
    total = {name: 0.0 for name in CANDIDATES}
    patients = sum(r["n_validation"] for s in studies for r in s["sites"].values())
    for study in studies:
        for row in study["sites"].values():
            for name, loss in row["cv_log_loss"].items():
                total[name] += loss * row["n_validation"] / patients
    return min(total, key=total.get), total


def test_report(run_dir: Path, chosen: str, seed: int) -> dict[str, Any]:
    """Reported once: each site's test slope, consortium fit only and with the chosen site fit, and the ceiling."""
    config, sites = site_logits(run_dir)
    rng = np.random.default_rng(seed)
    rows = {}
    for site_id, parts in sorted(sites.items()):
        a, b = fit_site_platt(parts["validation"]["logit"], parts["validation"]["responder"], *CANDIDATES[chosen])
        z, y = parts["test"]["logit"], parts["test"]["responder"].astype(bool)
        product, refitted = special.expit(z), special.expit(a * z + b)
        truth = true_response_probability(config, site_id, parts["test"]["patient_id"])
        rows[site_id] = {"n_test": parts["test"]["n"], "site_fit": {"a": a, "b": b},
                         "slope_consortium_fit": calibration_slope_value(product, y),
                         "slope_site_fit": calibration_slope_value(refitted, y),
                         "intercept_consortium_fit": calibration_intercept_value(product, y),
                         "intercept_site_fit": calibration_intercept_value(refitted, y),
                         "chance_in_range_if_calibrated": slope_in_range_chance(product, rng),
                         "chance_in_range_true_probabilities": (None if truth is None or np.isnan(truth).any()
                                                               else slope_in_range_chance(truth, rng))}
    return {"run_dir": str(run_dir), "seed": config.seed, "sites": rows}


def in_range(slope: float) -> bool:
    return SLOPE_RANGE[0] <= slope <= SLOPE_RANGE[1]


def summarise(tests: list[dict[str, Any]]) -> dict[str, Any]:
    cells = [row for test in tests for row in test["sites"].values() if row["n_test"] >= MIN_TEST_FOR_SLOPE]
    truth = [row["chance_in_range_true_probabilities"] for row in cells]
    return {"cells": len(cells),
            "median_abs_intercept_consortium_fit": float(np.median([abs(r["intercept_consortium_fit"]) for r in cells])),
            "median_abs_intercept_site_fit": float(np.median([abs(r["intercept_site_fit"]) for r in cells])),
            "in_range_consortium_fit": sum(in_range(r["slope_consortium_fit"]) for r in cells),
            "in_range_site_fit": sum(in_range(r["slope_site_fit"]) for r in cells),
            "expected_in_range_if_calibrated": sum(r["chance_in_range_if_calibrated"] for r in cells),
            "chance_all_in_range_if_calibrated": float(np.prod([r["chance_in_range_if_calibrated"] for r in cells])),
            "expected_in_range_true_probabilities": None if None in truth else sum(truth)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmarks.site_calibration",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished main-job run folders (one per seed)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    missing = [str(r) for r in args.runs if not (r / "checkpoints" / "latest.pt").is_file()]
    if missing:
        parser.error(f"no checkpoints/latest.pt in {', '.join(missing)}: give finished run folders")
    studies = [validation_study(run) for run in args.runs]
    chosen, losses = choose(studies)
    for study in studies:
        print(f"seed {study['seed']}: validation slopes " + ", ".join(
            f"{site} {r['slope']:.2f} ± {r['slope_se']:.2f}" for site, r in study["sites"].items())
            + f"; Cochran's Q {study['heterogeneity']['q']:.1f} on {study['heterogeneity']['dof']} df, "
              f"p = {study['heterogeneity']['p']:.2f}")
    print("validation cross-validated log-loss: " + ", ".join(f"{k} {v:.4f}" for k, v in losses.items())
          + f" → chosen: {chosen}")
    tests = [test_report(run, chosen, 1000 + index) for index, run in enumerate(args.runs)]
    summary = summarise(tests)
    for test in tests:
        print(f"seed {test['seed']} test slopes (consortium fit → {chosen}; chance in range if calibrated): " + ", ".join(
            f"{site} {r['slope_consortium_fit']:.2f} → {r['slope_site_fit']:.2f} ({r['chance_in_range_if_calibrated']:.2f})"
            for site, r in test["sites"].items()))
    print(json.dumps(summary))
    write_atomically(args.out, json.dumps({
        "command": "python -m simulations.benchmarks.site_calibration " + " ".join(argv or sys.argv[1:]),
        "slope_range": SLOPE_RANGE, "candidates": {k: list(v) for k, v in CANDIDATES.items()},
        "validation": {"studies": studies, "cv_log_loss": losses, "chosen": chosen,
                       "chosen_as_run_config": product_setting(chosen)},
        "test": {"runs": tests, "summary": summary}}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
