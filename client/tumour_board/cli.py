"""`oncofed-tumour-board`: compare regimens for patients at the site (`compare`), or serve the page (`serve`).

Both run where the patient data is; the page listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from client.tumour_board.run_bundle import RunNotUsable, load_run
from client.tumour_board.board import (
    ASSOCIATIONAL_NOTICE,
    PatientComparison,
    PatientInputError,
    compare_frame,
    open_board_site,
    read_patients,
)
from shared.config import ConfigError
from shared.contract import DataContractError
from shared.atomic import write_atomically


def _days(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.0f}"


def _median(prediction, horizon: int) -> str:  # noqa: ANN001 - SurvivalPrediction
    median = prediction.median_days
    if median.value is None:
        return f"> {horizon} (not reached)"
    upper = f"> {horizon}" if median.upper is None else f"{median.upper:.0f}"
    return f"{median.value:.0f} ({_days(median.lower)}–{upper})"


def comparison_table(comparison: PatientComparison) -> Table:
    """One row per candidate regimen: response, medians with the ensemble range, top drivers."""
    table = Table(title=f"Patient {comparison.patient_id} ({comparison.cancer_type}) — run {comparison.run}, "
                        f"{len(comparison.ensemble)} ensemble members", show_lines=True)
    for column in ("regimen", "response prob (range)", "median PFS days (range)", "median OS days (range)",
                   "top drivers of response"):
        table.add_column(column, justify="left" if column in ("regimen", "top drivers of response") else "right")
    for row in comparison.regimens:
        probability = row.response_probability
        drivers = "\n".join(f"{d.field}={d.patient_value} {d.shap:+.3f}" for d in row.drivers["response"][:3])
        table.add_row(row.regimen + (" (given)" if row.given_in_record else ""),
                      f"{probability.value:.2f} ({probability.lower:.2f}–{probability.upper:.2f})",
                      _median(row.pfs, comparison.horizon_days), _median(row.os, comparison.horizon_days), drivers)
    return table


def print_comparison(console: Console, comparison: PatientComparison) -> None:
    console.print(comparison_table(comparison))
    console.print(comparison.range_note, style="dim")
    if comparison.out_of_distribution:
        flags = Table(title="Outside the training distribution (predictions extrapolate here)")
        for column in ("field", "value", "flag", "how far"):
            flags.add_column(column)
        for flag in comparison.out_of_distribution:
            flags.add_row(flag.field, flag.value, flag.kind, flag.detail)
        console.print(flags)
    else:
        console.print("Inputs within the consortium's training distribution (no field flagged).")
    subgroups = Table(title="How the model did on this patient's subgroups (validation, 95% intervals)")
    for column in ("source", "subgroup", "n", "response AUC", "PFS C-index", "OS C-index"):
        subgroups.add_column(column)
    for row in comparison.subgroup_performance:
        subgroups.add_row(row.source, f"{row.group}: {row.level}", "—" if row.n is None else str(row.n),
                          row.response_auc, row.pfs_cindex, row.os_cindex)
    console.print(subgroups)
    console.print(f"[yellow]{ASSOCIATIONAL_NOTICE}[/yellow]")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="the run directory (runs/<run-name>)")
    parser.add_argument("--site", help="simulated site name (a folder of the run's cohort)")
    parser.add_argument("--site-config", help="a deployed site's site.toml")
    parser.add_argument("--ensemble-rounds", type=int, default=5,
                        help="global models of the run's last N rounds in the ensemble (default 5)")
    parser.add_argument("--extra-run", action="append", default=[], metavar="RUN_DIR",
                        help="final model of a federation of the same configuration with another seed; repeatable")
    parser.add_argument("--top-k", type=int, default=5, help="SHAP drivers per output (default 5)")
    parser.add_argument("--shap-samples", type=int, default=100, help="expected-gradients samples (default 100)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oncofed-tumour-board", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    compare = commands.add_parser("compare", help="compare every regimen for one patient (JSON) or a CSV")
    _common(compare)
    compare.add_argument("patients", help="patient JSON (object or list of objects) or CSV of contract rows")
    compare.add_argument("--json", dest="json_out", metavar="PATH", help="also write the comparison as JSON here")
    compare.add_argument("--format", choices=("table", "json"), default="table",
                         help="terminal output: rich tables (default) or JSON")
    serve = commands.add_parser("serve", help="serve the tumour-board page on 127.0.0.1")
    _common(serve)
    serve.add_argument("--patients", required=True, help="CSV (or JSON) of the patients to choose from")
    serve.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    to_stderr = args.command == "compare" and args.format == "json"
    console = Console(stderr=to_stderr, width=None if (sys.stderr if to_stderr else sys.stdout).isatty() else 150)
    try:
        bundle = load_run(args.run, args.ensemble_rounds, tuple(args.extra_run))
        site = open_board_site(bundle, args.site, args.site_config)
        patients = read_patients(args.patients)
    except (DataContractError, PatientInputError, RunNotUsable, ConfigError) as error:
        console.print(str(error), style="red", markup=False, highlight=False)
        return 2
    if args.command == "serve":
        from client.tumour_board.web import serve as serve_page

        serve_page(bundle, site, patients, port=args.port, top_k=args.top_k, shap_samples=args.shap_samples)
        return 0
    comparisons = compare_frame(bundle, site, patients, top_k=args.top_k, shap_samples=args.shap_samples)
    payload = json.dumps([c.model_dump(mode="json") for c in comparisons], indent=1)
    if args.json_out:
        write_atomically(Path(args.json_out), payload)
    if args.format == "json":
        sys.stdout.write(payload + "\n")
    else:
        for comparison in comparisons:
            print_comparison(console, comparison)
        if args.json_out:
            console.print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
