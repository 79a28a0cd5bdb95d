"""The issue-13 targets, read from finished main-job runs (`oncofed-simulate`, every validation phase on).

Reads each run's metrics.json and the sites' report.json (nothing is retrained or re-scored) and writes, per
seed and as means: the weighted TEST response AUC / PFS C / OS C, the pooled-centralised and oracle references,
each site's calibration slope and the site's own clinical model's AUC, and the ε each site spent; then checks
the issue's targets and says by how much each missed one misses.

    python -m simulations.benchmarks.main_job_summary runs/seed-42 runs/seed-43 runs/seed-44 \
        --out simulations/benchmarks/results/main_job_wide.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

from shared.atomic import write_atomically

FIGURES = ("response-auc", "pfs-cindex", "os-cindex")
TARGETS = {"response-auc": 0.70, "pfs-cindex": 0.66, "os-cindex": 0.68}
SLOPE_RANGE = (0.8, 1.25)
MIN_TEST_FOR_SLOPE = 100
CLINICAL_TARGET = 5  # sites of 6 where the federated AUC must beat the site's own clinical model


def _weighted(figures: dict[str, dict[str, float]], key: str) -> float | None:
    pairs = [(f[key], f["num-examples"]) for f in figures.values() if f.get(key) is not None]
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs) if pairs else None


def summarise_run(run_dir: Path) -> dict[str, Any]:
    """One run's figures (test split, reported once)."""
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    last = metrics["rounds"][-1]["train"]
    row: dict[str, Any] = {"seed": config.get("seed"), "run": str(run_dir),
                           "test_mean": {k: metrics["test_mean"].get(k) for k in FIGURES},
                           "epsilon": metrics["epsilon"],
                           "federated_epsilon": {s: f.get("epsilon-phase") for s, f in last.items()},
                           "noise": {s: f.get("noise-multiplier") for s, f in last.items()},
                           "recalibration": metrics.get("recalibration")}
    references = metrics.get("references", {})
    for name in ("pooled", "oracle"):
        if name in references:
            row[f"{name}_mean"] = {k: _weighted(references[name], k) for k in FIGURES}
    sites = {}
    for site, figures in sorted(metrics["test"].items()):
        report = json.loads((run_dir / "sites" / site / "report.json").read_text())
        response = report["model"]["response"]
        baselines = {b["name"]: b["evaluation"]["response"]["auc"]["value"] for b in report["baselines"]
                     if (b["evaluation"].get("response") or {}).get("auc")}
        sites[site] = {"n_test": report["n_test"], "auc": response["auc"]["value"],
                       "slope": response["calibration_slope"]["value"],
                       "intercept": response["calibration_intercept"]["value"],
                       "pfs": figures.get("pfs-cindex"), "os": figures.get("os-cindex"),
                       "clinical_model_auc": baselines.get("Clinical model"), "baselines": baselines}
    row["sites"] = sites
    row["slope_in_range"] = sum(SLOPE_RANGE[0] <= s["slope"] <= SLOPE_RANGE[1] for s in sites.values()
                                if s["n_test"] >= MIN_TEST_FOR_SLOPE)
    row["slope_sites"] = sum(s["n_test"] >= MIN_TEST_FOR_SLOPE for s in sites.values())
    row["above_clinical"] = sorted(name for name, s in sites.items()
                                   if s["clinical_model_auc"] is not None and s["auc"] > s["clinical_model_auc"])
    return row


def targets(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the seeds and each target: met, or missed by how much."""
    mean = {k: statistics.mean(r["test_mean"][k] for r in runs) for k in FIGURES}
    checks: dict[str, Any] = {k: {"value": mean[k], "target": TARGETS[k], "met": mean[k] >= TARGETS[k],
                                  "miss": max(0.0, TARGETS[k] - mean[k])} for k in FIGURES}
    if all("pooled_mean" in r for r in runs):
        pooled = {k: statistics.mean(r["pooled_mean"][k] for r in runs) for k in FIGURES}
        checks["within-0.02-of-pooled"] = {k: {"federated": mean[k], "pooled": pooled[k],
                                               "met": mean[k] >= pooled[k] - 0.02} for k in FIGURES}
    checks["calibration-slope"] = {"in_range": sum(r["slope_in_range"] for r in runs),
                                   "cells": sum(r["slope_sites"] for r in runs),
                                   "met": all(r["slope_in_range"] == r["slope_sites"] for r in runs)}
    checks["above-clinical-model"] = {"per_seed": [len(r["above_clinical"]) for r in runs],
                                      "target": CLINICAL_TARGET,
                                      "met": all(len(r["above_clinical"]) >= CLINICAL_TARGET for r in runs)}
    return {"mean_test": mean, "targets": checks}


def markdown(runs: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    seeds = [str(r["seed"]) for r in runs]
    lines = [f"| weighted test mean | {' | '.join('seed ' + s for s in seeds)} | mean | target |",
             "|---|" + "---:|" * (len(seeds) + 1) + "---|"]
    for key, label in zip(FIGURES, ("response AUC", "PFS C-index", "OS C-index"), strict=True):
        check = summary["targets"][key]
        verdict = "met" if check["met"] else f"missed by {check['miss']:.3f}"
        per_seed = " | ".join(f"{r['test_mean'][key]:.3f}" for r in runs)
        lines.append(f"| {label} | {per_seed} | "
                     f"**{summary['mean_test'][key]:.3f}** | ≥ {check['target']:.2f}: {verdict} |")
    lines += ["", "| site | " + " | ".join(f"slope, seed {s}" for s in seeds) + " | "
              + " | ".join(f"AUC − clinical model, seed {s}" for s in seeds) + " |",
              "|---|" + "---:|" * (2 * len(seeds))]
    for site in sorted(runs[0]["sites"]):
        cells = [runs_site["sites"][site] for runs_site in runs]
        slopes = " | ".join(f"{c['slope']:.2f}" for c in cells)
        gaps = " | ".join("—" if c["clinical_model_auc"] is None else f"{c['auc'] - c['clinical_model_auc']:+.3f}"
                          for c in cells)
        small = " (< 100 test patients)" if cells[0]["n_test"] < MIN_TEST_FOR_SLOPE else ""
        lines.append(f"| {site}{small} | {slopes} | {gaps} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmarks.main_job_summary",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (one per seed)")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (and its .md beside it)")
    parser.add_argument("--command", default="", help="the command that produced the runs, recorded as given")
    parser.add_argument("--machine", default="", help="load average and wall time, recorded as given")
    args = parser.parse_args(argv)
    missing = [str(r) for r in args.runs if not (r / "metrics.json").is_file()]
    if missing:
        parser.error(f"no metrics.json in {', '.join(missing)}: give finished run folders of oncofed-simulate")
    runs = [summarise_run(r) for r in args.runs]
    summary = targets(runs)
    write_atomically(args.out, json.dumps({"command": args.command, "machine": args.machine,
                                           "note": "test figures, reported once for defaults chosen on "
                                                   "validation splits (docs/dp_tuning.md)",
                                           **summary, "seeds": {str(r["seed"]): r for r in runs}}, indent=1))
    text = markdown(runs, summary)
    write_atomically(args.out.with_suffix(".md"), text)
    print(text)
    print(json.dumps(summary["targets"], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
