"""The site-side data check: `oncofed-check-site --site-config site.toml [--dictionary consortium.yaml]
[--json summary.json]`.

A data steward runs this before the site joins a training run. It loads the site's data exactly as training
will (client.data.loader), lists every violation (file or table, row, column, rule), and otherwise prints a
summary: cohort size, modalities present, missingness per column and outcome counts. Counts between 1 and
min_cell_size - 1 are shown as "<min_cell_size", so the summary can be shown around the hospital; it is
not an outgoing message (a suppressed cell can still be recovered from a total by difference).
With --dictionary, the consortium's data dictionary file must have the same content hash as the site's own
copy (what a run would check, client/governance/dictionary_check.py), and the export is validated against it.

Exit status: 0 usable, 1 the data breaks the contract, 2 the site config or the dictionary is unusable. On 1 and 2 the
--json file is not written; when written, it appears whole (temporary file, then rename).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from client.data.loader import load_site_frame
from client.governance.dictionary_check import site_dictionary
from shared.atomic import write_atomically
from shared.contract import CONTRACT_COLUMNS, MODALITY_FIELDS, DataContractError, check_frame
from shared.dictionary import DataDictionary, DictionaryError, load_dictionary
from shared.site_config import SiteConfig, SiteConfigError

EXIT_USABLE, EXIT_VIOLATIONS, EXIT_BAD_CONFIG = 0, 1, 2

Count = int | str  # a count, or "<10" when it is too small to show


class SiteCheckSummary(BaseModel):
    """What the check reports about a usable site; aggregates only, small counts suppressed."""

    site_id: str
    display_name: str
    source: str
    min_cell_size: int
    cohort_size: Count
    modalities_present: dict[str, Count]  # patients with at least one value of the modality
    modalities_absent: list[str]
    missing: dict[str, Count]  # per contract column, patients without a value
    missing_percent: dict[str, float | None]  # None where the count is suppressed
    best_response: dict[str, Count] | None  # CR, PR, SD, PD, missing; None: not an endpoint of the dictionary
    pfs: dict[str, Count] | None  # events, censored, missing
    os: dict[str, Count] | None
    dictionary: str = ""  # name and version of the data dictionary the data was checked against
    dictionary_sha256: str = ""


def suppress(count: int, min_cell_size: int) -> Count:
    """A count as it may be shown: 0, at least min_cell_size, or "<min_cell_size"."""
    return f"<{min_cell_size}" if 0 < count < min_cell_size else int(count)


def summarise(frame: pd.DataFrame, config: SiteConfig,
              endpoints: tuple[str, ...] = ("response", "pfs", "os")) -> SiteCheckSummary:
    """The check's summary of a validated contract frame, for the endpoints its dictionary declares."""
    k = config.min_cell_size
    n = len(frame)
    present = {modality: suppress(int(frame[list(fields)].notna().any(axis=1).sum()), k)
               for modality, fields in MODALITY_FIELDS.items()}
    missing_counts = {column: int(frame[column].isna().sum()) for column in CONTRACT_COLUMNS}
    missing = {column: suppress(count, k) for column, count in missing_counts.items()}
    missing_percent = {column: (round(100.0 * count / n, 1) if isinstance(missing[column], int) else None)
                       for column, count in missing_counts.items()}
    best_response: dict[str, Count] | None = None
    if "response" in endpoints:
        responses = frame["best_response"].value_counts()
        best_response = {code: suppress(int(responses.get(code, 0)), k) for code in ("CR", "PR", "SD", "PD")}
        best_response["missing"] = suppress(int(frame["best_response"].isna().sum()), k)

    def endpoint(name: str) -> dict[str, Count] | None:
        if name not in endpoints:
            return None
        event = frame[f"{name}_event"]
        return {"events": suppress(int((event == 1.0).sum()), k), "censored": suppress(int((event == 0.0).sum()), k),
                "missing": suppress(int(event.isna().sum()), k)}

    return SiteCheckSummary(site_id=config.site_id, display_name=config.display_name,
                            source=config.data.describe(), min_cell_size=k, cohort_size=suppress(n, k),
                            modalities_present=present, modalities_absent=list(config.modalities_absent),
                            missing=missing, missing_percent=missing_percent,
                            best_response=best_response,
                            pfs=endpoint("pfs"), os=endpoint("os"))


