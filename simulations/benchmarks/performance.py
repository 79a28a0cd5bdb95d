"""Speed, scale and cost of the federation: wall time, peak memory, where a round's time goes, DP's price, bytes.

`python -m simulations.benchmarks.performance` measures, each figure the median of repeated runs:
- the main job (`oncofed-simulate`'s federation, in a fresh process like the user's command) end to end: wall
  time and the peak memory of its whole process tree (driver, Ray's GCS/raylet, every ClientApp actor);
- per round: the coordinator's seconds for training, aggregation and evaluation, the seconds the sites spent
  inside their ClientApp, and the ratio of the round to the same work at the sites (each site's DP training epochs
  and its validation figures) in a plain PyTorch loop in one process, without Flower or Ray;
- DP-SGD's cost: seconds per epoch of a site's training with Opacus against the same training without DP;
- scale: 3, 10, 30 and 100 simulated sites with the same total patients (4,650), and 3, 10 and 30 sites with a
  fixed 775 patients per site (100 such sites, 77,500 patients, took 14 min alone on a loaded machine; add it with
  `--growing-sites 3,10,30,100`). The defaults are sized for a re-run within 15 minutes on a quiet 2-core machine:
  an estimate of about 10 minutes (main job 65 s quiet × 3, plain loop and DP ~20 s, seven scale points of
  20–90 s each), not yet timed quiet;
- communication: bytes a site receives and sends per message (Flower's protobuf serde) and the parameter count.
It writes JSON to simulations/benchmarks/results/ and prints a table of ratios. `--quick` is a smoke test.
The JSON records the load average at the start, before each section and at the end, and a `quiet` statement: what
the operator declared (`--quiet-machine`: nothing else was running) and whether the load confirmed it.
Each federation runs as `python -m simulations.benchmarks.performance job …` in a child process.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from shared.atomic import write_atomically
from simulations.benchmarks.compute_cost import dp_epoch_cost, plain_loop_round
from simulations.benchmarks.message_log import communication_summary, phase_of, read_message_log
from simulations.benchmarks.process_memory import TreeSampler

RESULTS_DIR = Path(__file__).parent / "results"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TOTAL_PATIENTS = 4650
PATIENTS_PER_SITE_GROWING = 775
GIB = 1024**3


@dataclass(frozen=True)
class Settings:
    """What one benchmark invocation measures; `--quick` shrinks everything to a smoke test."""

    quick: bool
    repeats: int  # main job, plain loop and DP timings
    scale_repeats: int
    scale_sites: tuple[int, ...]  # the same-total series
    growing_sites: tuple[int, ...]  # the fixed-patients-per-site series
    scale_rounds: int
    main_overrides: dict[str, Any]  # run-config keys for the main job (empty = the user's default)
    main_cohort: tuple[int, int] | None  # (sites, patients per site) of a generated cohort; None = default cohort


def settings_from(args: argparse.Namespace) -> Settings:
    if args.quick:
        return Settings(quick=True, repeats=1, scale_repeats=1, scale_sites=(3, 10), growing_sites=(3, 10),
                        scale_rounds=1,
                        main_overrides={"num-rounds": 2, "bootstrap-samples": 20}, main_cohort=(3, 100))
    sites = tuple(int(n) for n in args.scale_sites.split(",") if n.strip())
    growing = tuple(int(n) for n in args.growing_sites.split(",") if n.strip())
    return Settings(quick=False, repeats=args.repeats, scale_repeats=args.scale_repeats, scale_sites=sites,
                    growing_sites=growing,
                    scale_rounds=args.scale_rounds, main_overrides={}, main_cohort=None)


# ------------------------------------------------------------------------------------------------ cohorts
def write_scaled_cohort(folder: Path, num_sites: int, patients_per_site: int, seed: int = 20240611) -> float:
    """N sites cycling the default consortium's six hospital profiles, each with `patients_per_site`; seconds."""
    from simulations.cohort.config import CohortConfig, default_consortium
    from simulations.cohort.generator import generate_consortium
    from simulations.cohort.io import write_consortium

    profiles = default_consortium(seed=seed).sites
    sites = [profiles[i % len(profiles)].model_copy(update={"site_id": f"{profiles[i % len(profiles)].site_id}_{i:03d}",
                                                            "n_patients": patients_per_site})
             for i in range(num_sites)]
    started = time.perf_counter()
    write_consortium(generate_consortium(CohortConfig(seed=seed, sites=sites)), folder)
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------- one federation
def run_job(values: dict[str, Any], work: Path, label: str) -> dict[str, Any]:
    """One federation in a child process, its tree's memory sampled; returns what it measured."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "messages").mkdir(exist_ok=True)
    spec = work / "job.json"
    spec.write_text(json.dumps(values))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    with open(work / "job.log", "w") as log:
        started, launched = time.perf_counter(), time.time()
        child = subprocess.Popen([sys.executable, "-m", "simulations.benchmarks.performance", "job", str(work)],
                                 stdout=log, stderr=subprocess.STDOUT, env=env)
        with TreeSampler(child.pid) as sampler:
            code = child.wait()
        wall = time.perf_counter() - started
    if code != 0:
        tail = (work / "job.log").read_text().splitlines()[-15:]
        raise RuntimeError(f"{label}: the federation exited with {code}; see {work / 'job.log'}:\n" + "\n".join(tail))
    metrics = json.loads((Path(values["output-dir"]) / values["run-name"] / "metrics.json").read_text())
    entries = read_message_log(work / "messages")
    return summarise_job(wall, launched, sampler.peak, metrics, entries)


def summarise_job(wall: float, launched: float, peak: Any, metrics: dict, entries: list[dict]) -> dict[str, Any]:
    """Where the time of one run went; `launched` is the wall-clock time the child process was started."""
    rounds = metrics["rounds"]
    test = [e for e in entries if phase_of(e) == "test"]
    per_round = []
    for record in rounds:
        in_round = [e for e in entries if e["round"] == record["round"] and phase_of(e) in ("train", "validation")]
        per_round.append({**record["seconds"], "round": record["round"],
                          "site_seconds_train": sum(e["site_seconds"] for e in in_round if phase_of(e) == "train"),
                          "site_seconds_validation": sum(e["site_seconds"] for e in in_round
                                                          if phase_of(e) == "validation")})
    return {
        "wall_s": wall,
        "peak_rss_bytes": peak.rss_bytes, "peak_pss_bytes": peak.pss_bytes, "peak_processes": peak.processes,
        "memory_samples": peak.samples,
        "phases_s": {
            "start_to_first_site_message": min(e["started"] for e in entries) - launched,
            "harmonisation": (max(e["ended"] for e in entries if phase_of(e) == "feature_summary")
                              - min(e["started"] for e in entries)),
            "rounds": sum(sum(r["seconds"].values()) for r in rounds),
            "final_test_evaluation_and_reports": (max(e["ended"] for e in test) - min(e["started"] for e in test)
                                                  if test else 0.0),
            "after_last_site_message": launched + wall - max(e["ended"] for e in entries),
        },
        "rounds": per_round,
        "communication": communication_summary(entries),
        "workers": len({e["pid"] for e in entries}),
        "sites_missing_at_test": sorted(metrics["test_missing"]),
        "test_mean": metrics["test_mean"],
    }


def job_main(work: Path) -> int:
    """The child: run the main job's federation, every site message logged by the MessageLog mod."""
    from rich.console import Console as ChildConsole

    from shared.config import RunConfig
    from simulations.benchmarks.message_log import MessageLog
    from simulations.main_job import run

    config = RunConfig.from_mapping(json.loads((work / "job.json").read_text()))
    run(config, ChildConsole(), client_mods=[MessageLog(work / "messages")])
    return 0


