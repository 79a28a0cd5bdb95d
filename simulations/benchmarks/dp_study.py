"""DP tuning study: which model size, batch, learning rate, clipping, rounds and server optimiser to default to.

Every setting runs the product's own code (client/flower/app.py's ClientApp, server/federation.py's round loop,
Opacus DP-SGD through client/training/dp_sgd.py) on the default consortium, in this process through
simulations/in_process.py (no Ray start-up per run), and is scored ONLY on the sites' validation splits:
the final global model's weighted validation response AUC and PFS/OS Harrell's C. The round loop also
scores the test split at its end; this study never reads or stores those figures.

The validation phases are off here and each site's ε is target-epsilon × (1 − validation-epsilon-share) of the
main job (2.4 of 3), a little below what the deployed model gets (about 2.9, the rest of ε under RDP
composition), so a setting is judged at no more privacy budget than it will have. Results are appended run by run to JSON (a rerun skips what is there).

The "recipe:*" settings keep the chosen recipe and change the network's form (MODEL_FORMS); for every run the
study also scores the final model's regimen ranking of the VALIDATION patients against the generator's truth.

    python -m simulations.benchmarks.dp_study --settings recipe:deep recipe:wide-i2 --seeds 42 43
    python -m simulations.benchmarks.dp_study --rank-existing      # add the ranking to stored points
    python -m simulations.benchmarks.dp_study --list
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path
from collections.abc import Iterator
from typing import Any
from unittest import mock

import torch

from shared.config import RunConfig
from shared.atomic import write_atomically
from shared.model import build_model

RESULTS = Path(__file__).parent / "results" / "dp_study.json"
FIGURES = ("response-auc", "pfs-cindex", "os-cindex")
RANKING = ("response_concordance", "os_concordance", "top1_agreement", "regret", "regret_random")
# the main job's ε = 3 per site less the validation phases' default share of 0.2: a conservative stand-in, since the
# budget split gives the federated rounds the rest of ε under RDP composition (about 2.9; client/training/privacy.py)
FEDERATED_EPSILON = 2.4
QUIET = {"site-reports": False, "shap-patients": 0, "bootstrap-samples": 20, "share-local-models": False,
         "local-references": False, "leave-one-site-out": False, "target-epsilon": FEDERATED_EPSILON}
# the settings tried, each a set of run-config overrides on top of the project's defaults (docs/dp_tuning.md)
OLD_DEFAULTS = {"hidden-size": 64, "batch-size": 64, "learning-rate": 0.003, "num-rounds": 5, "local-epochs": 2,
                "max-grad-norm": 1.0, "strategy": "fedavg"}
SMALL = OLD_DEFAULTS | {"hidden-size": 16, "batch-size": 256, "learning-rate": 0.01, "num-rounds": 20,
                        "local-epochs": 1}  # the DP-sized start; the settings below change one or two of its values
SETTINGS: dict[str, dict[str, Any]] = {
    "old-defaults": OLD_DEFAULTS,
    "h16-b256-lr01-r20": SMALL,
    "h8-b256-lr01-r20": SMALL | {"hidden-size": 8},
    "h32-b256-lr01-r20": SMALL | {"hidden-size": 32},
    "h16-b256-lr003-r20": SMALL | {"learning-rate": 0.003},
    "h16-b256-lr03-r20": SMALL | {"learning-rate": 0.03},
    "h16-b128-lr01-r20": SMALL | {"batch-size": 128},
    "h16-b512-lr02-r20": SMALL | {"batch-size": 512, "learning-rate": 0.02},
    "h16-b256-lr01-r10-e2": SMALL | {"num-rounds": 10, "local-epochs": 2},
    "h16-b256-lr01-r40": SMALL | {"num-rounds": 40},
    "h16-b256-lr01-r20-c05": SMALL | {"max-grad-norm": 0.5},
    "h16-b256-lr01-r20-c2": SMALL | {"max-grad-norm": 2.0},
    "h16-b256-lr01-r20-fedadam": SMALL | {"strategy": "fedadam", "server-learning-rate": 0.01},
    "h16-b256-lr06-r20": SMALL | {"learning-rate": 0.06},
    "h16-b256-lr03-r40": SMALL | {"learning-rate": 0.03, "num-rounds": 40},
    "h16-b256-lr01-r20-fedyogi": SMALL | {"strategy": "fedyogi", "server-learning-rate": 0.01},
}
# the model study (docs/dp_tuning.md, "The network's form"): the chosen recipe above with other forms of
# shared/model.py's OncoFedNet, given as its constructor's keywords. "recipe:deep" is the network before the wide
# path (wide off, no interactions): the same weights, draws and figures as h16-b256-lr03-r20.
RECIPE = SETTINGS["h16-b256-lr03-r20"]
MODEL_FORMS: dict[str, dict[str, Any]] = {
    "recipe:deep": {"wide": False, "interaction_rank": 0},
    "recipe:wide": {"wide": True, "interaction_rank": 0},
    "recipe:wide-i2": {"wide": True, "interaction_rank": 2},
    "recipe:wide-i4": {"wide": True, "interaction_rank": 4},
    "recipe:wide-i8": {"wide": True, "interaction_rank": 8},
    "recipe:deep-i2": {"wide": False, "interaction_rank": 2},
    "recipe:linear": {"wide": True, "interaction_rank": 0, "deep": False},
    "recipe:linear-i2": {"wide": True, "interaction_rank": 2, "deep": False},
}
SETTINGS |= {name: RECIPE for name in MODEL_FORMS}
SETTINGS |= {
    "recipe:wide-i2-h8": RECIPE | {"hidden-size": 8},
    "recipe:wide-i2-lr01": RECIPE | {"learning-rate": 0.01},
    "recipe:wide-i8-lr01": RECIPE | {"learning-rate": 0.01},
}
MODEL_FORMS |= {"recipe:wide-i2-h8": MODEL_FORMS["recipe:wide-i2"],
                "recipe:wide-i2-lr01": MODEL_FORMS["recipe:wide-i2"],
                "recipe:wide-i8-lr01": MODEL_FORMS["recipe:wide-i8"]}
# the clipping study (docs/dp_tuning.md, "Clipping"): the chosen network and recipe with a larger flat bound (at C = 1
# every patient's gradient is clipped, so with Adam a smaller bound changes nothing), or Opacus's per-layer clipping
SETTINGS |= {"recipe:wide-i2-c3": RECIPE | {"max-grad-norm": 3.0},
             "recipe:wide-i2-c10": RECIPE | {"max-grad-norm": 10.0},
             "recipe:wide-i2-per-layer": RECIPE,
             # the recipe re-tuned around the chosen network: larger batches (less noise per patient), more rounds
             "recipe:wide-i2-b512-lr03": RECIPE | {"batch-size": 512},
             "recipe:wide-i2-b512-lr06": RECIPE | {"batch-size": 512, "learning-rate": 0.06},
             "recipe:wide-i2-r30": RECIPE | {"num-rounds": 30},
             # plain SGD at the sites instead of Adam (whose per-coordinate scaling turns noise into full-size steps)
             "recipe:wide-i2-sgd-lr03": RECIPE | {"learning-rate": 0.3, "local-optimizer": "sgd"},
             "recipe:wide-i2-sgd-lr1": RECIPE | {"learning-rate": 1.0, "local-optimizer": "sgd"},
             "recipe:wide-i2-sgd-lr3": RECIPE | {"learning-rate": 3.0, "local-optimizer": "sgd"}}
MODEL_FORMS |= {name: MODEL_FORMS["recipe:wide-i2"] for name in SETTINGS
                if name.startswith("recipe:wide-i2-") and name not in MODEL_FORMS}
PER_LAYER = {"recipe:wide-i2-per-layer"}


@contextlib.contextmanager
def per_layer_clipping(on: bool) -> Iterator[None]:
    """Opacus's per-layer clipping for one run: every parameter tensor clipped to max-grad-norm / √(tensors), so
    the bounds' overall norm, and hence the noise and the privacy accounting, equal the flat bound's."""
    if not on:
        yield
        return
    from opacus import PrivacyEngine

    flat = PrivacyEngine.make_private

    def make_private(self, *, module, max_grad_norm, **keywords):
        tensors = sum(1 for p in module.parameters() if p.requires_grad)
        return flat(self, module=module, max_grad_norm=[max_grad_norm / tensors ** 0.5] * tensors,
                    clipping="per_layer", **keywords)

    with mock.patch.object(PrivacyEngine, "make_private", make_private):
        yield


@contextlib.contextmanager
def model_form(keywords: dict[str, Any] | None) -> Iterator[None]:
    """Every OncoFedNet built in this process (server, sites, readers) takes these keywords for one run.

    Patching the class in shared.model (build_model looks it up at each call) keeps the study out of the
    product's configuration: only the chosen form becomes the default, with no switch in RunConfig.
    """
    if not keywords:
        yield
        return
    import shared.model

    network = shared.model.OncoFedNet

    def with_form(*arguments: Any, **given: Any) -> shared.model.OncoFedNet:
        return network(*arguments, **(given | keywords))  # the form's keywords over the run configuration's

    with mock.patch.object(shared.model, "OncoFedNet", with_form):
        yield


def validation_ranking(run_dir: Path) -> dict[str, Any]:
    """The run's final global model ranking each VALIDATION patient's candidate regimens against the generator's
    truth (simulations/benchmarks/regimen_ranking.py's figures, on the validation split instead of test)."""
    import pandas as pd

    from client.tumour_board.run_bundle import load_run
    from shared.config import cohort_directory
    from simulations.benchmarks.regimen_ranking import candidate_table, network_predictions
    from simulations.ranking_metrics import ranking_figures
    from simulations.references import simulated_sites

    bundle = load_run(run_dir, last_rounds=1)
    candidates = candidate_table(simulated_sites(bundle.config), cohort_directory(bundle.config), part="validation")
    predicted = network_predictions(bundle.final_model, bundle.stats, bundle.grid, candidates)
    table = pd.concat([candidates, predicted.set_index(candidates.index)], axis=1)
    return ranking_figures(table, bundle.config.survival_horizon_days).model_dump()


def run_setting(name: str, overrides: dict[str, Any], seed: int, runs_dir: Path) -> dict[str, Any]:
    """One federation in this process; the final model's validation figures and each round's validation mean."""
    from client.data.site import simulated_site_dirs
    from client.flower.app import build_client_app
    from server.federation import run_federation
    from simulations.in_process import InProcessGrid

    values = {**overrides, **QUIET, "seed": seed, "output-dir": str(runs_dir), "run-name": f"{name}-seed-{seed}"}
    config = RunConfig.from_mapping(values)
    sites = simulated_site_dirs(config)
    grid = InProcessGrid(build_client_app(config.to_flower()), num_nodes=len(sites))
    started = time.perf_counter()
    with model_form(MODEL_FORMS.get(name)), per_layer_clipping(name in PER_LAYER):
        results = run_federation(grid, config, runs_dir / config.run_name, progress=lambda line: None)
    seconds = time.perf_counter() - started
    final = results.rounds[-1]
    with model_form(MODEL_FORMS.get(name)):
        parameters = sum(t.numel() for t in build_model(20, config.hidden_size, seed).parameters())
        ranking = validation_ranking(runs_dir / config.run_name)
    return {"setting": name, "seed": seed, "overrides": overrides, "model": MODEL_FORMS.get(name),
            "parameters": parameters, "seconds": round(seconds, 1),
            "load_average": os.getloadavg()[0],
            "validation_mean": {k: final.validation_mean.get(k) for k in FIGURES},
            "validation": {s: {k: f.get(k) for k in (*FIGURES, "num-examples")}
                           for s, f in sorted(final.validation.items())},
            "validation_ranking": ranking,
            "curve": [{k: r.validation_mean.get(k) for k in FIGURES} for r in results.rounds],
            "epsilon": results.epsilon,
            "noise_multiplier": max((f.get("noise-multiplier", 0.0) for f in final.train.values()), default=0.0)}


def summarise(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for name in dict.fromkeys(p["setting"] for p in points):
        chosen = [p for p in points if p["setting"] == name]
        row: dict[str, Any] = {"setting": name, "seeds": [p["seed"] for p in chosen],
                               "seconds": statistics.mean(p["seconds"] for p in chosen),
                               "noise_multiplier": chosen[0]["noise_multiplier"]}
        for key in FIGURES:
            values = [p["validation_mean"][key] for p in chosen if p["validation_mean"].get(key) is not None]
            row[key] = statistics.mean(values) if values else None
            row[f"{key}-sd"] = statistics.stdev(values) if len(values) > 1 else None
        for key in RANKING:
            values = [p["validation_ranking"][key] for p in chosen if p.get("validation_ranking")]
            row[key] = statistics.mean(values) if values else None
            row[f"{key}-sd"] = statistics.stdev(values) if len(values) > 1 else None
        rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| setting | seeds | σ | val response AUC | val PFS C | val OS C | val ranking concordance | "
             "val regret (random) | s/run |", "|---|---|---|---|---|---|---|---|---|"]
    show = lambda row, key: "—" if row[key] is None else (  # noqa: E731
        f"{row[key]:.3f}" + (f" ± {row[key + '-sd']:.3f}" if row[key + "-sd"] is not None else ""))
    for row in rows:
        lines.append(f"| {row['setting']} | {len(row['seeds'])} | {row['noise_multiplier']:.2f} | "
                     f"{show(row, 'response-auc')} | {show(row, 'pfs-cindex')} | {show(row, 'os-cindex')} | "
                     f"{show(row, 'response_concordance')} | {show(row, 'regret')} "
                     f"({'—' if row['regret_random'] is None else format(row['regret_random'], '.3f')}) | "
                     f"{row['seconds']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmarks.dp_study",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[42, 43])
    parser.add_argument("--runs-dir", type=Path, default=Path("/tmp/oncofed-dp-study"))
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--list", action="store_true", help="print the settings and exit")
    parser.add_argument("--rank-existing", action="store_true", help="add the validation ranking to stored points "
                        "whose run folder is still under --runs-dir, then exit")
    args = parser.parse_args(argv)
    if args.list:
        for name, overrides in SETTINGS.items():
            print(name, json.dumps(overrides))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    stored = json.loads(args.out.read_text()) if args.out.is_file() else {"points": []}
    if args.rank_existing:
        for point in stored["points"]:
            run_dir = args.runs_dir / f"{point['setting']}-seed-{point['seed']}"
            if "validation_ranking" not in point and (run_dir / "checkpoints").is_dir():
                with model_form(MODEL_FORMS.get(point["setting"])):
                    point["validation_ranking"] = validation_ranking(run_dir)
        stored["summary"] = summarise(stored["points"])
        write_atomically(args.out, json.dumps(stored, indent=1))
        print(markdown(stored["summary"]))
        return 0
    done = {(p["setting"], p["seed"]) for p in stored["points"]}
    for name in args.settings:
        for seed in args.seeds:
            if (name, seed) in done:
                continue
            point = run_setting(name, SETTINGS[name], seed, args.runs_dir)
            stored["points"].append(point)
            stored["summary"] = summarise(stored["points"])
            write_atomically(args.out, json.dumps(stored, indent=1))
            mean = point["validation_mean"]
            print(f"{name} seed {seed}: val AUC {mean['response-auc']:.3f} PFS C {mean['pfs-cindex']:.3f} "
                  f"OS C {mean['os-cindex']:.3f} σ {point['noise_multiplier']:.2f} ({point['seconds']:.0f} s, "
                  f"load {point['load_average']:.2f})", flush=True)
    print(markdown(summarise(stored["points"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
