"""How honest are the tumour board's ranges? Measured on the simulated cohort, where the truth is known.

For every TEST patient of every simulated site (the run's own deterministic split) and every candidate regimen
of the patient's cancer type, the synthetic generator recorded the true response probability and the true
median PFS and OS (`_ground_truth/<site>/regimen_truth.csv`). We compare the ensemble's range with them:

- coverage: how often the true value lies inside the members' range (a 95% interval would cover ~95%); a true
  median beyond the horizon counts as covered when the range says "not reached";
- width, and whether a wider range means a larger error (Spearman correlation of width with |mean − truth|);
- reliability of the point estimate: mean |prediction − true probability|, and the Brier score against the
  observed response of the regimen actually given, for the final model (the board's point estimate) and for
  the ensemble mean (the alternative we did not choose).

`python -m simulations.tumour_board_calibration --run runs/<run> [--extra-run runs/<other>] --out calib.json`
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from scipy.stats import spearmanr

from client.data.loader import load_contract_csv
from client.data.site import assign_splits
from client.tumour_board.board import candidate_rows, ensemble_predictions, median_days
from client.tumour_board.run_bundle import load_run
from shared.config import cohort_directory
from shared.atomic import write_atomically

RESPONDERS = ("CR", "PR")


def _test_rows(bundle, cohort: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(candidate rows of every test patient, their truth rows in the same order)."""
    config = bundle.config
    candidates, truths = [], []
    for site_dir in sorted(p for p in cohort.iterdir() if (p / "patients.csv").is_file()):
        patients = load_contract_csv(site_dir / "patients.csv")
        split = assign_splits(patients["patient_id"], config.seed, config.validation_fraction, config.test_fraction)
        test = patients.loc[split == "test"].reset_index(drop=True)
        truth = pd.read_csv(cohort / "_ground_truth" / site_dir.name / "regimen_truth.csv",
                            dtype={"patient_id": str}).set_index(["patient_id", "regimen"])
        for _, patient in test.iterrows():
            rows = candidate_rows(patient)
            candidates.append(rows.assign(_given=(rows["regimen"] == patient["regimen"]).to_numpy(),
                                          _responded=patient["best_response"] in RESPONDERS
                                          if isinstance(patient["best_response"], str) else np.nan))
            truths.append(truth.loc[[(patient["patient_id"], code) for code in rows["regimen"]]].reset_index())
    return pd.concat(candidates, ignore_index=True), pd.concat(truths, ignore_index=True)


