"""Real public survival data through the product's own path: site folders, `oncofed-check-site`, the main job.

    python -m simulations.benchmarks.real_data fed_tcga_brca --tune            # settings, on validation only
    python -m simulations.benchmarks.real_data fed_tcga_brca --seeds 42 43 44 --epsilons none 3 1
    python -m simulations.benchmarks.real_data ncctg_lung --seeds 42 43 44 --epsilons none 3 1

A consortium of these sites is set up as docs/onboarding.md says: an app folder whose
shared/dictionaries/default.yaml is the data set's dictionary, the data set's site folders (written by its
make_sites.py, each checked with `oncofed-check-site`), and one main-job run (`simulations.main_job`, what
`oncofed-simulate` runs) per privacy level and seed, in a fresh copy of the site folders (a site's privacy ledger
persists, and each run has its own budget). One run gives the three rows of a level: the federated model, each
site's local-only model (at its own test patients) and the pooled centralised reference. `--tune` runs the candidate
settings without DP and reads only the sites' validation figures of the last round; the final runs read the test
figures once. Results go to simulations/benchmarks/results/<dataset>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import mean, stdev

from shared.atomic import write_atomically

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
DATASETS = {"fed_tcga_brca": REPO / "simulations" / "datasets" / "fed_tcga_brca",
            "ncctg_lung": REPO / "simulations" / "datasets" / "ncctg_lung"}
APP_PARTS = ("shared", "client", "server", "simulations", "pyproject.toml")
KEY = "os-cindex"

# The candidate settings tried on validation (no DP, seed 42); the first is the run configuration's default.
TUNING_GRID: dict[str, list[dict[str, str]]] = {
    "fed_tcga_brca": [{}, {"strategy": "fedadam", "server-learning-rate": "0.01"},
                      {"strategy": "fedyogi", "server-learning-rate": "0.03"},
                      {"learning-rate": "0.01"}, {"num-rounds": "40"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650"},
                      # second pass: the best grid (yearly intervals over 10 years) with the best strategy / rounds
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "strategy": "fedyogi",
                       "server-learning-rate": "0.03"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "num-rounds": "40"},
                      # third pass: more local steps per round (batch 256 is one step per round at these sites)
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "batch-size": "32"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "local-epochs": "5"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "batch-size": "64",
                       "learning-rate": "0.01"},
                      # fourth pass, at TUNING_SEEDS (one seed's validation split holds a handful of deaths per site):
                      # the network sized down for 39 covariates, step sizes, rounds, FedAdam, a half-year grid
                      {"survival-interval-days": "365", "survival-horizon-days": "3650"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "hidden-size": "8"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "hidden-size": "8",
                       "learning-rate": "0.1"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "hidden-size": "8",
                       "num-rounds": "30"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "learning-rate": "0.01"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "batch-size": "64",
                       "learning-rate": "0.003", "num-rounds": "40"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "strategy": "fedadam",
                       "server-learning-rate": "0.1"},
                      {"survival-interval-days": "182", "survival-horizon-days": "3650"},
                      # fifth pass: the chosen settings with a ridge penalty on the weight matrices (the converged
                      # linear Cox anchor needed one: penalizer 0.1, chosen on the same validation splits)
                      *({"survival-interval-days": "365", "survival-horizon-days": "3650", "hidden-size": "8",
                         "weight-decay": decay} for decay in ("0.001", "0.01", "0.1")),
                      # sixth pass: the linear model trained to convergence (a pooled linear model fitted to convergence
                      # reached 0.76 on validation, the network 0.74): the wide path alone, no interactions (one
                      # treatment code), plain SGD (a fresh Adam's first steps are as long for every weight) and many
                      # local epochs
                      *({"survival-interval-days": "365", "survival-horizon-days": "3650", "network": "wide",
                         "interaction-rank": "0", "local-optimizer": "sgd"} | extra
                        for extra in ({"learning-rate": "1.0", "local-epochs": "20"},
                                      {"learning-rate": "1.0", "local-epochs": "50"},
                                      {"learning-rate": "0.3", "local-epochs": "50"},
                                      {"learning-rate": "1.0", "local-epochs": "50", "weight-decay": "0.01"})),
                      # the chosen pass-six setting's two departures one at a time: Adam as before; rank-2 interactions
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "network": "wide",
                       "interaction-rank": "0"},
                      {"survival-interval-days": "365", "survival-horizon-days": "3650", "network": "wide",
                       "local-optimizer": "sgd", "learning-rate": "1.0", "local-epochs": "20"},
                      # the chosen setting with FLamby's best server optimiser (FedAdam was tried only with the network)
                      *({"survival-interval-days": "365", "survival-horizon-days": "3650", "network": "wide",
                         "interaction-rank": "0", "local-optimizer": "sgd", "learning-rate": "1.0",
                         "local-epochs": "20", "strategy": "fedadam", "server-learning-rate": rate}
                        for rate in ("0.1", "0.3"))],
    "ncctg_lung": [{}, {"learning-rate": "0.01"}, {"num-rounds": "40"},
                   {"survival-interval-days": "60", "survival-horizon-days": "900"},
                   # Fed-TCGA-BRCA's sixth pass: the linear model trained to convergence with plain SGD
                   *({"network": "wide", "interaction-rank": "0", "local-optimizer": "sgd", "local-epochs": "20",
                      "learning-rate": rate} for rate in ("1.0", "0.3"))],
}
# Each candidate runs at these seeds (earlier passes' records ran at 42 only); tuning runs write no site reports
TUNING_SEEDS = (42, 43, 44)
NO_REPORTS = {"site-reports": "false"}
# The settings chosen by --tune (see each results file's "tuning"); DP runs use the same ones.
CHOSEN: dict[str, dict[str, str]] = {
    # sixth pass: mean validation C 0.766 over seeds 42-44, against 0.740 for the network (fourth pass) and 0.762-0.764
    # for 50 local epochs
    "fed_tcga_brca": {"survival-interval-days": "365", "survival-horizon-days": "3650", "network": "wide",
                      "interaction-rank": "0", "local-optimizer": "sgd", "learning-rate": "1.0", "local-epochs": "20"},
    # mean validation C 0.630 over seeds 42-44, against 0.605 for the run configuration's defaults (0.597-0.614 for
    # the network's other candidates, 0.605 for the linear model at learning rate 1.0)
    "ncctg_lung": {"network": "wide", "interaction-rank": "0", "local-optimizer": "sgd", "local-epochs": "20",
                   "learning-rate": "0.3"},
}
# ncctg_lung has no published split: the product's own, with a larger test share than the default for its small sites
DATASET_SETTINGS: dict[str, dict[str, str]] = {"fed_tcga_brca": {}, "ncctg_lung": {"test-fraction": "0.3"}}

# FLamby's published figures on the same split and test sets (PROVENANCE.md): client mean ± std [pooled test ± std]
FLAMBY = {"Pooled training": (0.676, 0.095, 0.704, 0.114), "FedAvg": (0.732, 0.181, 0.735, 0.175),
          "FedProx": (0.729, 0.168, 0.717, 0.162), "FedAdam": (0.815, 0.026, 0.842, 0.017),
          "FedYogi": (0.815, 0.026, 0.842, 0.017), "FedAdagrad": (0.813, 0.005, 0.834, 0.008)}
FLAMBY_LOCAL = (0.728, 0.750, 0.498, 0.656, 0.712, 0.691)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def make_app(dataset: str, out: Path) -> Path:
    """The consortium's app: the project's packages with the data set's dictionary as the app's own."""
    app = out / "app"
    shutil.rmtree(app, ignore_errors=True)
    app.mkdir(parents=True)
    for part in APP_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, app / part, ignore=shutil.ignore_patterns("__pycache__", "results", "sites"))
        else:
            shutil.copy(source, app / part)
    shutil.copy(DATASETS[dataset] / "dictionary.yaml", app / "shared" / "dictionaries" / "default.yaml")
    return app


def environment(app: Path) -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(app), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def fresh_sites(dataset: str, work: Path, epsilon: float | None) -> Path:
    """A copy of the data set's site folders (no state), each site's budget set to this run's ε."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    shutil.copy(DATASETS[dataset] / "dictionary.yaml", work / "dictionary.yaml")
    shutil.copytree(DATASETS[dataset] / "sites", work / "sites", ignore=shutil.ignore_patterns("state"))
    for toml in (work / "sites").glob("*/site.toml"):
        text = toml.read_text(encoding="utf-8")
        toml.write_text(re.sub(r"(?m)^target_epsilon = .*$", f"target_epsilon = {epsilon or 3.0}", text),
                        encoding="utf-8")
    return work / "sites"


