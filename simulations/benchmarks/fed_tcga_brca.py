"""Fed-TCGA-BRCA accuracy benchmark: the project's federation against FLamby's published table and a pooled Cox model.

    python -m simulations.benchmarks.fed_tcga_brca                 # the full table (5 seeds, no DP and ε 1/3/8)
    python -m simulations.benchmarks.fed_tcga_brca --seeds 42 --rounds 3 --dp none --out /tmp/brca

Hyper-parameters are chosen on a validation part carved from each center's TRAIN patients (seed 42, no DP);
the test sets are touched only by the final runs. Results go to results/fed_tcga_brca.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from lifelines import CoxPHFitter

from shared.atomic import write_atomically
from shared.seeds import RUN_STRIDE
from simulations.benchmarks.brca_federation import (
    FEDERATED,
    NUM_CENTERS,
    BenchmarkPlan,
    evaluation_arrays,
    privacy_for,
    run_in_process,
    spent_epsilon,
    training_arrays,
)
from simulations.benchmarks.brca_training import (
    Privacy,
    TrainingSteps,
    build_model,
    harrell_c,
    risk_scores,
    train_site,
)
from simulations.datasets.fed_tcga_brca.loader import (
    FEATURE_COLUMNS,
    REGIONS,
    CenterData,
    SurvivalArrays,
    load_centers,
)

RESULTS_DIR = Path(__file__).resolve().parent / "results"
SEEDS = (42, 43, 44, 45, 46)
DP_LEVELS: tuple[float | None, ...] = (None, 1.0, 3.0, 8.0)
METHODS = (*FEDERATED, "local", "pooled")

# FLamby's published Fed-TCGA-BRCA figures (PROVENANCE.md): client-mean mean, std, pooled-test mean, std
FLAMBY = {
    "pooled": (0.676, 0.095, 0.704, 0.114), "fedavg": (0.732, 0.181, 0.735, 0.175),
    "fedprox": (0.729, 0.168, 0.717, 0.162), "fedadam": (0.815, 0.026, 0.842, 0.017),
    "fedyogi": (0.815, 0.026, 0.842, 0.017),
}
FLAMBY_LOCAL = (0.728, 0.750, 0.498, 0.656, 0.712, 0.691)
FLAMBY_BEST_FEDERATED = 0.815

# The candidates tried on validation (no DP, seed 42). Weight decay stays 0.01, the reference Cox's penalizer.
TUNING_GRID: dict[str, list[dict[str, float]]] = {
    "fedavg": [{"learning_rate": lr, "epochs": e} for lr in (0.01, 0.05) for e in (1, 5)],
    "fedprox": [{"learning_rate": lr, "epochs": e} for lr in (0.01, 0.05) for e in (1, 5)],
    "fedadam": [{"server_learning_rate": s, "epochs": e} for s in (0.01, 0.05) for e in (1, 5)],
    "fedyogi": [{"server_learning_rate": s, "epochs": e} for s in (0.01, 0.05) for e in (1, 5)],
    "local": [{"learning_rate": lr} for lr in (0.01, 0.05)],
    "pooled": [{"learning_rate": lr} for lr in (0.01, 0.05)],
}
# Under DP the settings are fixed beforehand, not tuned: each tuning run would spend budget on calibration
DP_SETTINGS = {"rounds": 10, "epochs": 1, "batch_size": 32, "learning_rate": 0.05, "server_learning_rate": 0.05,
               "max_grad_norm": 1.0}


def concatenate(parts: Sequence[SurvivalArrays]) -> SurvivalArrays:
    return SurvivalArrays(features=np.concatenate([p.features for p in parts]),
                          event=np.concatenate([p.event for p in parts]),
                          time=np.concatenate([p.time for p in parts]))


def scores(risk_of: Callable[[SurvivalArrays], np.ndarray], centers: Sequence[CenterData],
           validation: bool) -> dict[str, object]:
    """Harrell's C on each center's held-out patients, their mean (FLamby's client mean), and on all of them."""
    held = [evaluation_arrays(c, validation) for c in centers]
    per_center = [harrell_c(h, risk_of(h)) for h in held]
    pooled = concatenate(held)
    return {"centers": per_center, "client_mean": float(np.nanmean(per_center)),
            "pooled": harrell_c(pooled, risk_of(pooled))}


def _model_from(arrays: dict[str, np.ndarray], seed: int):
    model = build_model(seed)
    model.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in arrays.items()})
    return model


