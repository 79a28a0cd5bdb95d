"""Write the consortium to disk the way hospitals would hold it, with the ground truth kept apart.

Layout (deterministic: same seed, byte-identical files):
    out_dir/<site_id>/patients.csv      the site's records (contract columns unless the site has its own coding)
    out_dir/<site_id>/site.json         site id, name, counts, which modalities the site records
    out_dir/_ground_truth/config.json   the resolved CohortConfig
    out_dir/_ground_truth/<site_id>/regimen_truth.csv      one row per patient x candidate regimen
    out_dir/_ground_truth/<site_id>/complete_patients.csv  the records before missingness and scanner factor
The ground truth never sits inside a site's folder: a site process is handed its own folder only.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from shared.contract import MODALITY_FIELDS
from simulations.cohort.config import SiteCoding
from simulations.cohort.generator import BOOLEAN_COLUMNS, Consortium, SiteCohort

GROUND_TRUTH_DIR = "_ground_truth"
_TRUTH_BOOLEANS = ("given", "pfs_event", "os_event")


def export_site_frame(patients: pd.DataFrame, coding: SiteCoding) -> pd.DataFrame:
    """The site's export of its contract-shaped records: its own column names, units and boolean codes."""
    frame = patients.copy()
    true_code, false_code = coding.boolean_codes
    for column in BOOLEAN_COLUMNS:
        values = frame[column].astype("boolean")
        frame[column] = values.map({True: true_code, False: false_code}, na_action="ignore").astype("string")
    if coding.tumour_size_unit == "cm":
        frame["tumour_size_mm"] = (frame["tumour_size_mm"] / 10).round(2)
    return frame.rename(columns=coding.column_names)


def site_summary(cohort: SiteCohort) -> dict[str, object]:
    """What site.json says: who the site is, how many patients, and which modalities it records."""
    profile, patients = cohort.profile, cohort.patients
    present = {modality: int(patients[list(fields)].notna().any(axis=1).sum())
               for modality, fields in MODALITY_FIELDS.items()}
    return {
        "site_id": profile.site_id,
        "display_name": profile.display_name,
        "n_patients": len(patients),
        "cancer_types": {k: int(v) for k, v in patients["cancer_type"].value_counts().sort_index().items()},
        "regimens": {k: int(v) for k, v in patients["regimen"].value_counts().sort_index().items()},
        "modalities": {
            "clinical": True,
            "pathology": True,
            "imaging": profile.has_imaging,
            "pet_ct": profile.has_pet_ct,
            "genomic": profile.has_genomic_panel,
        },
        "patients_with_modality": present,
        "columns": "contract" if profile.coding.is_contract else "site-specific (needs a mapping to the contract)",
        "outcomes": {
            "response_evaluable": int(patients["best_response"].notna().sum()),
            "pfs_events": int(patients["pfs_event"].sum()),
            "os_events": int(patients["os_event"].sum()),
        },
    }


def write_consortium(consortium: Consortium, out_dir: str | Path) -> Path:
    """Write every site's folder and the ground truth; replaces a previous cohort in `out_dir`.

    Written to a temporary sibling first and moved in place, so a failure leaves nothing half-done.
    Refuses to overwrite a non-empty folder that is not a previously generated cohort.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / GROUND_TRUTH_DIR).is_dir():
        raise FileExistsError(f"{out_dir} is not empty and holds no generated cohort; choose an empty folder")
    staging = out_dir.with_name(out_dir.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    try:
        truth_root = staging / GROUND_TRUTH_DIR
        truth_root.mkdir()
        _write_json(truth_root / "config.json", consortium.config.model_dump(mode="json"))
        for cohort in consortium.sites:
            folder = staging / cohort.site_id
            folder.mkdir()
            _write_csv(export_site_frame(cohort.patients, cohort.profile.coding), folder / "patients.csv")
            _write_json(folder / "site.json", site_summary(cohort))
            truth_folder = truth_root / cohort.site_id
            truth_folder.mkdir()
            _write_csv(_truth_for_csv(cohort.truth), truth_folder / "regimen_truth.csv", float_format="%.10g")
            _write_csv(export_site_frame(cohort.complete_patients, SiteCoding()),
                       truth_folder / "complete_patients.csv")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return out_dir


def read_ground_truth(out_dir: str | Path, site_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """The regimen truth of the listed sites (all when None), ready for oracle_predictions/oracle_metrics."""
    root = Path(out_dir) / GROUND_TRUTH_DIR
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found; generate the cohort with `oncofed-cohort --out {out_dir}`")
    folders = sorted(p for p in root.iterdir() if p.is_dir()) if site_ids is None else [root / s for s in site_ids]
    missing = [p.name for p in folders if not (p / "regimen_truth.csv").is_file()]
    if missing:
        raise FileNotFoundError(f"no ground truth for site(s) {missing} in {root}")
    frames = [pd.read_csv(p / "regimen_truth.csv", dtype={"patient_id": str, "site_id": str},
                          keep_default_na=False, na_values=[""]) for p in folders]
    truth = pd.concat(frames, ignore_index=True)
    for column in _TRUTH_BOOLEANS:
        truth[column] = truth[column].map({"true": True, "false": False, True: True, False: False}).astype("boolean")
    truth["given"] = truth["given"].astype(bool)
    return truth


def _truth_for_csv(truth: pd.DataFrame) -> pd.DataFrame:
    frame = truth.copy()
    for column in _TRUTH_BOOLEANS:
        frame[column] = frame[column].astype("boolean").map({True: "true", False: "false"}, na_action="ignore")
    return frame


def _write_csv(frame: pd.DataFrame, path: Path, float_format: str | None = None) -> None:
    frame.to_csv(path, index=False, na_rep="", lineterminator="\n", float_format=float_format)


def _write_json(path: Path, payload: object) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")

