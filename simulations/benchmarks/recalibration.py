"""The federated response recalibration applied to finished runs, without retraining: test calibration before/after.

For each run directory: loads the final global model and the feature scaling (checkpoints/latest.pt; a run that
recalibrated already has its (a, b) undone first, so "before" is the trained model), runs the
product's recalibration (server/recalibration.py) through the real ClientApp in this process on the sites'
VALIDATION splits (the default cohort, the run's seed for the splits), then scores the model before and after on
every site's TEST split (simulation only: this script reads every site's data) with the site report's estimators
(shared/metrics/response.py calibration_slope_value / calibration_intercept_value, scikit-learn's AUC).

    python -m simulations.benchmarks.recalibration /tmp/i13-dp/runs/seed-42 /tmp/i13-dp/runs/seed-43 ...

Writes results/recalibration.json. The site state the ClientApp writes (audit logs) goes under --scratch-dir,
never into the run directories read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from flwr.app import ArrayRecord
from sklearn.metrics import roc_auc_score

from client.flower.app import build_client_app
from server.checkpoint import load_checkpoint
from server.coordinator import Coordinator
from server.recalibration import recalibrate_response
from shared.config import RunConfig
from shared.encoding import SurvivalGrid, encode_cohort
from shared.atomic import write_atomically
from shared.metrics import calibration_intercept_value, calibration_slope_value, responder_labels
from shared.model import model_for, fold_response_recalibration, predict
from simulations.in_process import InProcessGrid
from simulations.references import simulated_sites

RESULTS = Path(__file__).parent / "results" / "recalibration.json"


def test_figures(model: torch.nn.Module, config: RunConfig, stats, grid: SurvivalGrid) -> dict[str, dict]:
    """Each site's test calibration slope, intercept and response AUC (patients with a known response)."""
    figures = {}
    for site in simulated_sites(config):
        test = site.part("test")
        known, responder = responder_labels(test)
        p = predict(model, encode_cohort(test, stats, grid).inputs()).response_prob[known]
        y = responder[known]
        figures[site.site_id] = {"n_test": len(test), "n_known_response": int(known.sum()),
                                 "calibration_slope": calibration_slope_value(p, y),
                                 "calibration_intercept": calibration_intercept_value(p, y),
                                 "response_auc": float(roc_auc_score(y, p))}
    return figures


def recalibrate_run(run_dir: Path, scratch: Path) -> dict:
    config = RunConfig.from_mapping(json.loads((run_dir / "config.json").read_text())
                                    | {"output-dir": str(scratch), "run-name": run_dir.name, "site-reports": False})
    state, weights, _ = load_checkpoint(run_dir)
    if state.recalibration is not None:  # the run already folded its own fit in: undo it, start from the trained model
        a, b = state.recalibration
        weights = fold_response_recalibration(weights, 1 / a, -b / a)
    grid = SurvivalGrid.from_config(config)
    before = model_for(config)
    before.load_state_dict(weights)
    sites = simulated_sites(config)
    network = InProcessGrid(build_client_app(config.to_flower()), num_nodes=len(sites))
    started = time.perf_counter()
    coordinator = Coordinator(network, config, stats=state.normalisation)
    folded, recalibration = recalibrate_response(coordinator, ArrayRecord(before.state_dict()))
    seconds = time.perf_counter() - started
    after = model_for(config)
    after.load_state_dict(folded.to_torch_state_dict())
    test_before = test_figures(before, config, state.normalisation, grid)
    test_after = test_figures(after, config, state.normalisation, grid)
    reported = {site: json.loads((run_dir / "sites" / site / "report.json").read_text())["model"]["response"]
                ["calibration_slope"]["value"] for site in test_before if (run_dir / "sites" / site /
                                                                             "report.json").is_file()}
    return {"run_dir": str(run_dir), "seed": config.seed, "completed_round": state.completed_round,
            "run_recalibration": state.recalibration,
            "recalibration": recalibration.model_dump(), "recalibration_seconds": seconds,
            # the run's own site reports: the recalibrated model's slope where the run recalibrated
            "site_report_slope": reported,
            "sites": {site: {"before": test_before[site], "after": test_after[site]} for site in test_before}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", type=Path, nargs="+")
    parser.add_argument("--scratch-dir", type=Path, default=Path("/tmp/oncofed-recalibration"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = []
    for run_dir in args.run_dirs:
        run = recalibrate_run(run_dir, args.scratch_dir)
        r = run["recalibration"]
        print(f"{run_dir.name}: a = {r['slope']:.3f}, b = {r['intercept']:+.3f} on {r['validation_patients']} "
              f"validation patients ({run['recalibration_seconds']:.1f} s)")
        for site, figures in run["sites"].items():
            b, a = figures["before"], figures["after"]
            print(f"  {site:18s} n={b['n_test']:4d} slope {b['calibration_slope']:.2f} → {a['calibration_slope']:.2f}"
                  f"  intercept {b['calibration_intercept']:+.2f} → {a['calibration_intercept']:+.2f}"
                  f"  AUC {b['response_auc']:.4f} → {a['response_auc']:.4f}")
        runs.append(run)
    large = [(f["after"]["calibration_slope"], f["before"]["calibration_slope"])
             for run in runs for f in run["sites"].values() if f["before"]["n_test"] >= 100]
    summary = {"site_runs_with_100_test_patients": len(large),
               "slope_in_0.8_1.25_before": sum(0.8 <= b <= 1.25 for _, b in large),
               "slope_in_0.8_1.25_after": sum(0.8 <= a <= 1.25 for a, _ in large),
               "max_abs_auc_change": max(abs(f["after"]["response_auc"] - f["before"]["response_auc"])
                                         for run in runs for f in run["sites"].values()),
               "load_average": Path("/proc/loadavg").read_text().split()[:3]}
    print(json.dumps(summary))
    write_atomically(args.out, json.dumps({"summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