def train_alone(plan: BenchmarkPlan, data: SurvivalArrays) -> dict[str, np.ndarray]:
    """Local or pooled training: one site with all its rounds × epochs in one go (DP budget over all of them)."""
    model = build_model(plan.seed)
    privacy: Privacy | None = None
    if plan.epsilon is not None:
        privacy, *_ = privacy_for(plan, len(data), plan.rounds)
    steps = TrainingSteps(epochs=plan.rounds * plan.epochs, batch_size=plan.batch_size,
                          learning_rate=plan.learning_rate, weight_decay=plan.weight_decay, proximal_mu=0.0,
                          seed=plan.seed * RUN_STRIDE)
    train_site(model, data, steps, privacy)
    return {k: v.detach().numpy() for k, v in model.state_dict().items()}


def run_plan(plan: BenchmarkPlan, centers: Sequence[CenterData]) -> dict[str, object]:
    """Train as the plan says and score the final model on the held-out patients of every center."""
    if plan.method in FEDERATED:
        arrays = run_in_process(plan, centers)
    elif plan.method == "pooled":
        arrays = train_alone(plan, concatenate([training_arrays(c, plan.validation) for c in centers]))
    else:
        assert plan.local_center is not None
        arrays = train_alone(plan, training_arrays(centers[plan.local_center], plan.validation))
    model = _model_from(arrays, plan.seed)
    return scores(lambda data: risk_scores(model, data), centers, plan.validation)


def cox_reference(centers: Sequence[CenterData], validation: bool = False) -> dict[str, object]:
    """lifelines CoxPHFitter(penalizer=0.01) on all pooled training patients: the classical reference."""
    train = concatenate([training_arrays(c, validation) for c in centers])
    frame = pd.DataFrame(train.features, columns=list(FEATURE_COLUMNS))
    frame["T"], frame["E"] = train.time, train.event.astype(int)
    with warnings.catch_warnings():  # near-constant one-hot columns: the penalizer handles them
        warnings.simplefilter("ignore")
        fitter = CoxPHFitter(penalizer=0.01).fit(frame, duration_col="T", event_col="E")
    weights = fitter.params_.to_numpy()
    return scores(lambda data: data.features.astype(np.float64) @ weights, centers, validation)


def tune(methods: Sequence[str], centers: Sequence[CenterData], rounds: int, log: Callable[[str], None]
         ) -> dict[str, dict[str, object]]:
    """Pick each method's settings by the pooled validation C-index (center validation parts have 0–9 deaths)."""
    chosen: dict[str, dict[str, object]] = {}
    for method in methods:
        trials = []
        for candidate in TUNING_GRID[method]:
            plan = BenchmarkPlan(method=method, seed=SEEDS[0], rounds=rounds, weight_decay=0.01, validation=True,
                                 **candidate)
            if method == "local":  # each center's own model, scored on every center's validation part
                results = [run_plan(plan.model_copy(update={"local_center": k}), centers)
                           for k in range(NUM_CENTERS)]
                score = float(np.mean([r["pooled"] for r in results]))
            else:
                score = float(run_plan(plan, centers)["pooled"])
            trials.append({"settings": candidate, "validation_pooled_c": score})
            log(f"  tune {method} {candidate}: validation pooled C {score:.3f}")
        best = max(trials, key=lambda t: t["validation_pooled_c"])
        chosen[method] = {"settings": best["settings"], "trials": trials}
    return chosen


