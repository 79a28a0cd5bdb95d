"""How long validating a large export takes: `python -m simulations.benchmarks.export_validation [--patients N]`.

Builds an N-patient contract CSV by repeating the default synthetic cohort's rows (new patient ids), then
times the site's whole door (read, map, validate: client.data.loader.load_contract_csv) and the dictionary
check alone (shared.contract.check_frame). Prints the machine's load average beside the figures, because a
shared machine's timings are not quiet-machine timings.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd

from client.data.loader import load_contract_csv, read_csv_cells
from shared.contract import check_frame

DEFAULT_COHORT = Path.home() / ".oncofed" / "default-cohort"


def large_export(patients: int, cohort: Path = DEFAULT_COHORT) -> pd.DataFrame:
    """The cohort's site files stacked and repeated to `patients` rows, with unique patient ids."""
    sites = sorted(p for p in cohort.iterdir() if p.is_dir() and not p.name.startswith("_"))
    frame = pd.concat([pd.read_csv(site / "patients.csv", dtype=str, keep_default_na=False) for site in sites])
    repeats = -(-patients // len(frame))
    stacked = pd.concat([frame] * repeats, ignore_index=True).iloc[:patients].copy()
    stacked["patient_id"] = [f"P{i:07d}" for i in range(len(stacked))]
    return stacked


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--cohort", type=Path, default=DEFAULT_COHORT)
    args = parser.parse_args(argv)
    export = large_export(args.patients, args.cohort)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "patients.csv"
        export.to_csv(path, index=False)
        load_before = os.getloadavg()
        start = time.perf_counter()
        loaded = load_contract_csv(path)
        whole = time.perf_counter() - start
        cells = read_csv_cells(path)
        start = time.perf_counter()
        check_frame(cells, path)
        check = time.perf_counter() - start
        load_after = os.getloadavg()
    print(f"{len(loaded)} patients, {len(export.columns)} columns")
    print(f"read + map + validate (load_contract_csv): {whole:.2f} s")
    print(f"dictionary check alone (check_frame, pandera): {check:.2f} s")
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} (1 min); "
          f"{os.cpu_count()} CPUs; a shared machine's timing")


if __name__ == "__main__":
    main()
