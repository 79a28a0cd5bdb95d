"""Issue 13: does refitting the consortium model's response head at each site beat the site's own clinical model?

In-process, on a finished main-job run (its checkpoints/latest.pt, the final consortium model): for every site,
the clinical model (client/evaluation/baselines.py, fitted on the training split), the consortium model and the
personalised model (client/training/personalise.py, refitted on the training split) are scored on one split.
Settings are chosen on `--split validation`. Test figures come once from main-job runs with the chosen setting
(`--set site-personalisation=...`): `--split reports` reads each site's report.json (test split) from them.

    python -m simulations.benchmarks.site_personalisation --runs /tmp/i13-personal/runs/seed42 ... --split validation
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from client.data.site import simulated_site_dirs, simulated_site_table
from client.evaluation.baselines import fit_baselines
from client.training.personalise import personalise_at_site
from server.checkpoint import load_checkpoint
from shared.config import RunConfig
from shared.encoding import SurvivalGrid, encode_cohort
from shared.metrics import MIN_CELL_SIZE, responder_labels
from shared.model import model_for, predict

SETTINGS = [("response-intercept", 0.0)] + [("response-head", r) for r in (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)]


def _auc(probabilities: np.ndarray, frame) -> float:
    known, responder = responder_labels(frame)
    return float(roc_auc_score(responder[known], probabilities[known]))


def site_aucs(run_dir: Path, split: str, settings: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    """Site → {"clinic", "consortium", "<mode> ridge <r>"...}: response AUC on `split`."""
    config = RunConfig.from_mapping(json.loads((run_dir / "config.json").read_text()))
    state, weights, _ = load_checkpoint(run_dir)
    grid = SurvivalGrid.from_config(config)
    model = model_for(config)
    model.load_state_dict(weights)
    out: dict[str, dict[str, float]] = {}
    for folder in simulated_site_dirs(config):
        patients, parts = simulated_site_table(folder / "patients.csv", config.seed, config.validation_fraction,
                                               config.test_fraction)
        train, scored = (patients.loc[parts == name].reset_index(drop=True) for name in ("train", split))
        clinic = next(b for b in fit_baselines(train, scored, grid.time_grid_days) if b.name == "Clinical model")
        inputs = encode_cohort(scored, state.normalisation, grid).inputs()
        row = {"clinic": _auc(clinic.predictions.response_prob, scored),
               "consortium": _auc(predict(model, inputs).response_prob, scored)}
        for mode, ridge in settings:
            personal = personalise_at_site(model, train, state.normalisation, grid, mode, ridge, MIN_CELL_SIZE)
            row[f"{mode} ridge {ridge:g}"] = (float("nan") if personal is None
                                              else _auc(predict(personal, inputs).response_prob, scored))
        out[folder.name] = row
    return out


def report_aucs(run_dir: Path) -> dict[str, dict[str, float]]:
    """Site → clinic, consortium and personalised test AUC, as each site's own report (report.json) shows them."""
    out: dict[str, dict[str, float]] = {}
    for report in sorted((run_dir / "sites").glob("*/report.json")):
        site = json.loads(report.read_text())
        clinic = next(b for b in site["baselines"] if b["name"] == "Clinical model")
        personalised = site.get("personalised") or {"response": {"auc": {"value": float("nan")}}}
        out[report.parent.name] = {"clinic": clinic["evaluation"]["response"]["auc"]["value"],
                                   "consortium": site["model"]["response"]["auc"]["value"],
                                   "personalised": personalised["response"]["auc"]["value"]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="main-job run directories (one per seed)")
    parser.add_argument("--split", choices=("validation", "test", "reports"), required=True)
    parser.add_argument("--setting", nargs=2, metavar=("MODE", "RIDGE"), help="only this setting (for --split test)")
    parser.add_argument("--out", required=True, help="JSON file for the figures")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    settings = [(args.setting[0], float(args.setting[1]))] if args.setting else SETTINGS
    results = {run: report_aucs(Path(run)) if args.split == "reports" else site_aucs(Path(run), args.split, settings)
               for run in args.runs}
    Path(args.out).write_text(json.dumps(results, indent=1))
    for run, sites in results.items():
        columns = list(next(iter(sites.values())))
        print(f"{run} ({args.split}): site | " + " | ".join(columns))
        for site, row in sites.items():
            print(f"  {site} | " + " | ".join(f"{row[c]:.3f}" for c in columns))
        for column in columns[1:]:
            wins = sum(row[column] > row["clinic"] for row in sites.values())
            print(f"  {column}: above the clinic at {wins}/{len(sites)} sites, "
                  f"mean AUC {np.nanmean([row[column] for row in sites.values()]):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