def plans_for(method: str, epsilon: float | None, seed: int, rounds: int, settings: dict[str, float]
              ) -> list[BenchmarkPlan]:
    base = dict(method=method, seed=seed, rounds=rounds, weight_decay=0.01, **settings)
    if epsilon is not None:  # DP: fixed settings; the strategy's server-side ones stay as tuned
        base |= DP_SETTINGS | {"epsilon": epsilon}
    if method == "local":
        return [BenchmarkPlan(**base, local_center=k) for k in range(NUM_CENTERS)]
    return [BenchmarkPlan(**base)]


def summarise(runs: list[dict[str, object]]) -> dict[str, object]:
    def stat(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.nanmean(values)), "std": float(np.nanstd(values))}
    return {"centers": [stat([r["centers"][k] for r in runs]) for k in range(NUM_CENTERS)],
            "client_mean": stat([r["client_mean"] for r in runs]), "pooled": stat([r["pooled"] for r in runs])}


def label(method: str, local_center: int | None) -> str:
    names = {"fedavg": "FedAvg", "fedprox": "FedProx", "fedadam": "FedAdam", "fedyogi": "FedYogi",
             "pooled": "Pooled training"}
    return f"Local {local_center} ({REGIONS[local_center]})" if method == "local" else names[method]


def epsilon_spent(plan: BenchmarkPlan, centers: Sequence[CenterData]) -> float | None:
    """The largest ε any site spends in this plan (each is calibrated to the budget; this is the accountant's word)."""
    if plan.epsilon is None:
        return None
    if plan.method == "pooled":
        sizes = [sum(len(training_arrays(c, False)) for c in centers)]
    elif plan.method == "local":
        sizes = [len(training_arrays(centers[plan.local_center], False))]
    else:
        sizes = [len(training_arrays(c, False)) for c in centers]
    spent = []
    for n in sizes:
        privacy, delta, sample_rate, steps = privacy_for(plan, n, plan.rounds)
        spent.append(spent_epsilon(plan.epsilon, delta, privacy.noise_multiplier, sample_rate, steps * plan.rounds))
    return max(spent)


def render_markdown(report: dict[str, object]) -> str:
    def cell(s: dict[str, float]) -> str:
        return f"{s['mean']:.3f} ± {s['std']:.3f}"

    meta = report["meta"]
    lines = [
        "# Fed-TCGA-BRCA: OncoFed against FLamby and a pooled Cox model",
        "",
        f"Harrell's C on each center's test set (FLamby's split, 222 test patients), the mean over the six centers "
        f"(client mean) and on the pooled test set; mean ± std over seeds {', '.join(map(str, meta['seeds']))}. "
        f"Linear risk model; Cox partial likelihood without DP, per-patient discrete-time hazard likelihood with "
        f"DP-SGD (Opacus, ε per site over the whole run, δ = 0.1/n). Settings chosen on validation parts of the "
        f"training sets only. Command: `{meta['command']}`; took {meta['elapsed_s'] / 60:.1f} min on "
        f"{meta['machine']}.",
        "",
        "| method | DP ε | " + " | ".join(f"C{k}" for k in range(NUM_CENTERS))
        + " | client mean | pooled test | FLamby client mean [pooled] |",
        "|---|---|" + "---|" * NUM_CENTERS + "---|---|---|",
    ]
    ref = report["reference_cox"]
    lines.append("| Pooled Cox (lifelines, penalizer 0.01) | – | "
                 + " | ".join(f"{c:.3f}" for c in ref["centers"])
                 + f" | {ref['client_mean']:.3f} | {ref['pooled']:.3f} | 0.820 [0.843] |")
    for row in report["rows"]:
        summary = row["summary"]
        flamby = ""
        if row["epsilon"] is None and row["method"] in FLAMBY:
            f = FLAMBY[row["method"]]
            flamby = f"{f[0]:.3f} ± {f[1]:.3f} [{f[2]:.3f} ± {f[3]:.3f}]"
        elif row["epsilon"] is None and row["method"] == "local":
            flamby = f"{FLAMBY_LOCAL[row['local_center']]:.3f}"
        eps = "–" if row["epsilon"] is None else f"{row['epsilon']:g}"
        lines.append(f"| {row['label']} | {eps} | " + " | ".join(cell(c) for c in summary["centers"])
                     + f" | {cell(summary['client_mean'])} | {cell(summary['pooled'])} | {flamby} |")
    goals = report["goals"]
    lines += ["", "## Goals", ""] + [f"- {g['goal']}: **{'met' if g['met'] else 'not met'}** — {g['figures']}"
                                    for g in goals]
    lines += ["", "## DP cost (best federated method under each ε, client mean / pooled test)", ""]
    lines += [f"- {c}" for c in report["dp_cost"]]
    lines += ["", "## Chosen settings (validation, seed 42, no DP)", ""]
    lines += [f"- {m}: {json.dumps(t['settings'])}" for m, t in report["tuning"].items()]
    lines += [f"- under DP (fixed, not tuned): {json.dumps(DP_SETTINGS)}"]
    return "\n".join(lines) + "\n"


