"""`oncofed-evaluate`: an evaluation-only run on Flower's simulation engine (server/evaluation_run.py).

A registered model (a run directory or a checkpoint with provenance) is sent to every site folder of `--sites`
without any training round; each site writes its report and the run directory holds metrics.json with the
internal (training sites, test split) and external (other sites, all patients) figures and the consortium report.
The network's shape, seed and split fractions are taken from the model's own run (its config.json).
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from shared.config import ConfigError, RunConfig


def evaluation_config(model: str, sites: str, output_dir: str, run_name: str, overrides: dict[str, Any]) -> RunConfig:
    """The run configuration: the model's run's shape and splits, this run's sites and outputs, then --set."""
    from server.evaluation_run import MODEL_KEYS, checkpoint_path, training_configuration

    trained = training_configuration(checkpoint_path(model)) or {}
    values = {key: trained[key] for key in MODEL_KEYS if key in trained}
    values |= {"evaluate-model": model, "data-dir": sites, "output-dir": output_dir, "run-name": run_name}
    return RunConfig.from_mapping(values | overrides)


def main(argv: list[str] | None = None) -> int:
    from simulations.main_job import parse_overrides

    parser = argparse.ArgumentParser(prog="oncofed-evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a run directory (its checkpoints/latest.pt) or a checkpoint")
    parser.add_argument("--sites", required=True, help="folder of site folders (<site>/patients.csv) to evaluate at")
    parser.add_argument("--output-dir", default="runs", help="where the run directory goes (default: runs)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any run-config key of pyproject.toml, e.g. --set bootstrap-samples=200")
    args = parser.parse_args(argv)
    console = Console()
    try:
        config = evaluation_config(args.model, args.sites, args.output_dir,
                                   "evaluate-" + datetime.now().strftime("%Y%m%d-%H%M%S"), parse_overrides(args.set))
        run_dir = run(config, console)
    except (ConfigError, FileNotFoundError, RuntimeError, ValueError) as error:
        console.print(f"[red]{error}[/red]")
        return 1
    from server.evaluation_run import EvaluationResult

    results = EvaluationResult.read(run_dir).model_dump()
    for group in ("internal", "external"):
        mean = results[f"{group}_mean"]
        shown = " | ".join(f"{k} {mean[k]:.3f}" for k in ("response-auc", "pfs-cindex", "os-cindex") if k in mean)
        console.print(f"{group} ({', '.join(sorted(results[group])) or 'none'}): {shown or 'no figures'}",
                      highlight=False, soft_wrap=True)
    console.print(f"wrote {run_dir} (metrics.json, consortium_report.html, sites/<site>/report.html)",
                  highlight=False, soft_wrap=True)
    return 0


def run(config: RunConfig, console: Console) -> Path:
    """Run the product's ServerApp and ClientApps on Flower's simulation engine, one SuperNode per site folder."""
    import os

    from flwr.simulation import run_simulation

    from client.flower.app import build_client_app
    from client.data.site import simulated_site_dirs
    from server.app import build_server_app
    from shared.config import run_directory
    from simulations.main_job import backend_config, quiet_flower

    sites = simulated_site_dirs(config)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, "1")
    console.print(f"evaluating {config.evaluate_model} at {len(sites)} site(s): {', '.join(s.name for s in sites)}",
                  highlight=False, soft_wrap=True)
    quiet_flower()
    overrides = config.to_flower()
    run_simulation(server_app=build_server_app(overrides, progress=lambda line: console.print(line, highlight=False,
                                                                                             soft_wrap=True)),
                   client_app=build_client_app(overrides), num_supernodes=len(sites),
                   backend_config=backend_config(len(sites)))
    run_dir = run_directory(config, run_id=0)
    if not (run_dir / "metrics.json").is_file():
        raise RuntimeError(f"the evaluation ended without writing {run_dir / 'metrics.json'}; see the log above")
    return Path(run_dir)


if __name__ == "__main__":
    sys.exit(main())
