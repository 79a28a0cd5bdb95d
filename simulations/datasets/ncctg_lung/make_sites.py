"""NCCTG advanced lung cancer (lifelines.datasets.load_lung) as three OncoFed site folders, split by the enrolling
institution (`inst`):

    python -m simulations.datasets.ncctg_lung.make_sites [OUT]     # default: simulations/datasets/ncctg_lung

The 18 institutions (1 to 36 patients each; one patient has no institution and is left out) are too small to be
sites on their own, so they are merged into three sites, each institution whole within one site: institutions in
decreasing order of enrolment (ties by number) are dealt one at a time to the site with the fewest patients so far.
Writes OUT/dictionary.yaml (OS only, one clinical block, no treatment recorded) and OUT/sites/<site>/ with site.toml
and patients.csv in the data set's own column names and codes (the mapping in site.toml translates them). The test
set is the product's own split (test-fraction); provenance in PROVENANCE.md. Nothing is downloaded: the data ship
inside the installed lifelines package.
"""

from __future__ import annotations

import sys
from pathlib import Path

import lifelines
import pandas as pd
import yaml
from lifelines.datasets import load_lung

HERE = Path(__file__).resolve().parent
SITES = ("site_a", "site_b", "site_c")
SITE_COLUMNS = {"patient": "patient_id", "age": "age_years", "sex": "sex", "ph.ecog": "ecog",
                "ph.karno": "karnofsky_physician", "pat.karno": "karnofsky_patient", "meal.cal": "meal_calories",
                "wt.loss": "weight_loss_lb", "diagnosis": "cancer_type", "treatment": "regimen", "time": "os_days",
                "status": "os_event"}


def dictionary() -> dict:
    """OS only; one clinical block; the trial recorded no treatment, which the dictionary says as one code."""
    def number(name: str, kind: str, low: float, high: float, unit: str | None = None, indicator: bool = True) -> dict:
        spec = {"name": name, "type": kind, "modality": "clinical", "constraints": {"minimum": low, "maximum": high}}
        return spec | ({"unit": unit} if unit else {}) | ({"missingIndicator": True} if indicator else {})

    fields = [{"name": "patient_id", "type": "string", "modality": "identifier",
               "constraints": {"required": True, "unique": True}},
              number("age_years", "integer", 18, 100, "years", indicator=False) | {
                  "constraints": {"required": True, "minimum": 18, "maximum": 100}},
              {"name": "sex", "type": "string", "modality": "clinical", "constraints": {"enum": ["male", "female"]}},
              number("ecog", "integer", 0, 4),
              number("karnofsky_physician", "integer", 0, 100),
              number("karnofsky_patient", "integer", 0, 100),
              number("meal_calories", "number", 0, 5000, "kcal"),
              number("weight_loss_lb", "number", -100, 200, "lb"),
              {"name": "cancer_type", "type": "string", "modality": "clinical", "vocabulary": "cancer_types",
               "constraints": {"required": True}},
              {"name": "regimen", "type": "string", "modality": "treatment", "vocabulary": "treatments",
               "constraints": {"required": True}},
              {"name": "os_days", "type": "number", "modality": "outcome", "unit": "days", "constraints": {"minimum": 0}},
              {"name": "os_event", "type": "boolean", "modality": "outcome"}]
    return {"name": "ncctg-lung", "version": "1.0.0",
            "title": "NCCTG advanced lung cancer (Loprinzi et al. 1994), overall survival, via lifelines",
            "endpoints": ["os"],
            "cancer_types": [{"code": "lung_advanced", "histologies": ["lung_not_recorded"]}],
            "treatments": [{"code": "NOT_RECORDED", "name": "Treatment not recorded in this data set",
                            "cancer_types": ["lung_advanced"]}],
            "modalities": ["clinical"],
            "schema": {"primaryKey": "patient_id", "missingValues": ["", "NA"], "fields": fields}}


def institutions_to_sites(institutions: pd.Series) -> dict[int, str]:
    """Each institution to one of SITES: largest first, to the site with the fewest patients so far."""
    counts = institutions.value_counts()
    order = sorted(counts.index, key=lambda inst: (-counts[inst], inst))
    totals = dict.fromkeys(SITES, 0)
    assignment = {}
    for inst in order:
        site = min(SITES, key=lambda s: (totals[s], SITES.index(s)))
        assignment[int(inst)] = site
        totals[site] += int(counts[inst])
    return assignment


def site_toml(site: str, institutions: list[int]) -> str:
    lines = [f"# NCCTG lung institutions {', '.join(map(str, institutions))}; written by "
             "simulations/datasets/ncctg_lung/make_sites.py",
             f'site_id = "{site}"', f'display_name = "NCCTG lung, institutions {", ".join(map(str, institutions))}"',
             "target_epsilon = 3.0", 'dictionary = "../../dictionary.yaml"', 'state_dir = "state"',
             "# public, de-identified data of a published trial; its sites' test sets are small (about 6 censored",
             "# patients each), so no count is suppressed and every site's figure can be compared",
             "min_cell_size = 1",
             "", "[data]", 'path = "patients.csv"', "", "[mapping]", 'missing_values = ["", "NA"]',
             "ignore_columns = [\"inst\"]", "", "[mapping.columns]"]
    lines += [(f'"{c}"' if "." in c else c) + f' = "{target}"' for c, target in SITE_COLUMNS.items()]
    lines += ["", "[mapping.codes.sex]", '1 = "male"', '2 = "female"', "", "[mapping.codes.cancer_type]",
              'advanced_lung = "lung_advanced"', "", "[mapping.codes.regimen]", 'not_recorded = "NOT_RECORDED"']
    return "\n".join(lines) + "\n"


def write_sites(out: Path) -> list[Path]:
    lung = load_lung()
    lung = lung[lung["inst"].notna()].reset_index(drop=True)  # one patient has no institution
    lung.insert(0, "patient", [f"ncctg-{i:03d}" for i in range(len(lung))])
    lung["inst"] = lung["inst"].astype(int)
    lung = lung.assign(diagnosis="advanced_lung", treatment="not_recorded")
    assignment = institutions_to_sites(lung["inst"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "dictionary.yaml").write_text(
        f"# The NCCTG lung consortium's data dictionary (lifelines {lifelines.__version__}); written by "
        "simulations/datasets/ncctg_lung/make_sites.py\n" + yaml.safe_dump(dictionary(), sort_keys=False, width=120),
        encoding="utf-8")
    folders = []
    for site in SITES:
        institutions = sorted(i for i, s in assignment.items() if s == site)
        folder = out / "sites" / site
        folder.mkdir(parents=True, exist_ok=True)
        rows = lung[lung["inst"].isin(institutions)]
        columns = ["patient", "inst", *(c for c in SITE_COLUMNS if c != "patient")]
        rows[columns].to_csv(folder / "patients.csv", index=False, lineterminator="\n")
        (folder / "site.toml").write_text(site_toml(site, institutions), encoding="utf-8")
        folders.append(folder)
    return folders


if __name__ == "__main__":
    written = write_sites(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
    print("wrote " + ", ".join(f"{f} ({sum(1 for _ in open(f / 'patients.csv')) - 1} patients)" for f in written))
