"""The main job: a local federation of simulated hospital sites on Flower's simulation engine.

`oncofed-simulate` generates the default synthetic consortium if it is not there yet, runs the ServerApp
and one ClientApp per site through `flwr.simulation.run_simulation`, and prints each site's figures on its
own held-out test patients. Everything is written to one run directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.config import ConfigError, RunConfig, cohort_directory, run_directory
from shared.run_result import RESULTS_FILE, RunResult
from shared.vocabulary import DICTIONARY


# the summary table's column for each endpoint the dictionary may declare: (endpoint, title, metric key)
ENDPOINT_COLUMNS = (("response", "response AUC", "response-auc"), ("pfs", "PFS C-index", "pfs-cindex"),
                    ("os", "OS C-index", "os-cindex"))

def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`key=value` pairs as in `flwr run --run-config`; values parsed as JSON where they parse."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        try:
            overrides[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key.strip()] = raw
    return overrides


def ensure_cohort(config: RunConfig, console: Console) -> Path:
    """The simulated sites' folders; the default consortium is generated (deterministically) on first use.

    The generator is imported only to generate: it knows the default dictionary's cancers and regimens only, and
    a consortium with its own dictionary brings its own site folders (docs/onboarding.md)."""
    folder = cohort_directory(config)
    if config.data_dir and not folder.is_dir():
        raise FileNotFoundError(f"data-dir {folder} does not exist; generate a cohort there with "
                                f"`oncofed-cohort --out {folder}` or leave data-dir empty for the default")
    if not folder.is_dir():
        from simulations.cohort.config import default_consortium
        from simulations.cohort.generator import generate_consortium
        from simulations.cohort.io import write_consortium

        console.print(f"generating the default synthetic consortium in {folder} …")
        write_consortium(generate_consortium(default_consortium()), folder)
    return folder


def backend_config(num_sites: int) -> dict[str, Any]:
    """One CPU per simulated site at a time, as many sites at once as there are cores."""
    cpus = os.cpu_count() or 1
    return {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
            "init_args": {"num_cpus": min(cpus, num_sites), "logging_level": "ERROR", "log_to_driver": False}}


class _DropRunSimulationNotice(logging.Filter):
    """Flower 1.42 marks `run_simulation` deprecated in favour of `flwr run`; the main job keeps it on purpose.

    It is the in-process engine that takes the ClientApp object (with the tests' mods) and the run's overrides;
    `flwr run .` is the supported path for a SuperLink and is tested separately (tests/test_flwr_run.py).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


def quiet_flower() -> None:
    """Each line once: Flower's own handler prints its records, so they must not reach the root logger too
    (Opacus's logging.basicConfig gives the root logger a handler); its INFO chatter (sampled nodes) is left
    out because the coordinator prints one progress line per round and phase."""
    flower = logging.getLogger("flwr")
    flower.setLevel(logging.WARNING)
    flower.propagate = False
    if not any(isinstance(f, _DropRunSimulationNotice) for f in flower.filters):
        flower.addFilter(_DropRunSimulationNotice())
    # Ray's FutureWarning asks to opt in to its coming default: with num_gpus=0 it leaves CUDA_VISIBLE_DEVICES
    # alone. Every simulated site runs on CPU, so the coming default changes nothing here.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def run(config: RunConfig, console: Console, client_mods: list | None = None,
        with_references: bool = False) -> tuple[Path, RunResult]:
    from flwr.simulation import run_simulation

    from client.data.site import simulated_site_dirs
    from client.flower.app import build_client_app
    from server.app import build_server_app

    ensure_cohort(config, console)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one torch thread per site; Ray workers inherit it
        os.environ.setdefault(variable, "1")
    sites = simulated_site_dirs(config)
    run_dir = run_directory(config, run_id=0)
    overrides = config.to_flower()
    console.print(f"federating {len(sites)} sites ({', '.join(s.name for s in sites)}) for "
                  f"{config.num_rounds} rounds, strategy {config.strategy}, "
                  f"{'DP ε=' + str(config.target_epsilon) + ' per site' if config.dp else 'no DP'}", soft_wrap=True)
    if config.dp:
        from server.validation import budget_split, planned_training_rounds

        console.print(budget_split_line(budget_split(config, planned_training_rounds(config, len(sites)))),
                      highlight=False, soft_wrap=True)
    quiet_flower()
    references = None
    if with_references:
        from simulations.references import references
    progress = lambda line: console.print(line, highlight=False, soft_wrap=True)  # noqa: E731
    run_simulation(server_app=build_server_app(overrides, progress=progress, references=references),
                   client_app=build_client_app(overrides, client_mods), num_supernodes=len(sites),
                   backend_config=backend_config(len(sites)))
    if not (run_dir / RESULTS_FILE).is_file():
        raise RuntimeError(f"the federation ended without writing {run_dir / RESULTS_FILE}; see the log above")
    return run_dir, RunResult.read(run_dir)


def budget_split_line(split: dict) -> str:
    """How each site's ε is split between the deployed model and the validation phases (metrics.json)."""
    line = f"each site's ε = {split['target_epsilon']:g}: the federated model over {split['federated_rounds']} rounds"
    if not split["validation_rounds"]:
        return line + " gets all of it (no validation phase trains)"
    return (f"{line} gets the rest after the validation phases (local-only, cross-site, leave-one-site-out), which "
            f"may spend ε ≤ {split['validation_epsilon']:.2f} over {split['validation_rounds']} rounds "
            f"(validation-epsilon-share {split['validation_epsilon_share']:g}; turn phases off with "
            f"--no-cross-site/--no-loso)")


