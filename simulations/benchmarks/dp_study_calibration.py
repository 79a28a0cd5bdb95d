"""Validation-split response calibration slope of the DP study's final global models (never the test split).

Reads the study's run directories (dp_study.py --runs-dir, default /tmp/oncofed-dp-study), rebuilds each final
global model from its checkpoint, and scores it on every site's validation patients (simulation only: this script
reads every site's data). Writes the slopes into results/dp_study_calibration.json.

    python -m simulations.benchmarks.dp_study_calibration --runs-dir /tmp/oncofed-dp-study
"""
import argparse
import json
import statistics
from pathlib import Path

import torch

from server.checkpoint import load_final_model
from shared.encoding import encode_cohort
from shared.atomic import write_atomically
from shared.metrics import calibration_slope_value
from shared.model import predict
from simulations.references import simulated_sites

SETTINGS = ("h16-b256-lr01-r20", "h16-b256-lr03-r20", "h16-b256-lr06-r20", "h16-b512-lr02-r20", "h32-b256-lr01-r20",
            "h8-b256-lr01-r20", "old-defaults", "h16-b256-lr03-r40")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/oncofed-dp-study"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    out = {}
    for name in SETTINGS:
        for seed in (42, 43):
            d = args.runs_dir / f"{name}-seed-{seed}"
            cfg, state, grid, model = load_final_model(d)
            slopes = {}
            for site in simulated_sites(cfg):
                val = site.part("validation")
                enc = encode_cohort(val, state.normalisation, grid)
                p = predict(model, enc.inputs()).response_prob
                known = enc.responder_known.numpy() > 0.5
                slopes[site.site_id] = calibration_slope_value(p[known], enc.responder.numpy()[known])
            out.setdefault(name, {})[seed] = slopes
            print(name, seed, {k[:8]: round(v, 2) for k, v in slopes.items()},
                  "median", round(statistics.median(slopes.values()), 2), flush=True)
    write_atomically(Path(__file__).parent / "results" / "dp_study_calibration.json", json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
