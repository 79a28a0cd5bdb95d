"""A deployed round against the same round in simulation: `python -m simulations.benchmarks.deployed_round`.

Issue 17's target: a round on Flower's deployment engine (a SuperLink with TLS and SuperNode authentication, three
SuperNodes as separate processes on 127.0.0.1, `flwr run`) within 2× the same round in simulation. The same three
sites (the deployment tests' tiny sites, made by tests/deploy/harness.py, the harness those tests use) run the same
run configuration twice: deployed, and in Flower's simulation engine (`run_simulation`, Ray, as the main job) from
an identical copy of the site folders (each with its own site.toml, state and privacy ledger). Each round's seconds
(train + aggregate + evaluate, as the coordinator records them in metrics.json) are compared round by round.

Where a deployed round's extra time goes, measured in the same invocation: a SuperNode asks the SuperLink for
messages every 3 s (flwr 1.42's fixed poll interval), then starts a fresh Python process for each message (Flower's
subprocess isolation), which imports the ClientApp (timed here) and reads the site's table from its disk cache
(client/data/cache.py); a simulated site's Ray actor imports once and keeps the site in memory.
Writes simulations/benchmarks/results/deployed_round.json with the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from shared.atomic import write_atomically

RESULTS = Path(__file__).parent / "results" / "deployed_round.json"
SITES = ("alpha", "beta", "gamma")  # tests/deploy/test_deployment.py's sites: 80 patients each, seeds 0, 1, 2
RUN = {"num-rounds": 2, "local-epochs": 1, "min-sites": 3, "site-reports": False, "recalibrate-response": False,
       "bootstrap-samples": 20, "shap-patients": 0, "round-timeout-s": 300.0}
PHASES = ("train", "aggregate", "evaluate")


def round_seconds(metrics: dict) -> list[dict[str, float]]:
    """Each round's coordinator seconds by phase, and their total."""
    return [{**{k: r["seconds"][k] for k in PHASES}, "total": sum(r["seconds"][k] for k in PHASES)}
            for r in metrics["rounds"]]


def simulate_main(job: Path) -> int:
    """The child: the same run configuration in Flower's simulation engine, as the main job runs it."""
    from rich.console import Console

    from shared.config import RunConfig
    from simulations.main_job import run

    run(RunConfig.from_mapping(json.loads(job.read_text())), Console())
    return 0


def client_app_import_s(env: dict[str, str], repeats: int = 3) -> float:
    """Median seconds of `python -c "import client.flower.app"` (what each deployed message starts with)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import client.flower.app"], check=True, env=env)
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def deployed(consortium: Any, values: dict[str, Any], timeout: float) -> tuple[dict, float]:
    """SuperLink, three registered SuperNodes, `flwr run`; metrics.json and the run's wall seconds."""
    configs = {site: consortium.make_site(site, seed) for seed, site in enumerate(SITES)}
    consortium.make_certificates(list(configs))
    consortium.start_superlink()
    for site, config in configs.items():
        registered = consortium.register(consortium.certs / "sites" / site / "node_key.pub")
        assert registered.returncode == 0, registered.stdout + registered.stderr
        consortium.start_supernode(site, consortium.certs / "sites" / site / "node_key",
                                   consortium.certs / "superlink" / "ca.crt", config)
    consortium.wait_for(lambda: consortium.online_nodes() == len(SITES), 120, "three SuperNodes online")
    metrics_file = Path(values["output-dir"]) / values["run-name"] / "metrics.json"
    start = time.perf_counter()
    run_id = consortium.submit(values)
    consortium.wait_for(metrics_file.is_file, timeout, "the deployed run's metrics", run_id)
    return json.loads(metrics_file.read_text()), time.perf_counter() - start


def simulated(values: dict[str, Any], work: Path, env: dict[str, str]) -> tuple[dict, float]:
    job = work / "simulate.json"
    job.write_text(json.dumps(values))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "simulations.benchmarks.deployed_round", "simulate", str(job)],
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the simulated run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads((Path(values["output-dir"]) / values["run-name"] / "metrics.json").read_text()), wall


def benchmark(out: Path, timeout: float, keep: bool) -> dict[str, Any]:
    from tests.deploy.harness import Consortium  # the deployment tests' process harness (repository checkout)

    work = Path(tempfile.mkdtemp(prefix="oncofed-deployed-round-"))
    consortium = Consortium(work / "deployed")
    load_start = os.getloadavg()
    try:
        deployed_values = {**RUN, "output-dir": str(consortium.runs), "run-name": "deployed"}
        deployed_metrics, deployed_wall = deployed(consortium, deployed_values, timeout)
        consortium.stop_all()
        simulated_sites = work / "simulated-sites"  # the same folders, untouched state: copied before any run
        simulated_sites.mkdir()
        for site in SITES:
            shutil.copytree(consortium.root / "sites" / site, simulated_sites / site,
                            ignore=shutil.ignore_patterns("state"))
        simulated_values = {**RUN, "output-dir": str(work / "runs"), "run-name": "simulated",
                            "data-dir": str(simulated_sites)}
        simulated_metrics, simulated_wall = simulated(simulated_values, work, consortium.env)
        import_s = client_app_import_s(consortium.env)
    finally:
        consortium.stop_all()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    dep, sim = round_seconds(deployed_metrics), round_seconds(simulated_metrics)
    results = {
        "what": "the same 3 sites (80 patients each) and run configuration, deployed (SuperLink with TLS and "
                "SuperNode authentication, 3 SuperNodes on 127.0.0.1, flwr run) and simulated (run_simulation); "
                "round seconds = the coordinator's train + aggregate + evaluate",
        "run_config": RUN, "sites": list(SITES),
        "rounds": [{"round": i + 1, "deployed_s": d, "simulated_s": s, "ratio": d["total"] / s["total"]}
                   for i, (d, s) in enumerate(zip(dep, sim))],
        "target_ratio": 2.0,
        "run_wall_s": {"deployed": deployed_wall, "simulated": simulated_wall},
        "client_app_import_s": import_s, "supernode_poll_interval_s": 3.0,
        "load_average_start": load_start, "load_average_end": os.getloadavg(), "cpus": os.cpu_count(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_atomically(out, json.dumps(results, indent=2))
    for r in results["rounds"]:
        print(f"round {r['round']}: deployed {r['deployed_s']['total']:.2f} s (train {r['deployed_s']['train']:.2f}, "
              f"evaluate {r['deployed_s']['evaluate']:.2f}) vs simulated {r['simulated_s']['total']:.2f} s "
              f"(train {r['simulated_s']['train']:.2f}, evaluate {r['simulated_s']['evaluate']:.2f}): "
              f"{r['ratio']:.2f}× (target ≤ 2×)")
    print(f"whole run: deployed {deployed_wall:.1f} s, simulated {simulated_wall:.1f} s (Ray start-up included); "
          f"`import client.flower.app` {import_s:.2f} s per message")
    print(f"load average at start {load_start[0]:.2f}, at end {results['load_average_end'][0]:.2f}; wrote {out}")
    return results


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:
        return simulate_main(Path(argv[1]))
    parser = argparse.ArgumentParser(prog="python -m simulations.benchmarks.deployed_round",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds to wait for the deployed run")
    parser.add_argument("--keep-work", action="store_true", help="keep the temporary folders and process logs")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    benchmark(args.out, args.timeout, args.keep_work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