def check_sites(app: Path, sites: Path) -> None:
    """`oncofed-check-site` on every site folder against the consortium's dictionary; stops at the first refusal."""
    for toml in sorted(sites.glob("*/site.toml")):
        done = subprocess.run([sys.executable, "-m", "client.data.check", "--site-config", str(toml),
                               "--dictionary", str(sites.parent / "dictionary.yaml")], cwd=sites.parent,
                              env=environment(app), capture_output=True, text=True)
        if done.returncode != 0 or "Usable: yes" not in done.stdout:
            raise RuntimeError(f"oncofed-check-site refused {toml}:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def main_job(app: Path, sites: Path, name: str, seed: int, epsilon: float | None, settings: dict[str, str],
             references: bool) -> dict:
    """One run of the main job on these site folders; its metrics.json."""
    arguments = ["--data-dir", str(sites), "--output-dir", str(sites.parent / "runs"), "--no-loso",
                 "--set", f"run-name={name}", "--set", f"seed={seed}", "--set", "shap-patients=0"]
    arguments += ["--no-dp"] if epsilon is None else ["--set", f"target-epsilon={epsilon:g}"]
    arguments += [] if references else ["--no-references", "--no-cross-site"]
    for key, value in settings.items():
        arguments += ["--set", f"{key}={value}"]
    done = subprocess.run([sys.executable, "-c", "from simulations.main_job import main; main()", *arguments],
                          cwd=sites.parent, env=environment(app), capture_output=True, text=True)
    (sites.parent / "main_job.log").write_text(done.stdout + done.stderr, encoding="utf-8")
    if done.returncode != 0:
        raise RuntimeError(f"the main job failed ({sites.parent / 'main_job.log'}):\n{done.stderr[-3000:]}")
    return json.loads((sites.parent / "runs" / name / "metrics.json").read_text())


