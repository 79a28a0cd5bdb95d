"""Writes the three example sites' CSV exports of docs/onboarding.md (deterministic; the committed files are its output).

Run it from the repository root as `python examples/new-consortium/generate_exports.py [OUT]` (OUT: the sites/
folder beside it when left out). The patients are synthetic: every
field is drawn inside the dictionary's constraints (tests/dictionary_cohort.py). Each site then writes them the
way its own system does, so that its site.toml has something to map: Northfield uses the dictionary's names,
Riverside its own column names, codes and survival in months, Lakeside its own cancer codes, Breslow depth in cm
and "-99" for a value not recorded.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the repository root, for tests.dictionary_cohort

from shared.dictionary import load_dictionary  # noqa: E402
from tests.dictionary_cohort import dictionary_export  # noqa: E402

SITES = {"northfield": (260, 0), "riverside": (220, 1), "lakeside": (180, 2)}  # site: (patients, seed)

RIVERSIDE_COLUMNS = {"patient_id": "MRN", "age_years": "AGE", "cancer_type": "TUMOUR", "regimen": "TREATMENT",
                     "pfs_days": "PFS_MONTHS", "pfs_event": "PROGRESSED", "os_days": "OS_MONTHS",
                     "os_event": "DIED", "ecog": "ECOG_PS"}
RIVERSIDE_TREATMENTS = {"NONE": "observation", "RT": "radiotherapy", "NIVOLUMAB": "nivo",
                        "NIVOLUMAB-IPILIMUMAB": "nivo+ipi", "DABRAFENIB-TRAMETINIB": "dab+tram"}
LAKESIDE_CANCERS = {"prostate": "PRAD", "melanoma": "SKCM"}


def site_export(site: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The patients as this site's own system exports them."""
    frame = frame.copy()
    if site == "riverside":
        for column in ("pfs_days", "os_days"):
            frame[column] = (frame[column] / 30.4375).round(2)
        frame["regimen"] = frame["regimen"].replace(RIVERSIDE_TREATMENTS)
        frame = frame.rename(columns=RIVERSIDE_COLUMNS)
    if site == "lakeside":
        frame["cancer_type"] = frame["cancer_type"].replace(LAKESIDE_CANCERS)
        frame["breslow_mm"] = (pd.to_numeric(frame["breslow_mm"]) / 10.0).round(2)
        frame = frame.rename(columns={"breslow_mm": "breslow_cm"})
        frame = frame.astype(object).where(frame.notna(), -99)
    return frame


def main(out: Path = HERE / "sites") -> None:
    dictionary = load_dictionary(HERE / "dictionary.yaml")
    for site, (size, seed) in SITES.items():
        patients = dictionary_export(dictionary, size, seed=seed, site=site[:2])
        for spec in dictionary.table_schema.fields:  # whole numbers as a hospital system writes them
            if spec.type == "integer":
                patients[spec.name] = pd.to_numeric(patients[spec.name]).astype("Int64")
        folder = out / site
        folder.mkdir(parents=True, exist_ok=True)
        export = site_export(site, patients)
        export.to_csv(folder / "patients.csv", index=False)
        print(f"{folder / 'patients.csv'}: {len(export)} patients, {export.shape[1]} columns")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "sites")
