"""Regimen-ranking benchmark: does the model put each patient's truly best regimen first?

On the synthetic consortium the generator recorded, for every patient and every candidate regimen of the
patient's cancer type, the true response probability and true median OS (`_ground_truth/<site>/
regimen_truth.csv`). For every TEST patient of every site (the sites' own splits, client/data/site.py) the benchmark
predicts the patient under each candidate regimen, as the tumour board does, and scores the ranking
(simulations/ranking_metrics.py): within-patient pairwise concordance, top-1 agreement with its chance level,
regret of the model's first choice beside a random choice and the regimen actually given, mean |error|.

Rows: the federated model with DP (trained through the product's own ClientApp and coordinator loop, in
process: simulations/in_process.py InProcessGrid), the same with the propensity-weighted loss
(`propensity-weighting`), federated without DP, pooled centralised and local-only (same model and DP plan,
simulations/references.py train_pooled), and a pooled NON-private classical anchor (ranking_anchor.py).

    python -m simulations.benchmarks.regimen_ranking --quick                  # smoke: 1 round, 1 seed
    python -m simulations.benchmarks.regimen_ranking --seeds 42 43            # the committed table
    python -m simulations.benchmarks.regimen_ranking --run runs/<run>         # an existing run's final model
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from client.data.site import Site
from client.tumour_board.board import median_days
from client.tumour_board.run_bundle import load_run
from shared.config import RunConfig, cohort_directory
from shared.encoding import SurvivalGrid, encode_cohort
from shared.harmonisation import NormalisationStats, pool_summaries, summarise_site
from shared.atomic import write_atomically
from shared.model import predict
from shared.vocabulary import CancerType, regimens_for
from simulations.cohort.io import read_ground_truth
from simulations.main_job import parse_overrides
from simulations.ranking_metrics import OS_PAIR_THRESHOLD_DAYS, RESPONSE_PAIR_THRESHOLD, ranking_figures
from simulations.references import simulated_sites, train_pooled

RESULTS_DIR = Path(__file__).parent / "results"
ROWS = {
    "federated-dp": "Federated, DP",
    "federated-dp-ipw": "Federated, DP, propensity-weighted loss",
    "federated-no-dp": "Federated, no DP",
    "pooled-dp": "Pooled centralised, DP",
    "local-dp": "Local-only (each site its own), DP",
    "anchor": "Pooled classical anchor (logistic + Cox, interactions), no DP",
    "anchor-ipw": "Pooled classical anchor, propensity-weighted, no DP",
    "regimen-only": "Pooled regimen-only model (each regimen's crude rates), no DP",
}
QUICK = {"num-rounds": 1, "local-epochs": 1}
Progress = Callable[[str], None]


def candidate_table(sites: list[Site], cohort: Path, part: str = "test") -> pd.DataFrame:
    """Every test patient once per candidate regimen of its cancer type, with the truth of that pair.

    `part="validation"`: the same on the validation patients, for choosing settings (dp_study.py).
    """
    frames = []
    for site in sites:
        test = site.part(part)
        for cancer in CancerType:
            patients = test[test["cancer_type"] == cancer.value]
            for regimen in regimens_for(cancer):
                frames.append(patients.assign(regimen=regimen.code, site_id=site.site_id))
    candidates = pd.concat(frames, ignore_index=True)
    truth = read_ground_truth(cohort, [s.site_id for s in sites]).set_index(["patient_id", "regimen"])
    keys = list(zip(candidates["patient_id"].astype(str), candidates["regimen"], strict=True))
    matched = truth.reindex(keys)
    if matched["p_response"].isna().any():
        raise ValueError(f"{int(matched['p_response'].isna().sum())} {part} patient × regimen pairs have no ground "
                         f"truth in {cohort}/_ground_truth; regenerate the cohort with `oncofed-cohort`")
    candidates["true_response"] = matched["p_response"].to_numpy(float)
    candidates["true_median_os_days"] = matched["median_os_days"].to_numpy(float)
    candidates["given"] = matched["given"].to_numpy(bool)
    return candidates.sort_values(["patient_id", "regimen"], kind="stable").reset_index(drop=True)


def network_predictions(model: torch.nn.Module, stats: NormalisationStats, grid: SurvivalGrid,
                        candidates: pd.DataFrame) -> pd.DataFrame:
    """The network's response probability and median OS (inf = not reached in the horizon) of each row."""
    outputs = predict(model, encode_cohort(candidates, stats, grid).inputs())
    medians = [median_days(curve, grid.time_grid_days) for curve in outputs.os_survival]
    return pd.DataFrame({"predicted_response": outputs.response_prob,
                         "predicted_median_os_days": [np.inf if m is None else m for m in medians]})


def consortium_stats(sites: list[Site]) -> NormalisationStats:
    """The pooled scaling the coordinator's harmonisation computes from the sites' summaries."""
    return pool_summaries([summarise_site(site.part("train"), min_cell_size=site.min_cell_size) for site in sites])