def site_figures(figures: dict[str, dict[str, float]]) -> dict[str, float | None]:
    return {site: figures[site].get(KEY) for site in sorted(figures)}


def rows_of(metrics: dict) -> dict[str, dict[str, float | None]]:
    """The run's three rows: federated, local-only (each site's own model at its own test patients), pooled."""
    return {"Federated (product)": site_figures(metrics["test"]),
            "Local only": site_figures(metrics["validation"]["local"]["figures"]),
            "Pooled centralised": site_figures(metrics["references"]["pooled"])}


def client_mean(values: dict[str, float | None]) -> float | None:
    known = [v for v in values.values() if v is not None]
    return mean(known) if len(known) == len(values) and known else None


def validation_figure(metrics: dict) -> float:
    """The last round's validation C-index, mean over the sites that report one (the tuning criterion)."""
    last = metrics["rounds"][-1]["validation"]
    return mean(f[KEY] for f in last.values() if KEY in f)


def tune(dataset: str, out: Path, app: Path, done: list[dict], first: int = 0) -> list[dict]:
    """Each candidate from number `first` on not yet in `done` (an earlier pass's trials), on validation only, at
    each of TUNING_SEEDS (the seed also draws each site's validation split, so one seed's figure rests on a handful
    of deaths)."""
    trials = list(done)
    for number, candidate in list(enumerate(TUNING_GRID[dataset]))[first:]:
        seeds = list(map(str, TUNING_SEEDS))
        if any(t["settings"] == candidate and list(t.get("validation_by_seed", {"42": None})) == seeds for t in done):
            continue
        by_seed = {}
        for seed in TUNING_SEEDS:
            sites = fresh_sites(dataset, out / "tuning" / f"{number}-{seed}", None)
            metrics = main_job(app, sites, "tune", seed, None, DATASET_SETTINGS[dataset] | candidate | NO_REPORTS,
                               references=False)
            by_seed[str(seed)] = validation_figure(metrics)
        trials.append({"settings": candidate, "validation_by_seed": by_seed,
                       "validation_c_index": mean(by_seed.values())})
        log(f"tuning {candidate or 'defaults'}: validation C-index {trials[-1]['validation_c_index']:.3f} "
            f"(seeds {', '.join(by_seed)})")
    return trials


def summarise(runs: list[dict]) -> list[dict]:
    """mean ± std over seeds of each (privacy level, row): per site and the client mean."""
    table = []
    for level in dict.fromkeys(r["epsilon"] for r in runs):
        chosen = [r for r in runs if r["epsilon"] == level]
        for label in chosen[0]["rows"]:
            per_site = {site: [r["rows"][label][site] for r in chosen] for site in chosen[0]["rows"][label]}
            means = [client_mean(r["rows"][label]) for r in chosen]
            table.append({"epsilon": level, "label": label, "seeds": [r["seed"] for r in chosen],
                          "sites": {s: _spread(v) for s, v in per_site.items()}, "client_mean": _spread(means)})
    return table


