"""`oncofed-cohort`: generate the default synthetic consortium into a folder and print what was made."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from simulations.cohort.config import default_consortium
from simulations.cohort.generator import Consortium, generate_consortium
from simulations.cohort.io import GROUND_TRUTH_DIR, write_consortium


def summary_table(consortium: Consortium) -> Table:
    """One row per site: size, case mix, recorded modalities, responders and events."""
    table = Table(title=f"Synthetic consortium (seed {consortium.config.seed})")
    table.add_column("site", no_wrap=True)
    for heading in ("patients", "breast", "nsclc", "colorectal", "ovarian", "PET/CT", "panel", "responders",
                    "PFS events", "OS events"):
        table.add_column(heading, justify="right", min_width=len(heading))
    for cohort in consortium.sites:
        patients, profile = cohort.patients, cohort.profile
        counts = patients["cancer_type"].value_counts()
        evaluable = patients["best_response"].dropna()
        table.add_row(
            profile.site_id, f"{len(patients):,}",
            *(f"{int(counts.get(c, 0)):,}" for c in ("breast", "nsclc", "colorectal", "ovarian")),
            "yes" if profile.has_pet_ct else "no", "yes" if profile.has_genomic_panel else "no",
            f"{evaluable.isin(['CR', 'PR']).mean():.0%}" if len(evaluable) else "-",
            f"{int(patients['pfs_event'].sum()):,}", f"{int(patients['os_event'].sum()):,}")
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="oncofed-cohort",
        description="Generate the synthetic multi-site oncology cohort (one folder per site, ground truth apart).")
    parser.add_argument("--out", type=Path, required=True, help="output folder (replaced if it holds a cohort)")
    parser.add_argument("--seed", type=int, default=20240611, help="same seed, byte-identical files")
    parser.add_argument("--patients", type=int, default=None,
                        help="total patients; scales the default sites proportionally (default 4,650)")
    args = parser.parse_args(argv)
    console = Console(width=None if Console().is_terminal else 140)
    started = time.perf_counter()
    config = default_consortium(total_patients=args.patients, seed=args.seed)
    consortium = generate_consortium(config)
    out = write_consortium(consortium, args.out)
    console.print(summary_table(consortium))
    console.print(f"Wrote {config.n_patients:,} patients in {len(config.sites)} site folders under {out} "
                  f"({time.perf_counter() - started:.1f} s). Ground truth: {out / GROUND_TRUTH_DIR} "
                  f"(never hand it to a site).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
