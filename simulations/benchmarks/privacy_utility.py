"""Privacy–utility benchmark: the real federation at several privacy budgets, scored on every site's test patients.

For each ε (and each seed) it runs the project's main job (simulations.main_job.run: Flower's simulation
engine, the project's ServerApp and ClientApps, DP-SGD calibrated per site over all planned rounds) on the default
consortium and records the deployed model's weighted-mean and per-site test response AUC and PFS/OS Harrell's C.
ε is each site's whole ε in `oncofed-simulate`, whose validation phases (local-only models, cross-site matrix,
leave-one-site-out) take the default split's share of it. `--phases main-job` runs those phases; `--phases off`
(default, half the cost) runs only the deployed model's federation, at the ε that split leaves it
(deployed_model_epsilons). Pooled/oracle references and site HTML reports are off (they do not change the model).
ε = inf means dp = false. Results are appended run by run to a JSON file (a rerun skips what is there), then
plotted.

    python -m simulations.benchmarks.privacy_utility                      # ε ∈ {0.5, 1, 3, 8, ∞}, seed 42
    python -m simulations.benchmarks.privacy_utility --seeds 42 43 44     # mean ± std over seeds
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table

from shared.config import RunConfig
from shared.run_result import RunResult
from simulations.benchmarks.output import finish, write_json
from simulations.main_job import parse_overrides, run

RESULTS_DIR = Path(__file__).parent / "results"
FIGURES = {"response-auc": "Response AUC", "pfs-cindex": "PFS Harrell's C", "os-cindex": "OS Harrell's C"}
DEFAULT_EPSILONS = (0.5, 1.0, 3.0, 8.0, math.inf)


MAIN_JOB_PHASES = {**RunConfig.MAIN_JOB_PHASES, "loso-rounds": RunConfig().loso_rounds}  # as oncofed-simulate
NO_PHASES = {"share-local-models": False, "local-references": False, "leave-one-site-out": False}


def run_config(epsilon: float, seed: int, runs_dir: Path, overrides: dict[str, Any], phases: str = "off"
               ) -> RunConfig:
    """The configuration of one point of the curve; ε is each site's whole ε in the main job (inf: no DP).

    phases="main-job": `oncofed-simulate`'s validation phases run, and the deployed model gets the default split's
    share of ε. phases="off": only the deployed model's federation runs (half the cost), with target-epsilon set to
    the deployed model's ε under that split (deployed_model_epsilons; the smallest over the sites)."""
    if phases not in ("off", "main-job"):
        raise ValueError(f"phases must be 'off' or 'main-job', not {phases!r}")
    values = {"site-reports": False, **MAIN_JOB_PHASES, **overrides, "seed": seed, "output-dir": str(runs_dir),
              "run-name": f"eps-{_label(epsilon)}-seed-{seed}", "dp": math.isfinite(epsilon)}
    if math.isfinite(epsilon):
        values["target-epsilon"] = epsilon
    main_job = RunConfig.from_mapping(values)
    if phases == "main-job":
        return main_job
    values |= NO_PHASES
    if math.isfinite(epsilon):
        values["target-epsilon"] = min(deployed_model_epsilons(main_job).values())
    return RunConfig.from_mapping(values)


def deployed_model_epsilons(main_job: RunConfig) -> dict[str, float]:
    """Each site's ε of the deployed model alone when the main job's validation phases share the site's ε by the
    default split: the noise the ClientApp plans for a federated round (client/training/privacy.py plan_round)
    and that mechanism's ε over the federation's rounds."""
    from client.training.privacy import plan_round
    from server.validation import planned_training_rounds
    from simulations.references import simulated_sites

    sites = simulated_sites(main_job)
    planned = planned_training_rounds(main_job, len(sites))
    return {site.site_id: plan_round(main_job.target_epsilon, site.delta(), main_job.validation_epsilon_share,
                                     "federated", planned.federated, planned.validation, len(site.part("train")),
                                     main_job.batch_size, main_job.local_epochs).group_budget for site in sites}


def _label(epsilon: float) -> str:
    return "inf" if math.isinf(epsilon) else f"{epsilon:g}"


def one_point(config: RunConfig, epsilon: float) -> dict[str, Any]:
    """Run one federation and keep what the benchmark reports (test figures only, never validation)."""
    started = time.perf_counter()
    try:
        _, results = run(config, Console(quiet=True))
    except RuntimeError as error:  # e.g. Ray's node timing out at start on a busy machine: one more try
        print(f"  the federation failed ({error}); trying once more", flush=True)
        started = time.perf_counter()
        _, results = run(config, Console(quiet=True))
    return point_from_results(results, epsilon, config.seed, time.perf_counter() - started)