def _spread(values: list[float | None]) -> dict[str, float | None]:
    known = [v for v in values if v is not None]
    if len(known) != len(values) or not known:
        return {"mean": None, "std": None}
    return {"mean": mean(known), "std": stdev(known) if len(known) > 1 else 0.0}


def render_markdown(report: dict) -> str:
    sites = list(report["table"][0]["sites"]) if report["table"] else []
    cell = lambda s: "–" if s["mean"] is None else f"{s['mean']:.3f} ± {s['std']:.3f}"  # noqa: E731
    lines = [f"# {report['title']}", "", report["description"], "",
             f"Command: `{report['meta']['command']}`; {report['meta']['minutes']:.1f} min on {report['meta']['machine']}"
             f" (shared; load average {report['meta']['load_average']}).", "",
             "| model | DP ε per site | seeds | " + " | ".join(sites) + " | client mean |",
             "|---|---|---|" + "---|" * (len(sites) + 1)]
    for row in report["table"]:
        eps = "no DP" if row["epsilon"] is None else f"{row['epsilon']:g}"
        lines.append(f"| {row['label']} | {eps} | {len(row['seeds'])} | " + " | ".join(cell(row["sites"][s]) for s in sites)
                     + f" | **{cell(row['client_mean'])}** |")
    if report.get("flamby"):
        lines += ["", "FLamby's published figures (linear Cox, same split and test sets, 5 seeds; client mean ± std "
                  "[pooled test ± std]): " + "; ".join(f"{k} {v[0]:.3f} ± {v[1]:.3f} [{v[2]:.3f} ± {v[3]:.3f}]"
                                                          for k, v in report["flamby"]["methods"].items())
                  + "; local-only per center " + " / ".join(f"{v:.3f}" for v in report["flamby"]["local"]) + "."]
    if report.get("tuning"):
        lines += ["", "## Settings chosen on validation (no DP; last round's mean validation C-index over the sites)", ""]
        lines += [f"- {t['settings'] or 'run-configuration defaults'}: {t['validation_c_index']:.3f}"
                  + (f" (mean of seeds {', '.join(f'{s}: {v:.3f}' for s, v in t['validation_by_seed'].items())}"
                     f"{_same_seeds(t, report)})" if "validation_by_seed" in t else " (seed 42)")
                  for t in report["tuning"]]
    lines += ["", f"Settings of the runs: {report['settings'] or 'run-configuration defaults'}."]
    return "\n".join(lines) + "\n"


def _same_seeds(trial: dict, report: dict) -> str:
    """A candidate measured at fewer seeds than the chosen settings is compared with them on its own seeds."""
    chosen = [t for t in report["tuning"] if t["settings"] == report["settings"] and "validation_by_seed" in t]
    seeds = trial["validation_by_seed"]
    if not chosen or chosen[-1] is trial or not set(seeds) < set(chosen[-1]["validation_by_seed"]):
        return ""
    return f"; the chosen settings at these seeds: {mean(chosen[-1]['validation_by_seed'][s] for s in seeds):.3f}"