def job_values(run_name: str, runs: Path, cohort: Path | None, **overrides: Any) -> dict[str, Any]:
    values = {"run-name": run_name, "output-dir": str(runs), **overrides}
    if cohort is not None:
        values["data-dir"] = str(cohort)
    return values


# ----------------------------------------------------------------------------------------------- driver
def median_of(runs: list[dict], key: Callable[[dict], float]) -> float:
    return statistics.median(key(r) for r in runs)


def main_job_section(settings: Settings, work: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    cohort = None
    if settings.main_cohort is not None:
        cohort = work / "main-cohort"
        write_scaled_cohort(cohort, *settings.main_cohort)
    runs = []
    for repeat in range(settings.repeats):
        values = job_values(f"main-{repeat}", work / "runs", cohort, **settings.main_overrides)
        result = run_job(values, work / f"main-{repeat}", f"main job run {repeat + 1}")
        runs.append(result)
        progress(f"main job {repeat + 1}/{settings.repeats}: {result['wall_s']:.1f} s, "
                 f"peak PSS {result['peak_pss_bytes'] / GIB:.2f} GiB (RSS sum {result['peak_rss_bytes'] / GIB:.2f} GiB)")
    later_rounds = lambda r: [x for x in r["rounds"] if x["round"] > 1] or r["rounds"]  # noqa: E731 round 1 warms up
    round_median = lambda r, f: statistics.median(f(x) for x in later_rounds(r))  # noqa: E731
    summary = {
        "wall_s": median_of(runs, lambda r: r["wall_s"]),
        "peak_pss_bytes": median_of(runs, lambda r: r["peak_pss_bytes"]),
        "peak_rss_bytes": median_of(runs, lambda r: r["peak_rss_bytes"]),
        "phases_s": {k: median_of(runs, lambda r, k=k: r["phases_s"][k]) for k in runs[0]["phases_s"]},
        "round_s": {k: median_of(runs, lambda r, k=k: round_median(r, lambda x: x[k]))
                    for k in ("train", "aggregate", "evaluate", "site_seconds_train", "site_seconds_validation")},
        "deterministic_test_figures": (all(r["test_mean"] == runs[0]["test_mean"] for r in runs)
                                       if len(runs) > 1 else None),  # None: one run, nothing to compare
    }
    summary["round_s"]["total"] = sum(summary["round_s"][k] for k in ("train", "aggregate", "evaluate"))
    return {"cohort": str(cohort) if cohort else "default", "overrides": settings.main_overrides,
            "repeats": len(runs), "median": summary, "runs": runs}


def plain_loop_section(settings: Settings, work: Path, main: dict, progress: Callable[[str], None]) -> dict:
    cohort = Path(main["cohort"]) if main["cohort"] != "default" else None
    one_round = plain_loop_round(cohort, settings.main_overrides, dp=True)
    one_round()  # warm-up: imports, allocator, Opacus
    seconds = [one_round() for _ in range(max(settings.repeats, 3))]
    plain = statistics.median(seconds)
    federated = main["median"]["round_s"]["total"]
    workers = statistics.median(r["workers"] for r in main["runs"])
    progress(f"plain PyTorch loop, one process: {plain:.2f} s per round; federated round {federated:.2f} s")
    return {"plain_loop_round_s": plain, "runs_s": seconds, "federated_round_s": federated,
            "overhead_ratio": federated / plain, "parallel_workers": workers,
            "overhead_ratio_vs_ideal_parallel": federated / (plain / workers),
            "what": "each site's DP local training (same epochs, batch size, noise) and its validation figures (loss, "
                    "response AUC, PFS and OS C-index: client.evaluation.cohort.evaluate_cohort, as a site answers "
                    "an evaluate message), sites one after another, one thread, no Flower/Ray; federated = the "
                    "coordinator's train + aggregate + evaluate seconds (median over rounds 2..R and repeats)"}


def scale_section(settings: Settings, work: Path, progress: Callable[[str], None]) -> dict[str, Any]:
    series: dict[str, list[dict]] = {"same_total": [], "growing": []}
    total = DEFAULT_TOTAL_PATIENTS if not settings.quick else 300
    per_site = PATIENTS_PER_SITE_GROWING if not settings.quick else 40
    for name in series:
        for sites in (settings.scale_sites if name == "same_total" else settings.growing_sites):
            patients_per_site = round(total / sites) if name == "same_total" else per_site
            cohort = work / f"scale-{name}-{sites}"
            generation = write_scaled_cohort(cohort, sites, patients_per_site)
            runs = []
            for repeat in range(settings.scale_repeats):
                values = job_values(f"scale-{name}-{sites}-{repeat}", work / "runs", cohort,
                                    **{"num-rounds": settings.scale_rounds, "site-reports": False, "min-cell-size": 5})
                runs.append(run_job(values, work / f"scale-{name}-{sites}-{repeat}", f"{sites} sites ({name})"))
            shutil.rmtree(cohort, ignore_errors=True)
            point = {"sites": sites, "patients_per_site": patients_per_site, "patients": sites * patients_per_site,
                     "cohort_generation_s": generation, "repeats": len(runs),
                     "wall_s": median_of(runs, lambda r: r["wall_s"]),
                     "start_to_first_site_message_s": median_of(runs, lambda r: r["phases_s"]["start_to_first_site_message"]),
                     "round_s": median_of(runs, lambda r: statistics.median(sum(x[k] for k in ("train", "aggregate", "evaluate"))
                                                                               for x in r["rounds"])),
                     "peak_pss_bytes": median_of(runs, lambda r: r["peak_pss_bytes"]),
                     "peak_rss_bytes": median_of(runs, lambda r: r["peak_rss_bytes"]),
                     "peak_processes": max(r["peak_processes"] for r in runs),
                     "workers": max(r["workers"] for r in runs),
                     "sites_missing_at_test": runs[0]["sites_missing_at_test"]}
            point["load_average_after"] = os.getloadavg()
            series[name].append(point)
            progress(f"scale {name}: {sites} sites × {patients_per_site} patients: {point['wall_s']:.1f} s, "
                     f"peak PSS {point['peak_pss_bytes'] / GIB:.2f} GiB")
    return {"rounds": settings.scale_rounds, "site_reports": False, "min_cell_size": 5,
            "what": "num-rounds as given, DP on, site reports off (their bootstrap is per-site work, not "
                    "orchestration), min-cell-size 5 so that the smallest sites still evaluate",
            "series": {name: points for name, points in series.items() if points}}


def communication_section(main: dict) -> dict[str, Any]:
    from shared.config import RunConfig
    from shared.model import model_for

    config = RunConfig.from_mapping(main["overrides"])
    model = model_for(config)
    phases = main["runs"][0]["communication"]
    per_round = {direction: sum(phases[p][f"{direction}_bytes_median"] for p in ("train", "validation") if p in phases)
                 for direction in ("received", "sent")}
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "parameter_bytes_float32": 4 * sum(p.numel() for p in model.parameters()),
            "per_message": phases, "per_site_per_round_bytes": per_round,
            "what": "whole Message (metadata + records) serialised by flwr.common.serde.message_to_proto"}