def format_summary(summary: SiteCheckSummary) -> str:
    """The summary as a few lines a steward reads in a terminal."""
    def listing(counts: dict[str, Count]) -> str:
        return ", ".join(f"{key} {value}" for key, value in counts.items())

    modalities = ", ".join(f"{m} {c}" + (" (declared absent)" if m in summary.modalities_absent else "")
                           for m, c in summary.modalities_present.items())
    lines = [f"Site {summary.site_id} ({summary.display_name}) - {summary.source}",
             f"Cohort: {summary.cohort_size} patients",
             f"Modalities present (patients): {modalities}",
             "Missing values per column (patients):"]
    for column, count in summary.missing.items():
        percent = summary.missing_percent[column]
        lines.append(f"  {column:<18} {count}" + (f" ({percent:g}%)" if percent is not None else ""))
    lines += [f"Data dictionary: {summary.dictionary} (sha256 {summary.dictionary_sha256})",
              *(f"{title}: {listing(counts)}" for title, counts in (("Best response", summary.best_response),
                                                                     ("PFS", summary.pfs), ("OS", summary.os))
                if counts is not None),
              f"Counts below {summary.min_cell_size} are shown as <{summary.min_cell_size}.",
              "Usable: yes"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="oncofed-check-site",
                                     description="Check a site's data against the OncoFed data contract.")
    parser.add_argument("--site-config", required=True, type=Path, help="the site's TOML or JSON config")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT",
                        help="also write the summary as JSON (only when the data is usable)")
    parser.add_argument("--dictionary", type=Path, default=None, metavar="FILE",
                        help="the consortium's data dictionary (YAML/JSON) to check against; the site's own copy "
                             "(`dictionary` in its config, else the app's default) must have the same content hash")
    parser.add_argument("--fingerprint", action="store_true",
                        help="also print the data fingerprint this site sends with its feature statistics (a keyed "
                             "hash; compare it with a model card's to see which version of the data trained it)")
    args = parser.parse_args(argv)

    try:
        config = SiteConfig.from_file(args.site_config)
    except SiteConfigError as error:
        print(error, file=sys.stderr)
        print("Usable: no (fix the site config)", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        dictionary = _agreed_dictionary(config, args.dictionary)
    except DictionaryError as error:
        print(error, file=sys.stderr)
        print("Usable: no (fix the data dictionary or the site config)", file=sys.stderr)
        return EXIT_BAD_CONFIG
    try:
        frame = load_site_frame(config)
        unused = [c for c in frame.columns if c not in dictionary.columns and frame[c].isna().all()]
        check_frame(frame.drop(columns=unused), config.data.describe(), dictionary)
    except DataContractError as error:
        print(f"{len(error.violations)} data-contract violation(s) in {config.data.describe()}:", file=sys.stderr)
        for violation in error.violations:
            print(f"  {violation}", file=sys.stderr)
        print("Usable: no. Fix the source data or the site's mapping, then run the check again.", file=sys.stderr)
        return EXIT_VIOLATIONS

    summary = summarise(frame, config, dictionary.endpoints).model_copy(update={
        "dictionary": f"{dictionary.name} {dictionary.version}", "dictionary_sha256": dictionary.content_sha256()})
    print(format_summary(summary))
    if args.fingerprint:
        from client.data.fingerprint import data_fingerprint  # its key lives in the site's state dir

        print(f"Data fingerprint (keyed with {config.state_dir}/fingerprint.key): "
              f"{data_fingerprint(frame, config.state_dir)}")
    if args.json is not None:
        write_atomically(args.json, json.dumps(summary.model_dump(mode="json"), indent=2) + "\n", mode=0o600)
        print(f"Summary written to {args.json}")
    return EXIT_USABLE


def _agreed_dictionary(config: SiteConfig, consortium_file: Path | None) -> DataDictionary:
    """The site's copy of the dictionary, refused (DictionaryError) when it differs from the consortium's file."""
    local = site_dictionary(config)
    if consortium_file is None:
        return local
    consortium = load_dictionary(consortium_file)
    if consortium.content_sha256() != local.content_sha256():
        copy = str(config.dictionary) if config.dictionary is not None else "the app's default dictionary"
        raise DictionaryError(
            f"the consortium's dictionary {consortium_file} (sha256 {consortium.content_sha256()}) differs from "
            f"this site's copy, {copy} (sha256 {local.content_sha256()}); a run of the consortium would be refused. "
            f"Point `dictionary` in the site config at the consortium's file (or update the copy), then check again")
    return consortium


if __name__ == "__main__":
    sys.exit(main())