def goals_and_dp_cost(report: dict[str, object]) -> tuple[list[dict[str, object]], list[str]]:
    ref = report["reference_cox"]
    federated = [r for r in report["rows"] if r["method"] in FEDERATED]
    plain = [r for r in federated if r["epsilon"] is None]
    goals: list[dict[str, object]] = []
    if plain:
        best = max(plain, key=lambda r: r["summary"]["client_mean"]["mean"])
        cm, pooled = best["summary"]["client_mean"]["mean"], best["summary"]["pooled"]["mean"]
        goals = [
            {"goal": "best federated (no DP) client mean ≥ pooled Cox", "met": cm >= ref["client_mean"],
             "figures": f"{best['label']} {cm:.3f} vs {ref['client_mean']:.3f}"},
            {"goal": "best federated (no DP) pooled test ≥ pooled Cox", "met": pooled >= ref["pooled"],
             "figures": f"{best['label']} {pooled:.3f} vs {ref['pooled']:.3f}"},
            {"goal": "best federated (no DP) client mean > FLamby's best federated (0.815)",
             "met": cm > FLAMBY_BEST_FEDERATED, "figures": f"{best['label']} {cm:.3f} vs 0.815"},
        ]
    cost = []
    baseline = max(plain, key=lambda r: r["summary"]["client_mean"]["mean"]) if plain else None
    for epsilon in sorted({r["epsilon"] for r in federated if r["epsilon"] is not None}):
        rows = [r for r in federated if r["epsilon"] == epsilon]
        best = max(rows, key=lambda r: r["summary"]["client_mean"]["mean"])
        cm, pooled = best["summary"]["client_mean"]["mean"], best["summary"]["pooled"]["mean"]
        text = f"ε = {epsilon:g}: {best['label']} {cm:.3f} / {pooled:.3f}"
        if baseline is not None:
            text += (f" (−{baseline['summary']['client_mean']['mean'] - cm:.3f} / "
                     f"−{baseline['summary']['pooled']['mean'] - pooled:.3f} against no DP)")
        cost.append(text)
    return goals, cost