def train_federated(config: RunConfig, progress: Progress) -> Path:
    """A fresh federation through the product's ClientApp and coordinator loop, in this process (no Ray)."""
    from flwr.common.constant import SUPERLINK_NODE_ID
    from flwr.supercore.task_identity import TaskIdentity

    from client.flower.app import build_client_app
    from server.federation import run_federation
    from simulations.in_process import InProcessGrid

    run_dir = Path(config.output_dir) / config.run_name
    shutil.rmtree(run_dir, ignore_errors=True)  # its sites' ledgers live inside: a rerun starts unspent
    sites = len(simulated_sites(config))
    grid = InProcessGrid(build_client_app(config.to_flower()), num_nodes=sites)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, grid.run.run_id, SUPERLINK_NODE_ID
    run_federation(grid, config, run_dir, progress=lambda line: progress(f"    {line}"))
    return run_dir


def run_table(run_dir: Path, candidates: pd.DataFrame) -> pd.DataFrame:
    """A finished run's final global model (checkpoints/latest round, its own scaling) on the candidates."""
    bundle = load_run(run_dir, last_rounds=1)
    return network_predictions(bundle.final_model, bundle.stats, bundle.grid, candidates)


def row_predictions(row: str, config: RunConfig, sites: list[Site], candidates: pd.DataFrame, progress: Progress
                    ) -> pd.DataFrame:
    """Predictions of one benchmark row for every candidate row (same order)."""
    grid = SurvivalGrid.from_config(config)
    if row.startswith("federated"):
        values = {"dp": row != "federated-no-dp", "propensity-weighting": row == "federated-dp-ipw",
                  "run-name": f"{row}-seed-{config.seed}"}
        federated = RunConfig.from_mapping(config.to_flower() | values)
        return run_table(train_federated(federated, progress), candidates)
    stats = consortium_stats(sites)
    if row == "pooled-dp":
        return network_predictions(train_pooled(sites, config, stats), stats, grid, candidates)
    if row == "local-dp":
        parts = []
        for site in sites:
            rows = candidates["site_id"].to_numpy() == site.site_id
            model = train_pooled([site], config, stats)
            parts.append(network_predictions(model, stats, grid, candidates[rows]).set_index(np.flatnonzero(rows)))
        return pd.concat(parts).sort_index()
    if row in ("anchor", "anchor-ipw", "regimen-only"):
        from simulations.benchmarks.ranking_anchor import fit_anchor, predict_anchor

        train = pd.concat([s.part("train") for s in sites], ignore_index=True)
        validation = pd.concat([s.part("validation") for s in sites], ignore_index=True)
        bound = config.propensity_weight_bound if row == "anchor-ipw" else None
        anchors = fit_anchor(train, validation, stats, grid, bound, regimen_only=row == "regimen-only")
        return predict_anchor(anchors, candidates, stats, grid)
    raise ValueError(f"unknown row {row!r}; choose from {', '.join(ROWS)}")


