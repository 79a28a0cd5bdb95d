"""Fed-TCGA-BRCA as six OncoFed site folders, written from FLamby's shipped files (brca.csv, train_test_split.csv):

    python -m simulations.datasets.fed_tcga_brca.make_sites [OUT]     # default: simulations/datasets/fed_tcga_brca

writes OUT/dictionary.yaml (the consortium's data dictionary: OS only, one clinical block) and
OUT/sites/center_<k>/ with site.toml (mapping of FLamby's column names and codes to the dictionary), patients.csv
(the center's train_k and test_k patients in FLamby's own columns, the two treatment one-hots folded into one
`treatment_or_therapy` column and the TCGA project code added) and test_patients.csv (FLamby's test_k patients: the
site's fixed test set). Every file's sha256 is checked first; the output is byte-for-byte the same at every run.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

import pandas as pd
import yaml

HERE = Path(__file__).resolve().parent
# sha256 of the files as published by FLamby (commit edacf54d5211520583b0133d55ac39b6fda8324b); see PROVENANCE.md
CHECKSUMS: dict[str, str] = {
    "brca.csv": "07cb53423f7d579d33cfdbf2cba57b2aee75318b85866c68ce39a75b1f1ba020",
    "train_test_split.csv": "1249c6543a4060ff0fdaf8510fc37017755836db6c9fc5e6af96057c36510990",
}
REGIONS: tuple[str, ...] = ("Northeast", "South", "West", "Midwest", "Europe", "Canada")  # center 0..5
TREATMENT_COLUMNS = {"treatment_or_therapy_yes": "yes", "treatment_or_therapy_not reported": "not reported"}
TREATMENT_CODES = {"yes": "THERAPY_YES", "no": "THERAPY_NO", "not reported": "THERAPY_NOT_REPORTED"}
SITE_COLUMNS = {"pid": "patient_id", "age_at_index": "age_years", "project_id": "cancer_type",
                "treatment_or_therapy": "regimen", "T": "os_days", "E": "os_event"}


class DataIntegrityError(RuntimeError):
    """A shipped file differs from the published one; the site folders must not be built from it."""


def verify_checksums(data_dir: Path = HERE) -> None:
    problems = []
    for name, expected in CHECKSUMS.items():
        path = data_dir / name
        actual = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        if actual != expected:
            problems.append(f"{path}: " + ("missing" if actual is None else f"sha256 {actual[:12]}… differs from the "
                                                                            f"published {expected[:12]}…"))
    if problems:
        raise DataIntegrityError("Fed-TCGA-BRCA files do not match FLamby's published data:\n  " + "\n  ".join(problems)
                                 + "\nRestore them from the repository (provenance in PROVENANCE.md).")


def field_name(column: str) -> str:
    """A FLamby one-hot column as a dictionary field name: `ajcc_pathologic_n_N0 (i-)` -> `ajcc_pathologic_n_n0_i`."""
    return re.sub(r"[^a-z0-9]+", "_", column.lower()).strip("_")


def indicator_columns(brca: pd.DataFrame) -> list[str]:
    return [c for c in brca.columns if c not in ("pid", "age_at_index", "E", "T", *TREATMENT_COLUMNS)]


def dictionary(indicators: list[str]) -> dict:
    """OS only; one clinical block (age, 36 of FLamby's one-hot indicators); treatment = GDC treatment_or_therapy."""
    fields = [{"name": "patient_id", "type": "string", "modality": "identifier",
               "constraints": {"required": True, "unique": True}},
              {"name": "age_years", "type": "integer", "modality": "clinical", "unit": "years",
               "constraints": {"required": True, "minimum": 18, "maximum": 110}},
              {"name": "cancer_type", "type": "string", "modality": "clinical", "vocabulary": "cancer_types",
               "constraints": {"required": True}}]
    fields += [{"name": field_name(c), "type": "boolean", "modality": "clinical", "description": f"FLamby: {c}"}
               for c in indicators]
    fields += [{"name": "regimen", "type": "string", "modality": "treatment", "vocabulary": "treatments",
                "constraints": {"required": True}},
               {"name": "os_days", "type": "number", "modality": "outcome", "unit": "days",
                "constraints": {"minimum": 0}},
               {"name": "os_event", "type": "boolean", "modality": "outcome"}]
    treatments = [{"code": TREATMENT_CODES["yes"], "name": "Treatment or therapy given (agents not in the export)",
                   "cancer_types": ["breast"]},
                  {"code": TREATMENT_CODES["no"], "name": "No treatment or therapy recorded", "cancer_types": ["breast"]},
                  {"code": TREATMENT_CODES["not reported"], "name": "Treatment or therapy not reported",
                   "cancer_types": ["breast"]}]
    return {"name": "fed-tcga-brca", "version": "1.0.0",
            "title": "Fed-TCGA-BRCA (FLamby): TCGA breast cancer clinical data, overall survival",
            "endpoints": ["os"],
            "cancer_types": [{"code": "breast", "histologies": ["breast_carcinoma"]}],
            "treatments": treatments, "modalities": ["clinical"],
            "schema": {"primaryKey": "patient_id", "missingValues": [""], "fields": fields}}


def site_toml(center: int, indicators: list[str]) -> str:
    columns = {**SITE_COLUMNS, **{c: field_name(c) for c in indicators}}
    lines = [f"# FLamby's center {center} ({REGIONS[center]}); written by simulations/datasets/fed_tcga_brca/make_sites.py",
             f'site_id = "center_{center}"', f'display_name = "Fed-TCGA-BRCA center {center} ({REGIONS[center]})"',
             "target_epsilon = 3.0", 'dictionary = "../../dictionary.yaml"', 'state_dir = "state"',
             'test_patients = "test_patients.csv"  # FLamby\'s test_' + f'{center}: the fixed held-out set',
             "# public, de-identified benchmark data whose per-center test C-indices FLamby publishes (test sets hold",
             "# 1 to 14 deaths): no count is suppressed, so every center's figure can be compared",
             "min_cell_size = 1", "",
             "[data]", 'path = "patients.csv"', "", "[mapping.columns]"]
    lines += [f'{_quoted(site)} = "{target}"' for site, target in columns.items()]
    lines += ["", "[mapping.codes.cancer_type]", '"TCGA-BRCA" = "breast"', "", "[mapping.codes.regimen]"]
    lines += [f'{_quoted(site)} = "{code}"' for site, code in TREATMENT_CODES.items()]
    return "\n".join(lines) + "\n"


def _quoted(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else '"' + key.replace('"', '\\"') + '"'


def write_sites(out: Path, data_dir: Path = HERE) -> list[Path]:
    verify_checksums(data_dir)
    brca = pd.read_csv(data_dir / "brca.csv")
    split = pd.read_csv(data_dir / "train_test_split.csv")
    indicators = indicator_columns(brca)
    treatment = pd.Series("no", index=brca.index)
    for column, value in TREATMENT_COLUMNS.items():
        treatment[brca[column] == 1] = value
    export = brca.drop(columns=list(TREATMENT_COLUMNS)).assign(treatment_or_therapy=treatment, project_id="TCGA-BRCA")
    export = export[["pid", "project_id", "age_at_index", *indicators, "treatment_or_therapy", "E", "T"]]
    export["E"] = export["E"].astype(int)
    merged = export.merge(split[["pid", "fold2"]], on="pid", how="inner", validate="one_to_one")
    out.mkdir(parents=True, exist_ok=True)
    (out / "dictionary.yaml").write_text(
        "# The Fed-TCGA-BRCA consortium's data dictionary; written by simulations/datasets/fed_tcga_brca/make_sites.py\n"
        + yaml.safe_dump(dictionary(indicators), sort_keys=False, width=120), encoding="utf-8")
    folders = []
    for center in range(len(REGIONS)):
        folder = out / "sites" / f"center_{center}"
        folder.mkdir(parents=True, exist_ok=True)
        rows = merged[merged["fold2"].isin([f"train_{center}", f"test_{center}"])]
        rows.drop(columns="fold2").to_csv(folder / "patients.csv", index=False, lineterminator="\n")
        rows.loc[rows["fold2"] == f"test_{center}", ["pid"]].rename(columns={"pid": "patient_id"}).to_csv(
            folder / "test_patients.csv", index=False, lineterminator="\n")
        (folder / "site.toml").write_text(site_toml(center, indicators), encoding="utf-8")
        folders.append(folder)
    return folders


if __name__ == "__main__":
    written = write_sites(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
    print("wrote " + ", ".join(str(f) for f in written))