def _medians(curves: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """(members, rows, K) → (members, rows) medians in days, +inf when not reached."""
    return np.array([[np.inf if (m := median_days(c, grid)) is None else m for c in member] for member in curves])


def _interval_figures(members: np.ndarray, point: np.ndarray, truth: np.ndarray, log: bool = False) -> dict:
    lower, upper = members.min(axis=0), members.max(axis=0)
    finite = np.isfinite(point) & np.isfinite(truth)
    transform = np.log if log else (lambda x: x)
    error = np.abs(transform(np.where(finite, point, 1.0)) - transform(np.where(finite, truth, 1.0)))
    width = transform(np.where(np.isfinite(upper), upper, np.nan)) - transform(lower)
    usable = finite & np.isfinite(width)
    rho = spearmanr(width[usable], error[usable]).statistic if usable.sum() > 2 else float("nan")
    return {"coverage": float(np.mean((lower <= truth) & (truth <= upper))),
            "median_width": float(np.nanmedian(width)), "mean_abs_error": float(np.mean(error[finite])),
            "spearman_width_vs_error": float(rho), "n": int(len(truth))}


def measure(run: Path, extra_runs: tuple[Path, ...], ensemble_rounds: tuple[int, ...]) -> dict:
    results: dict = {"run": str(run), "extra_runs": [str(p) for p in extra_runs], "ensembles": {}}
    base = load_run(run, last_rounds=max(ensemble_rounds))
    cohort = cohort_directory(base.config)
    rows, truth = _test_rows(base, cohort)
    results["test_patients"] = int((rows["_given"]).sum())
    results["patient_regimen_pairs"] = len(rows)
    grid = base.grid.time_grid_days
    variants = [(f"last {k} rounds", load_run(run, last_rounds=k), ) for k in ensemble_rounds]
    if extra_runs:
        variants.append((f"last {max(ensemble_rounds)} rounds + {len(extra_runs)} other run(s)",
                         load_run(run, last_rounds=max(ensemble_rounds), extra_runs=extra_runs)))
    given = rows["_given"].to_numpy(dtype=bool)
    responded = rows["_responded"].to_numpy(dtype=float)
    observed = given & ~np.isnan(responded)
    for name, bundle in variants:
        out = ensemble_predictions(bundle, rows.drop(columns=["_given", "_responded"]))
        p_mean, p_final = out["response"].mean(axis=0), out["response"][-1]
        figures = {"members": [m.source for m in bundle.members],
                   "response": _interval_figures(out["response"], p_final, truth["p_response"].to_numpy())}
        figures["response"] |= {
            "brier_observed_ensemble_mean": float(np.mean((p_mean[observed] - responded[observed]) ** 2)),
            "brier_observed_final_model": float(np.mean((out["response"][-1][observed] - responded[observed]) ** 2)),
            "mean_abs_error_ensemble_mean": float(np.mean(np.abs(p_mean - truth["p_response"]))),
            "mean_predicted_given": float(p_final[observed].mean()),
            "observed_response_rate_given": float(responded[observed].mean())}
        for endpoint in ("pfs", "os"):
            medians = _medians(out[endpoint], grid)
            point = np.array([np.inf if (m := median_days(c, grid)) is None else m
                              for c in out[endpoint][-1]])
            true_median = truth[f"median_{endpoint}_days"].to_numpy(dtype=float)
            # beyond the horizon the board says "not reached": that is right when the true median is too
            true_median = np.where(true_median > bundle.config.survival_horizon_days, np.inf, true_median)
            figures[f"median_{endpoint}"] = _interval_figures(medians, point, true_median, log=True)
        results["ensembles"][name] = figures
    return results


def _table(results: dict) -> Table:
    table = Table(title=f"Ensemble ranges vs the simulated truth ({results['test_patients']} test patients, "
                        f"{results['patient_regimen_pairs']} patient × regimen pairs)")
    for column in ("ensemble", "figure", "coverage of truth", "median width", "mean |error|",
                   "Spearman(width, error)"):
        table.add_column(column)
    for name, figures in results["ensembles"].items():
        for figure in ("response", "median_pfs", "median_os"):
            f = figures[figure]
            unit = " (log days)" if figure != "response" else ""
            table.add_row(name, figure, f"{f['coverage']:.1%}", f"{f['median_width']:.3f}{unit}",
                          f"{f['mean_abs_error']:.3f}{unit}", f"{f['spearman_width_vs_error']:+.2f}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, type=Path)
    parser.add_argument("--extra-run", action="append", default=[], type=Path)
    parser.add_argument("--rounds", default="3,5", help="ensemble sizes (last N rounds), comma-separated")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    results = measure(args.run, tuple(args.extra_run), tuple(int(k) for k in args.rounds.split(",")))
    console = Console(width=160)
    console.print(_table(results))
    for name, figures in results["ensembles"].items():
        r = figures["response"]
        console.print(f"{name}: Brier vs observed response (given regimen) ensemble mean "
                      f"{r['brier_observed_ensemble_mean']:.4f}, final model {r['brier_observed_final_model']:.4f}; "
                      f"mean |p − true p| final model {r['mean_abs_error']:.4f}, ensemble mean "
                      f"{r['mean_abs_error_ensemble_mean']:.4f}; final model's mean {r['mean_predicted_given']:.3f} vs "
                      f"observed {r['observed_response_rate_given']:.3f}")
    if args.out:
        write_atomically(args.out, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