def time_summary(results: RunResult, started_at: float, finished_at: float) -> str:
    """Where the job's time went: start-up (cohort, imports, Ray, sites connecting) then each phase."""
    seconds = dict(results.seconds)
    if results.started_at is not None:
        seconds = {"start-up": results.started_at - started_at, **seconds}
    seconds["other (shutdown, reports)"] = max(finished_at - started_at - sum(seconds.values()), 0.0)
    parts = " | ".join(f"{name} {value:.0f} s" for name, value in seconds.items())
    return f"time: {finished_at - started_at:.0f} s = {parts}"


def summary_table(results: RunResult) -> Table:
    """Each site's test figures for the endpoints of the consortium's data dictionary."""
    endpoints = [(title, key) for endpoint, title, key in ENDPOINT_COLUMNS if endpoint in DICTIONARY.endpoints]
    table = Table(title="Each site's held-out test patients (final global model)")
    for column in ("site", "n test", *(title for title, _ in endpoints), "ε spent"):
        table.add_column(column, justify="left" if column == "site" else "right")
    show = lambda figures, key: f"{figures[key]:.3f}" if key in figures else "suppressed"  # noqa: E731
    for site in sorted(set(results.test) | set(results.test_missing)):
        figures = results.test.get(site)
        if figures is None:
            table.add_row(site, "—", *("—" for _ in endpoints), results.test_missing[site][:40])
            continue
        epsilon = results.epsilon.get(site)
        table.add_row(site, str(int(figures["num-examples"])), *(show(figures, key) for _, key in endpoints),
                      f"{epsilon:.2f}" if epsilon is not None else "no DP")
    mean = results.test_mean
    table.add_row("weighted mean", "", *(show(mean, key) for _, key in endpoints), "", style="bold")
    return table


# oncofed-simulate's options that set one run-config key each (any other key: --set KEY=VALUE)
CONFIG_OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "--rounds": ("num-rounds", {"type": int, "help": "number of federated rounds (num-rounds)"}),
    "--strategy": ("strategy", {"help": "fedavg, fedprox, fedadam or fedyogi"}),
    "--no-dp": ("dp", {"action": "store_const", "const": False, "help": "train without differential privacy"}),
    "--data-dir": ("data-dir", {"help": "folder of simulated site folders (default: the default cohort)"}),
    "--output-dir": ("output-dir", {"help": "where run directories go (default: runs)"}),
    "--resume": ("resume-from", {"metavar": "RUN_DIR", "help": "continue a run from its last checkpoint"}),
}
# the switches of the validation phases the main job runs by default (RunConfig.MAIN_JOB_PHASES); a --set wins
PHASE_SWITCHES: dict[str, tuple[str, str]] = {
    "--no-cross-site": ("share-local-models", "sites keep their local-only models: no cross-site matrix"),
    "--no-loso": ("leave-one-site-out", "no leave-one-site-out federations"),
}


def config_from_arguments(args: argparse.Namespace) -> RunConfig:
    """The run configuration: RunConfig's defaults, the main job's validation phases (RunConfig.MAIN_JOB_PHASES)
    unless switched off, then the command line's values."""
    values: dict[str, Any] = parse_overrides(args.set)
    for key, _ in CONFIG_OPTIONS.values():
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    # the main job answers the consortium's questions by default: cross-site matrix and LOSO (see README)
    for key, on in RunConfig.MAIN_JOB_PHASES.items():
        values.setdefault(key, on and not getattr(args, key))
    values.setdefault("run-name", datetime.now().strftime("%Y%m%d-%H%M%S"))
    if "resume-from" in values:
        values["run-name"] = Path(values["resume-from"]).name
    return RunConfig.from_mapping(values)


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="oncofed-simulate", description=__doc__.splitlines()[0])
    for option, (key, keywords) in CONFIG_OPTIONS.items():
        parser.add_argument(option, dest=key, **keywords)
    for option, (key, help_text) in PHASE_SWITCHES.items():
        parser.add_argument(option, dest=key, action="store_true", help=f"{help_text} ({key}=false)")
    parser.add_argument("--no-references", action="store_true",
                        help="no pooled centralised or oracle reference after the run")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any run-config key of pyproject.toml, e.g. --set target-epsilon=8")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = argument_parser().parse_args(argv)
    console = Console()
    try:
        config = config_from_arguments(args)
    except ConfigError as error:
        console.print(f"[red]{error}[/red]")
        return 2
    started = time.time()
    try:
        run_dir, results = run(config, console, with_references=not args.no_references)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        console.print(f"[red]{error}[/red]")
        return 1
    console.print(summary_table(results))
    console.print(time_summary(results, started, time.time()), highlight=False, soft_wrap=True)
    from client.data.site import simulated_site_dirs

    own_folders = any((folder / "site.toml").is_file() for folder in simulated_site_dirs(config))
    sites_wrote = ("each site's privacy_ledger.json and report.html in the state_dir of its site.toml" if own_folders
                   else "sites/<site>/privacy_ledger.json and report.html")
    console.print(f"wrote {run_dir} (config.json, metrics.json, checkpoints/, consortium_report.html, {sites_wrote})",
                  highlight=False, soft_wrap=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