def plot(report: dict, path: Path) -> None:
    """Client-mean C-index per row and privacy level (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = list(dict.fromkeys(r["epsilon"] for r in report["table"]))
    labels = list(dict.fromkeys(r["label"] for r in report["table"]))
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        rows = {r["epsilon"]: r["client_mean"] for r in report["table"] if r["label"] == label}
        xs = [j + i * width for j, level in enumerate(levels) if rows.get(level, {}).get("mean") is not None]
        ys = [rows[level]["mean"] for level in levels if rows.get(level, {}).get("mean") is not None]
        errors = [rows[level]["std"] for level in levels if rows.get(level, {}).get("mean") is not None]
        axis.bar(xs, ys, width, yerr=errors, label=label, capsize=3)
    if report.get("flamby"):
        axis.axhline(report["flamby"]["methods"]["FedAdam"][0], color="grey", linestyle=":",
                     label="FLamby best federated (no DP)")
    axis.set_xticks([j + 0.4 - width / 2 for j in range(len(levels))],
                    ["no DP" if e is None else f"ε = {e:g}" for e in levels])
    axis.set_ylim(0.3, 1.05)
    axis.set_ylabel("client-mean test C-index (OS)")
    axis.set_title(report["title"], fontsize=9)
    axis.legend(fontsize=7, loc="upper center", ncol=2)
    figure.tight_layout()
    write_atomically(path, lambda stream: figure.savefig(stream, format="png", dpi=120))
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmarks.real_data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--tune", action="store_true", help="run the tuning grid (validation only) and stop")
    parser.add_argument("--tune-from", type=int, default=0, metavar="K",
                        help="with --tune: only the grid's candidates from number K on (a later pass)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--epsilons", nargs="+", default=["none", "3", "1"], help="'none' = no DP")
    parser.add_argument("--work", type=Path, default=Path("/tmp/oncofed-real-data"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    started = time.time()
    app = make_app(args.dataset, args.work / args.dataset)
    check_sites(app, fresh_sites(args.dataset, args.work / args.dataset / "check", None))
    log(f"{args.dataset}: every site folder passes oncofed-check-site")
    if args.tune:
        tuning_file = args.out / f"{args.dataset}_tuning.json"
        done = json.loads(tuning_file.read_text()) if tuning_file.is_file() else []
        trials = tune(args.dataset, args.work / args.dataset, app, done, args.tune_from)
        write_atomically(tuning_file, json.dumps(trials, indent=2))
        return
    settings = DATASET_SETTINGS[args.dataset] | CHOSEN[args.dataset]
    runs: list[dict] = []
    for level in [None if e == "none" else float(e) for e in args.epsilons]:
        for seed in args.seeds:
            name = f"eps-{level or 'none'}-seed-{seed}"
            sites = fresh_sites(args.dataset, args.work / args.dataset / name, level)
            metrics = main_job(app, sites, name, seed, level, settings, references=True)
            runs.append({"epsilon": level, "seed": seed, "rows": rows_of(metrics),
                         "epsilon_spent": metrics["provenance"].get("epsilon_by_site")})
            log(f"{name}: federated client mean {client_mean(runs[-1]['rows']['Federated (product)'])}")
            write_report(args, argv, runs, settings, started)  # after every run: a stopped benchmark keeps its rows
    log(f"wrote {args.out / args.dataset}.json, .md and .png")


def write_report(args: argparse.Namespace, argv: list[str] | None, runs: list[dict], settings: dict[str, str],
                 started: float) -> None:
    tuning_file = args.out / f"{args.dataset}_tuning.json"
    brca = args.dataset == "fed_tcga_brca"
    seeds = sorted({r["seed"] for r in runs})
    report = {
        "title": "Fed-TCGA-BRCA through the product (six site folders, OncoFedNet, FLamby's split)" if brca else
                 "NCCTG advanced lung cancer through the product (three sites by enrolling institution)",
        "description": (
            "Harrell's C (overall survival) of each site's test patients and its mean over the sites (client mean), "
            "mean ± std over seeds " + ", ".join(map(str, seeds)) + " (the seeds each row ran at are in the JSON). "
            "Each run is one main-job run "
            "(`simulations.main_job`) on the data set's site folders with its own dictionary: the federated model "
            "(FedAvg unless the settings say otherwise), each site's local-only model at its own test patients, and "
            "the pooled centralised reference (the same network on the union of the training splits). DP: DP-SGD "
            "(Opacus) with each site's ε over the whole run, δ = 0.1/n_train; the federated model gets what the validation "
            "phases leave, the local-only models are trained within the validation share of it (validation-epsilon-"
            "share), the pooled reference spends the whole ε over the union (a bound, not a deployable model)."
            + (" Test sets: FLamby's test_k (site.toml test_patients); validation: 20% of each train_k."
               if brca else " Sites: the 18 enrolling institutions merged into three (make_sites.py); test: 30% "
               "of each site by the product's hash split.")),
        "settings": settings, "tuning": json.loads(tuning_file.read_text()) if tuning_file.is_file() else None,
        "flamby": {"methods": FLAMBY, "local": FLAMBY_LOCAL} if brca else None,
        "runs": runs, "table": summarise(runs),
        "meta": {"command": "python -m simulations.benchmarks.real_data " + " ".join(argv or sys.argv[1:]),
                 "minutes": (time.time() - started) / 60, "machine": f"{platform.machine()} {os.cpu_count()} cores",
                 "load_average": " ".join(Path("/proc/loadavg").read_text().split()[:3])},
    }
    write_atomically(args.out / f"{args.dataset}.json", json.dumps(report, indent=2))
    write_atomically(args.out / f"{args.dataset}.md", render_markdown(report))
    plot(report, args.out / f"{args.dataset}.png")


if __name__ == "__main__":
    main()