def summarise(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of every figure, per row."""
    rows = []
    for row in dict.fromkeys(p["row"] for p in points):
        chosen = [p for p in points if p["row"] == row]
        summary: dict[str, Any] = {"row": row, "label": chosen[0]["label"], "seeds": [p["seed"] for p in chosen]}
        for key, value in chosen[0]["figures"].items():
            if isinstance(value, float) or value is None:
                values = [p["figures"][key] for p in chosen if p["figures"][key] is not None]
                summary[key] = {"mean": statistics.fmean(values) if values else None,
                                "std": statistics.stdev(values) if len(values) > 1 else None}
        rows.append(summary)
    return rows


def _cell(entry: dict[str, Any] | None, digits: int = 3) -> str:
    if entry is None or entry["mean"] is None:
        return "—"
    return f"{entry['mean']:.{digits}f}" + (f" ± {entry['std']:.{digits}f}" if entry["std"] is not None else "")


def markdown(summary: list[dict[str, Any]], note: str) -> str:
    header = ("| model | response concordance | OS concordance | top-1 (chance) | regret | regret, random choice | "
              "regret, regimen given | mean abs error | seeds |\n|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {r['label']} | {_cell(r['response_concordance'])} | {_cell(r['os_concordance'])} | "
             f"{_cell(r['top1_agreement'])} ({_cell(r['top1_chance'], 2)}) | {_cell(r['regret'])} | "
             f"{_cell(r['regret_random'])} | {_cell(r['regret_given'])} | {_cell(r['response_mae'])} | "
             f"{len(r['seeds'])} |" for r in summary]
    return header + "\n".join(lines) + "\n\n" + note + "\n"


NOTE = (f"Test patients of every site × every candidate regimen of their cancer type, against the generator's "
        f"truth. Concordance: within-patient pairs whose true response probability differs by ≥ "
        f"{RESPONSE_PAIR_THRESHOLD} (OS: true median OS differs by ≥ {OS_PAIR_THRESHOLD_DAYS:.0f} days, both capped "
        f"at the survival horizon); a random ranking scores 0.5. Top-1: the model's highest predicted response is "
        f"the truly best regimen; chance = mean 1/number of candidates. Regret: true response probability lost by "
        f"the first choice (random choice and the regimen given shown beside it; lower is better). Mean ± std over "
        f"seeds (the seed also redraws the sites' splits). DP rows spend ε per site as configured; the anchor and "
        f"'no DP' rows are non-private references no consortium could release.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--run", type=Path, help="evaluate this finished run's final global model instead of training")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 round of 1 epoch, writes to a temp dir")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "regimen_ranking.json")
    parser.add_argument("--runs-dir", type=Path, help="where the federations' run directories go (default: temp)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config overrides as in oncofed-simulate, e.g. --set num-rounds=10")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    progress: Progress = lambda line: print(line, flush=True)  # noqa: E731
    overrides = {"site-reports": False, "shap-patients": 0, "bootstrap-samples": 20,
                 **(QUICK if args.quick else {}), **parse_overrides(args.set)}
    if args.quick and args.out == RESULTS_DIR / "regimen_ranking.json":
        args.out = Path(tempfile.gettempdir()) / "regimen_ranking_quick.json"
    if args.run is not None:  # never over the committed table: beside the run unless --out says otherwise
        return _evaluate_run(args.run, args.run / "regimen_ranking.json"
                             if args.out == RESULTS_DIR / "regimen_ranking.json" else args.out, progress)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    points = [p for p in previous.get("points", []) if previous.get("overrides") == overrides]
    with tempfile.TemporaryDirectory(prefix="oncofed-ranking-") as scratch:
        runs_dir = args.runs_dir or Path(scratch)
        for seed in args.seeds:
            config = RunConfig.from_mapping(overrides | {"seed": seed, "output-dir": str(runs_dir)})
            sites = simulated_sites(config)
            candidates = candidate_table(sites, cohort_directory(config))
            progress(f"seed {seed}: {candidates['patient_id'].nunique()} test patients × candidate regimens = "
                     f"{len(candidates)} rows at {len(sites)} sites")
            for row in args.rows:
                if any(p["row"] == row and p["seed"] == seed for p in points):
                    progress(f"  {ROWS[row]}, seed {seed}: already in {args.out}, skipped")
                    continue
                started = time.perf_counter()
                progress(f"  {ROWS[row]}, seed {seed} …")
                predicted = row_predictions(row, config, sites, candidates, progress)
                figures = ranking_figures(pd.concat([candidates, predicted.set_index(candidates.index)], axis=1),
                                          config.survival_horizon_days)
                seconds = time.perf_counter() - started
                points.append({"row": row, "label": ROWS[row], "seed": seed, "seconds": round(seconds, 1),
                               "load_average": Path("/proc/loadavg").read_text().split()[:3]
                               if Path("/proc/loadavg").is_file() else None,
                               "figures": figures.model_dump()})
                progress(f"    {seconds:.0f} s: response concordance {figures.response_concordance:.3f}, OS "
                         f"concordance {figures.os_concordance:.3f}, top-1 {figures.top1_agreement:.3f} (chance "
                         f"{figures.top1_chance:.3f}), regret {figures.regret:.3f} (random {figures.regret_random:.3f},"
                         f" given {figures.regret_given:.3f}), MAE {figures.response_mae:.3f}")
                _write(args.out, overrides, points)
    summary = _write(args.out, overrides, points)
    progress(markdown(summary, NOTE))
    progress(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 0


def _write(out: Path, overrides: dict[str, Any], points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    summary = summarise(points)
    config = RunConfig.from_mapping(overrides).to_flower()
    write_atomically(out, json.dumps({"overrides": overrides, "config": config, "thresholds": {
        "response_probability": RESPONSE_PAIR_THRESHOLD, "median_os_days": OS_PAIR_THRESHOLD_DAYS},
        "points": points, "summary": summary}, indent=2))
    write_atomically(out.with_suffix(".md"), markdown(summary, NOTE))
    return summary


def _evaluate_run(run_dir: Path, out: Path, progress: Progress) -> int:
    """Score one finished run (its final global model, its own splits) and print the figures."""
    bundle = load_run(run_dir, last_rounds=1)
    sites = simulated_sites(bundle.config)
    candidates = candidate_table(sites, cohort_directory(bundle.config))
    predicted = network_predictions(bundle.final_model, bundle.stats, bundle.grid, candidates)
    figures = ranking_figures(pd.concat([candidates, predicted.set_index(candidates.index)], axis=1),
                              bundle.config.survival_horizon_days)
    point = {"row": f"run:{run_dir.name}", "label": f"run {run_dir.name}", "seed": bundle.config.seed,
             "figures": figures.model_dump()}
    write_atomically(out, json.dumps({"run": str(run_dir), "config": bundle.config.to_flower(), "thresholds": {
        "response_probability": RESPONSE_PAIR_THRESHOLD, "median_os_days": OS_PAIR_THRESHOLD_DAYS},
        "points": [point]}, indent=2))
    progress(markdown(summarise([point]), NOTE))
    progress(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