def point_from_results(results: RunResult, epsilon: float, seed: int, seconds: float) -> dict[str, Any]:
    """One point of the curve from a run's metrics.json (test figures only, never validation)."""
    return {"epsilon": _label(epsilon), "seed": seed, "seconds": round(seconds, 1),
            "rounds": len(results.rounds), "test_mean": {k: results.test_mean.get(k) for k in FIGURES},
            "test": {site: {k: figures.get(k) for k in (*FIGURES, "num-examples")}
                     for site, figures in sorted(results.test.items())},
            "epsilon_spent": results.epsilon, "deployed_model_epsilon": deployed_model_epsilon(results),
            "sites_missing": results.test_missing}


def deployed_model_epsilon(results: RunResult) -> dict[str, float]:
    """Each site's ε of the deployed (federated) model alone, as its last federated round reported it."""
    last = results.rounds[-1].train if results.rounds else {}
    return {site: figures["epsilon-phase"] for site, figures in sorted(last.items()) if "epsilon-phase" in figures}


def added_points(other: dict[str, Any], overrides: dict[str, Any], points: list[dict[str, Any]],
                 seeds: list[int]) -> list[dict[str, Any]]:
    """Another results file's points for the (ε, seed) pairs `points` lacks, each with the phases it ran with."""
    if other.get("overrides") != overrides:
        raise ValueError(f"--add-points: that file ran with overrides {other.get('overrides')}, this one with "
                         f"{overrides}; its points are not comparable")
    have = {(p["epsilon"], p["seed"]) for p in points}
    phases = other.get("phases") if other.get("phases") in PHASES else "main-job"  # before --phases: the main job's
    return [p | {"phases": p.get("phases", phases)} for p in other.get("points", [])
            if (p["epsilon"], p["seed"]) not in have and p["seed"] in seeds]