def machine_info() -> dict[str, Any]:
    import flwr
    import ray
    import torch

    memory = next((int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:")), 0)
    return {"cpus": os.cpu_count(), "memory_bytes": memory, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "flwr": flwr.__version__,
            "ray": ray.__version__, "torch_threads": torch.get_num_threads()}


def ratio_table(results: dict) -> Table:
    table = Table(title="OncoFed performance (medians; ratios measured in the same run)")
    for column in ("what", "figure", "ratio", "target"):
        table.add_column(column, justify="left" if column == "what" else "right")
    main = results["main_job"]["median"]
    table.add_row("main job end to end", f"{main['wall_s']:.1f} s", "", "")
    table.add_row("  peak memory, process tree (PSS / RSS sum)",
                  f"{main['peak_pss_bytes'] / GIB:.2f} / {main['peak_rss_bytes'] / GIB:.2f} GiB", "", "")
    for phase, seconds in main["phases_s"].items():
        table.add_row(f"  {phase.replace('_', ' ')}", f"{seconds:.1f} s", "", "")
    rounds = main["round_s"]
    table.add_row("round: train / aggregate / evaluate",
                  f"{rounds['train']:.2f} / {rounds['aggregate']:.3f} / {rounds['evaluate']:.2f} s", "", "")
    table.add_row("round: seconds inside the sites (train + validation, summed)",
                  f"{rounds['site_seconds_train'] + rounds['site_seconds_validation']:.2f} s", "", "")
    plain = results["plain_loop"]
    table.add_row("federated round vs plain PyTorch loop (one process)",
                  f"{plain['federated_round_s']:.2f} vs {plain['plain_loop_round_s']:.2f} s",
                  f"{plain['overhead_ratio']:.2f}×", "≤ 2×")
    dp = results["dp_cost"]
    table.add_row(f"DP-SGD vs no DP, s/epoch ({dp['site']}, {dp['train_patients']} patients)",
                  f"{dp['seconds_per_epoch_dp']:.2f} vs {dp['seconds_per_epoch_no_dp']:.2f} s",
                  f"{dp['ratio']:.2f}×", "≤ 2.5×")
    scale = results.get("scale")
    if scale:
        for name, points in scale["series"].items():
            if not points:
                continue
            base = points[0]
            for point in points:
                target = "≤ 8 GiB" if point["sites"] == 100 else ""
                table.add_row(f"scale {name.replace('_', ' ')}: {point['sites']} sites × {point['patients_per_site']}",
                              f"{point['wall_s']:.1f} s (round {point['round_s']:.1f} s), "
                              f"{point['peak_pss_bytes'] / GIB:.2f} GiB",
                              f"{point['wall_s'] / base['wall_s']:.2f}× time, "
                              f"{point['peak_pss_bytes'] / base['peak_pss_bytes']:.2f}× mem vs {base['sites']}", target)
    comm = results["communication"]
    table.add_row("model parameters", f"{comm['parameters']:,}", "", "")
    table.add_row("bytes per site per round (received / sent)",
                  f"{comm['per_site_per_round_bytes']['received']:,.0f} / {comm['per_site_per_round_bytes']['sent']:,.0f}",
                  "", "")
    return table


QUIET_LOAD = 0.5  # 5-minute load average at the start below which nothing else was running on the machine


def quiet_statement(declared: bool, load_start: tuple[float, float, float]) -> dict[str, Any]:
    """Whether the figures are quiet-machine figures: the operator's word and the load before the benchmark began.

    The load during and after the run includes the benchmark's own processes, so only the start can confirm it."""
    confirmed = load_start[1] < QUIET_LOAD
    return {"declared_by_operator": declared, "load_average_5min_start": load_start[1],
            "load_confirms": confirmed, "quiet": declared and confirmed,
            "rule": f"quiet = --quiet-machine given and the 5-minute load average at the start < {QUIET_LOAD}"}


def benchmark(settings: Settings, out: Path, console: Console, keep_work: bool,
              quiet_declared: bool = False) -> dict[str, Any]:
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # as the main job sets for itself and its workers
        os.environ.setdefault(variable, "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    progress = lambda line: console.print(f"[{time.strftime('%H:%M:%S')}] {line}")  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="oncofed-performance-"))
    started = time.perf_counter()
    load_start = os.getloadavg()
    results: dict[str, Any] = {"quick": settings.quick, "load_average_start": load_start,
                               "quiet": quiet_statement(quiet_declared, load_start),
                               "settings": {"repeats": settings.repeats, "scale_repeats": settings.scale_repeats,
                                            "scale_sites": settings.scale_sites,
                                            "growing_sites": settings.growing_sites,
                                            "scale_rounds": settings.scale_rounds},
                               "load_average_before": {},
                               "machine": machine_info(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    try:
        progress(f"main job × {settings.repeats} (work folder {work})")
        results["load_average_before"]["main_job"] = os.getloadavg()
        results["main_job"] = main_job_section(settings, work, progress)
        results["load_average_before"]["plain_loop"] = os.getloadavg()
        results["plain_loop"] = plain_loop_section(settings, work, results["main_job"], progress)
        cohort = results["main_job"]["cohort"]
        results["dp_cost"] = dp_epoch_cost(None if cohort == "default" else Path(cohort), settings.main_overrides,
                                           repeats=max(settings.repeats, 3))
        progress(f"DP-SGD {results['dp_cost']['seconds_per_epoch_dp']:.2f} s/epoch vs "
                 f"{results['dp_cost']['seconds_per_epoch_no_dp']:.2f} s/epoch without")
        results["communication"] = communication_section(results["main_job"])
        if settings.scale_sites or settings.growing_sites:
            results["load_average_before"]["scale"] = os.getloadavg()
            results["scale"] = scale_section(settings, work, progress)
    finally:
        if not keep_work:
            shutil.rmtree(work, ignore_errors=True)
    results["load_average_end"] = os.getloadavg()
    results["benchmark_wall_s"] = time.perf_counter() - started
    write_atomically(out, json.dumps(results, indent=2))
    console.print(ratio_table(results))
    console.print(f"wrote {out} in {results['benchmark_wall_s']:.0f} s; load average at start "
                  f"{results['load_average_start'][0]:.2f}, at end {results['load_average_end'][0]:.2f}; "
                  f"quiet: {results['quiet']['quiet']}")
    return results


def argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmarks.performance",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny cohort, one repeat, 3 and 10 sites")
    parser.add_argument("--repeats", type=int, default=3, help="runs of the main job (and plain loop, DP timing)")
    parser.add_argument("--scale-sites", default="3,10,30,100",
                        help="site counts sharing 4,650 patients, comma-separated; '' skips this series")
    parser.add_argument("--growing-sites", default="3,10,30",
                        help="site counts with 775 patients each, comma-separated; '' skips this series")
    parser.add_argument("--quiet-machine", action="store_true",
                        help="state that nothing else runs on this machine (recorded in the JSON's `quiet`)")
    parser.add_argument("--scale-repeats", type=int, default=1, help="runs per scale point")
    parser.add_argument("--scale-rounds", type=int, default=2, help="rounds of each scale run")
    parser.add_argument("--out", type=Path, help="JSON path (default: results/performance[-quick].json)")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary runs, cohorts and logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["job"]:
        return job_main(Path(argv[1]))
    parser = argument_parser()
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.scale_repeats < 1 or args.scale_rounds < 1:
        parser.error("--repeats, --scale-repeats and --scale-rounds must be at least 1")
    settings = settings_from(args)
    out = args.out or RESULTS_DIR / ("performance-quick.json" if settings.quick else "performance.json")
    benchmark(settings, out, Console(width=None if Console().is_terminal else 140), args.keep_work,
              args.quiet_machine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
