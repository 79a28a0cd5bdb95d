"""What DP on the releases costs (issue 15): the federation at several release-epsilon-share values, same total ε.

For each share s (0 = releases protected by the minimum cell size only) it runs the product's ServerApp round loop
and ClientApps over an in-process Flower Grid (simulations/in_process.py) on the default consortium, with the main
job's defaults (ε = 3 per site, 20 rounds) but no validation phases and no recalibration (release DP refuses them),
and records:
- the harmonisation cost: the pooled feature means and standard deviations the model was trained with against
  the noiseless pooled ones (mean error in units of the exact std; std ratio), over the numeric features;
- the model's cost: its true test figures (scored here on every site's test split, simulation only) against s = 0;
- the release's cost: the figures the sites released (noisy) against those true figures.

    python -m simulations.benchmarks.release_privacy                  # s ∈ {0, 0.1, 0.2}, seed 42
    python -m simulations.benchmarks.release_privacy --shares 0 0.05 0.1 0.2 0.4 --seeds 42 43

It writes results/release_privacy.json (and prints each point as it ends).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

RESULTS_DIR = Path(__file__).parent / "results"
FIGURES = ("response-auc", "pfs-cindex", "os-cindex")


def _weighted(figures: dict[str, dict[str, float]], key: str) -> float | None:
    pairs = [(f[key], f["num-examples"]) for f in figures.values() if key in f and f.get("num-examples", 0) > 0]
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs) if pairs else None


def one_point(share: float, seed: int, out: Path) -> dict:
    import torch

    from client.flower.app import build_client_app
    from client.evaluation.cohort import evaluate_cohort
    from client.training.privacy import PrivacyLedger
    from client.governance.release_privacy import figure_sensitivities
    from client.data.site import simulated_site_dirs, simulated_site_table
    from server.checkpoint import load_checkpoint
    from server.federation import run_federation
    from shared.config import RunConfig, run_directory
    from shared.encoding import SurvivalGrid, encode_cohort
    from shared.harmonisation import NUMERIC_FEATURES, pool_summaries, summarise_site
    from shared.model import model_for
    from simulations.in_process import InProcessGrid

    config = RunConfig.from_mapping({"output-dir": str(out), "run-name": f"share-{share}-seed-{seed}", "seed": seed,
                                     "release-epsilon-share": share, "recalibrate-response": False,
                                     "site-reports": False})
    sites = simulated_site_dirs(config)
    run_dir = run_directory(config, 1)
    started = time.perf_counter()
    results = run_federation(InProcessGrid(build_client_app(config.to_flower()), num_nodes=len(sites)), config,
                             run_dir, progress=lambda line: print(line, flush=True))
    seconds = time.perf_counter() - started
    state, weights, _ = load_checkpoint(run_dir)
    grid = SurvivalGrid(config.survival_interval_days, config.survival_horizon_days)
    model = model_for(config)
    model.load_state_dict(weights)
    true_test, exact_summaries, noise_std = {}, [], {}
    for folder in sites:
        patients, split = simulated_site_table(folder / "patients.csv", config.seed, config.validation_fraction,
                                               config.test_fraction)
        test = patients[split == "test"].reset_index(drop=True)
        exact_summaries.append(summarise_site(patients[split == "train"], config.min_cell_size))
        ledger = PrivacyLedger.model_validate_json((run_dir / "sites" / folder.name / "privacy_ledger.json").read_text())
        sigma = next((e.noise_multiplier for e in ledger.entries if e.phase == "release"), None)
        if sigma is not None:  # the released figures' noise std: σ·√K·sensitivity, K = coordinates released
            coordinates = 1 + sum(k in results.test.get(folder.name, {}) for k in FIGURES)
            noise_std[folder.name] = {k: sigma * coordinates ** 0.5 * v for k, v in figure_sensitivities(test).items()}
        with torch.no_grad():
            true_test[folder.name] = evaluate_cohort(model, test, encode_cohort(test, state.normalisation, grid), grid,
                                                     config.min_cell_size, split="test")
    exact = pool_summaries(exact_summaries)
    used = state.normalisation
    mean_error = [abs(used.mean[f] - exact.mean[f]) / exact.std[f] for f in NUMERIC_FEATURES if exact.count[f] > 0]
    std_ratio = [used.std[f] / exact.std[f] for f in NUMERIC_FEATURES if exact.count[f] > 0]
    released = results.test
    ledgers = {folder.name: PrivacyLedger.model_validate_json((run_dir / "sites" / folder.name /
                                                               "privacy_ledger.json").read_text()) for folder in sites}
    point = {
        "release_epsilon_share": share, "seed": seed, "seconds": seconds,
        "harmonisation": {"mean_abs_error_in_std_units": float(np.mean(mean_error)),
                          "max_abs_error_in_std_units": float(np.max(mean_error)),
                          "std_ratio_min": float(np.min(std_ratio)), "std_ratio_max": float(np.max(std_ratio))},
        "true_test_mean": {k: _weighted(true_test, k) for k in FIGURES},
        "released_test_mean": {k: _weighted(released, k) for k in FIGURES},
        "released_minus_true_by_site": {site: {k: released[site][k] - true_test[site][k] for k in FIGURES
                                               if k in released.get(site, {}) and k in true_test[site]}
                                        for site in true_test},
        "released_noise_std_by_site": noise_std,
        "epsilon_by_site": {site: ledger.epsilon() for site, ledger in ledgers.items()},
        "release_epsilon_by_site": {site: ledger.epsilon(group="release") for site, ledger in ledgers.items()},
        "release_noise_multiplier": {site: next((e.noise_multiplier for e in ledger.entries if e.phase == "release"),
                                                None) for site, ledger in ledgers.items()},
        "load_average": os.getloadavg(),
    }
    print(json.dumps(point, indent=1), flush=True)
    return point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="release_privacy", description=__doc__.splitlines()[0])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--out", default="/tmp/oncofed-release-privacy")
    parser.add_argument("--results", default=str(RESULTS_DIR / "release_privacy.json"))
    args = parser.parse_args(argv)
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1  # as Flower's ServerApp runtime does
    points = [one_point(share, seed, Path(args.out)) for seed in args.seeds for share in args.shares]
    Path(args.results).write_text(json.dumps({"points": points}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