def summarise(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and standard deviation over seeds of each weighted-mean test figure, per ε."""
    rows = []
    for label in dict.fromkeys(p["epsilon"] for p in points):
        chosen = [p for p in points if p["epsilon"] == label]
        row: dict[str, Any] = {"epsilon": label, "seeds": [p["seed"] for p in chosen],
                               "phases": sorted({p.get("phases", "main-job") for p in chosen})}
        for key in FIGURES:
            values = [p["test_mean"][key] for p in chosen if p["test_mean"].get(key) is not None]
            row[key] = {"mean": statistics.fmean(values) if values else None,
                        "std": statistics.stdev(values) if len(values) > 1 else None}
        row["max_epsilon_spent"] = max((max(p["epsilon_spent"].values(), default=0.0) for p in chosen), default=0.0)
        deployed = [e for p in chosen for e in p.get("deployed_model_epsilon", {}).values()]
        row["deployed_model_epsilon"] = {"min": min(deployed), "max": max(deployed)} if deployed else None
        rows.append(row)
    return sorted(rows, key=lambda r: float(r["epsilon"]))


def plot(summary: list[dict[str, Any]], out_path: Path) -> Path:
    """Each test figure against ε (log axis; 'no DP' drawn at the right), mean ± std over seeds."""
    figure = Figure(figsize=(6.8, 4.4), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    finite = [float(r["epsilon"]) for r in summary if r["epsilon"] != "inf"]
    no_dp_x = (max(finite) * 4) if finite else 1.0
    xs = [float(r["epsilon"]) if r["epsilon"] != "inf" else no_dp_x for r in summary]
    for key, label in FIGURES.items():
        means = [r[key]["mean"] for r in summary]
        errors = [r[key]["std"] or 0.0 for r in summary]
        shown = [(x, m, e) for x, m, e in zip(xs, means, errors, strict=True) if m is not None]
        if shown:
            axes.errorbar([s[0] for s in shown], [s[1] for s in shown], yerr=[s[2] for s in shown], marker="o",
                          capsize=3, label=label)
    axes.axhline(0.5, color="#a5a5a5", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_xticks(xs, [r["epsilon"] if r["epsilon"] != "inf" else "no DP" for r in summary])
    axes.minorticks_off()
    seeds = max(len(r["seeds"]) for r in summary)
    axes.set(xlabel="ε per site (δ = 0.1 / n_train)", ylabel="Weighted mean over sites, test patients",
             title=f"Privacy–utility, default consortium ({seeds} seed{'s' if seeds > 1 else ''}"
                   f"{', mean ± std' if seeds > 1 else ''})")
    axes.legend(fontsize=8)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)
    return out_path


def table(summary: list[dict[str, Any]]) -> Table:
    result = Table(title="Privacy–utility: weighted mean over sites of the test figures")
    result.add_column("ε per site")
    for label in (*FIGURES.values(), "max ε spent", "deployed model's ε", "seeds"):
        result.add_column(label, justify="right")
    for row in summary:
        cells = []
        for key in FIGURES:
            mean, std = row[key]["mean"], row[key]["std"]
            cells.append("—" if mean is None else f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else ""))
        result.add_row("∞ (no DP)" if row["epsilon"] == "inf" else row["epsilon"], *cells,
                       f"{row['max_epsilon_spent']:.2f}" if row["epsilon"] != "inf" else "—",
                       _range(row.get("deployed_model_epsilon")), str(len(row["seeds"])))
    return result


def _range(span: dict[str, float] | None) -> str:
    return "—" if not span else f"{span['min']:.2f}–{span['max']:.2f}"


PHASES = {
    "main-job": "the main job's validation phases on (local-only models, cross-site matrix, leave-one-site-out "
                f"federations of {RunConfig().loso_rounds} rounds), so the deployed model gets the default budget "
                "split's share of each site's ε; pooled/oracle references and site HTML reports off (they do not "
                "change the model)",
    "off": "the deployed model's federation only (validation phases off, to halve the cost), its target-epsilon "
           "set to the deployed model's ε when the main job's validation phases share the site's ε by the default "
           "split (the smallest over the sites; points[].deployed_model_epsilon holds each site's); the x axis is "
           "the site's whole ε; pooled/oracle references and site HTML reports off"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epsilons", nargs="+", type=float, default=list(DEFAULT_EPSILONS),
                        help="ε per site; inf = no DP (default: 0.5 1 3 8 inf)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[42])
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "privacy_utility.json")
    parser.add_argument("--phases", choices=sorted(PHASES), default="off",
                        help="off: the deployed model's federation only, at its ε under the default split (default); "
                             "main-job: with the main job's validation phases")
    parser.add_argument("--add-points", type=Path, metavar="JSON",
                        help="take the points of another results file of this benchmark (same overrides) for the "
                             "(ε, seed) pairs this one lacks, each marked with the phases it ran with")
    parser.add_argument("--runs-dir", type=Path, help="where the federations' run directories go (default: a temp dir)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any other run-config key, e.g. --set num-rounds=2 (default: the project's defaults, "
                             "site-reports=false: the benchmark needs only the figures sites send)")
    args = parser.parse_args(argv)
    console = Console(width=150)
    overrides = parse_overrides(args.set)
    previous = json.loads(args.out.read_text()) if args.out.is_file() else {}
    same = previous.get("overrides") == overrides and previous.get("phases", "main-job") == args.phases
    points: list[dict[str, Any]] = [p | {"phases": p.get("phases", args.phases)}
                                    for p in (previous.get("points", []) if same else [])]
    if args.add_points:
        points += added_points(json.loads(args.add_points.read_text()), overrides, points, args.seeds)
    done = {(p["epsilon"], p["seed"]) for p in points}
    with tempfile.TemporaryDirectory(prefix="oncofed-privacy-utility-") as scratch:
        runs_dir = args.runs_dir or Path(scratch)
        for seed in args.seeds:
            for epsilon in args.epsilons:
                if (_label(epsilon), seed) in done:
                    console.print(f"ε={_label(epsilon)} seed {seed}: already in {args.out}, skipped")
                    continue
                config = run_config(epsilon, seed, runs_dir, overrides, args.phases)
                console.print(f"ε={_label(epsilon)} seed {seed}: federating {config.num_rounds} rounds …")
                point = one_point(config, epsilon)
                points.append(point | {"phases": args.phases})
                console.print(f"  {point['seconds']:.0f} s; test mean " + ", ".join(
                    f"{FIGURES[k]} {v:.3f}" for k, v in point["test_mean"].items() if v is not None))
                write_json(args.out, {"overrides": overrides, "phases": args.phases, "points": points,
                                      "summary": summarise(points)})
    summary = summarise(points)
    return finish(args.out, {"overrides": overrides, "phases": args.phases,
                             "phases_note": {name: PHASES[name] for name in sorted({p["phases"] for p in points})},
                             "load_average_at_end": Path("/proc/loadavg").read_text().split()[:3]
                             if Path("/proc/loadavg").is_file() else None,
                             "config": run_config(math.inf, args.seeds[0], Path("runs"), overrides,
                                                  args.phases).to_flower(),
                             "points": points, "summary": summary}, summary, plot, table, console)


if __name__ == "__main__":
    sys.exit(main())