def plot(report: dict[str, object], path: Path) -> None:
    """Client-mean C-index per method against the privacy level, with the pooled Cox line (atomic write)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted({r["epsilon"] for r in report["rows"]}, key=lambda e: float("inf") if e is None else e)
    figure, axis = plt.subplots(figsize=(7, 4))
    methods = [m for m in METHODS if m != "local" and any(r["method"] == m for r in report["rows"])]
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        rows = {r["epsilon"]: r["summary"]["client_mean"] for r in report["rows"] if r["method"] == method}
        xs = [j + i * width for j, e in enumerate(levels) if e in rows]
        axis.bar(xs, [rows[e]["mean"] for e in levels if e in rows], width,
                 yerr=[rows[e]["std"] for e in levels if e in rows], label=label(method, None), capsize=2)
    axis.axhline(report["reference_cox"]["client_mean"], color="black", linestyle="--", label="pooled Cox")
    axis.axhline(FLAMBY_BEST_FEDERATED, color="grey", linestyle=":", label="FLamby best federated")
    axis.set_xticks([j + 0.4 - width / 2 for j in range(len(levels))],
                    ["no DP" if e is None else f"ε = {e:g}" for e in levels])
    axis.set_ylim(0.5, 0.9)
    axis.set_ylabel("client-mean Harrell's C (test)")
    axis.set_title("Fed-TCGA-BRCA, mean ± std over seeds")
    axis.legend(fontsize=7, ncol=2, loc="lower left")
    figure.tight_layout()
    write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=120))
    plt.close(figure)


def parse_epsilon(text: str) -> float | None:
    return None if text == "none" else float(text)


def main(argv: Sequence[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmarks.fed_tcga_brca", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--dp", nargs="+", default=["none", "1", "3", "8"],
                        help="privacy levels: 'none' and/or per-site ε values")
    parser.add_argument("--rounds", type=int, default=40, help="federated rounds without DP")
    parser.add_argument("--no-tune", action="store_true", help="skip validation tuning; use the first candidate")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from the JSON in --out")
    args = parser.parse_args(argv)
    if args.plot_only:
        report = json.loads((args.out / "fed_tcga_brca.json").read_text())
        plot(report, args.out / "fed_tcga_brca.png")
        return report
    torch.set_num_threads(1)
    started = time.perf_counter()

    def log(text: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f}s] {text}", flush=True)

    centers = load_centers()
    levels = [parse_epsilon(t) for t in args.dp]
    if args.no_tune:
        tuning = {m: {"settings": TUNING_GRID[m][0], "trials": []} for m in args.methods}
    else:
        log("tuning on validation parts of the training sets (seed 42, no DP)")
        tuning = tune(args.methods, centers, args.rounds, log)
    reference = cox_reference(centers)
    log(f"pooled Cox (lifelines): client mean {reference['client_mean']:.3f}, pooled {reference['pooled']:.3f}")
    jobs = [(m, e) for e in levels for m in args.methods]
    rows = []
    for index, (method, epsilon) in enumerate(jobs, start=1):
        per_seed: dict[int | None, list[dict[str, object]]] = {}
        spent = None
        for seed in args.seeds:
            for plan in plans_for(method, epsilon, seed, args.rounds, tuning[method]["settings"]):
                per_seed.setdefault(plan.local_center, []).append(run_plan(plan, centers) | {"seed": seed})
                spent = epsilon_spent(plan, centers) if spent is None else spent
        for local_center, runs in per_seed.items():
            rows.append({"method": method, "local_center": local_center, "label": label(method, local_center),
                         "epsilon": epsilon, "epsilon_spent_max": spent, "runs": runs, "summary": summarise(runs)})
            s = rows[-1]["summary"]
            log(f"[{index}/{len(jobs)}] {rows[-1]['label']} ε={epsilon}: client mean "
                f"{s['client_mean']['mean']:.3f} ± {s['client_mean']['std']:.3f}, pooled "
                f"{s['pooled']['mean']:.3f} ± {s['pooled']['std']:.3f}")
    report: dict[str, object] = {
        "meta": {"command": "python -m simulations.benchmarks.fed_tcga_brca " + " ".join(argv or sys.argv[1:]),
                 "seeds": args.seeds, "rounds": args.rounds, "elapsed_s": time.perf_counter() - started,
                 "machine": f"{platform.machine()} {os.cpu_count()} cores (shared), torch {torch.__version__}",
                 "selection": "settings chosen by pooled validation C-index on 25% of each center's training "
                              "patients (stratified on death, seed 0); test sets used only for the table"},
        "reference_cox": reference, "flamby_published": {"methods": FLAMBY, "local": FLAMBY_LOCAL},
        "tuning": tuning, "dp_settings": DP_SETTINGS, "rows": rows,
    }
    report["goals"], report["dp_cost"] = goals_and_dp_cost(report)
    write_atomically(args.out / "fed_tcga_brca.json", json.dumps(report, indent=2, default=float))
    write_atomically(args.out / "fed_tcga_brca.md", render_markdown(report))
    plot(report, args.out / "fed_tcga_brca.png")
    log(f"wrote {args.out}/fed_tcga_brca.json, .md and .png")
    return report


if __name__ == "__main__":
    main()
