"""Fed-TCGA-BRCA (FLamby): six regional centers of real TCGA breast-cancer survival data, split exactly as FLamby.

The data is survival-only (age + 38 one-hot clinical columns, death flag `E`, time `T` in days), with no
regimen or response, so it cannot be an oncology contract table (shared/contract.py). It enters through the
same door as a site's CSV instead: `client.data.loader.read_csv_cells` (encoding and header checks), then a
pydantic contract for this dataset's columns, and every problem comes back as one `DataContractError`
listing `Violation`s, as for any site. Every file is checked against its sha256 first: a benchmark on
altered data must not run.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from client.data.loader import read_csv_cells
from shared.contract import DataContractError, Violation

DATA_DIR = Path(__file__).resolve().parent

# sha256 of the files as published by FLamby (commit edacf54d5211520583b0133d55ac39b6fda8324b); see PROVENANCE.md
CHECKSUMS: dict[str, str] = {
    "brca.csv": "07cb53423f7d579d33cfdbf2cba57b2aee75318b85866c68ce39a75b1f1ba020",
    "train_test_split.csv": "1249c6543a4060ff0fdaf8510fc37017755836db6c9fc5e6af96057c36510990",
    "centers.csv": "d610df2dae0203ea229c9579747ed3eb8d28e137c5378f55acc6fe6b4632bb1d",
}

REGIONS: tuple[str, ...] = ("Northeast", "South", "West", "Midwest", "Europe", "Canada")  # center 0..5
AGE_COLUMN = "age_at_index"
ONE_HOT_COLUMNS: tuple[str, ...] = (
    "ethnicity_not hispanic or latino", "ethnicity_not reported", "race_asian", "race_black or african american",
    "race_not reported", "race_white", "ajcc_pathologic_m_MX", "ajcc_pathologic_n_N0 (i-)",
    "ajcc_pathologic_n_N1", "ajcc_pathologic_n_N1a", "ajcc_pathologic_n_N2", "ajcc_pathologic_n_N2a",
    "ajcc_pathologic_stage_Stage IA", "ajcc_pathologic_stage_Stage IIA", "ajcc_pathologic_stage_Stage IIB",
    "ajcc_pathologic_stage_Stage IIIA", "ajcc_pathologic_stage_Stage IIIC", "ajcc_pathologic_t_T1c",
    "ajcc_pathologic_t_T2", "ajcc_pathologic_t_T3", "ajcc_staging_system_edition_5th",
    "ajcc_staging_system_edition_6th", "ajcc_staging_system_edition_7th", "icd_10_code_C50.9",
    "morphology_8500/3", "morphology_8520/3", "primary_diagnosis_Infiltrating duct carcinoma, NOS",
    "primary_diagnosis_Lobular carcinoma, NOS", "prior_malignancy_yes", "synchronous_malignancy_Not Reported",
    "treatment_or_therapy_not reported", "treatment_or_therapy_yes", "tumor_stage_stage i",
    "tumor_stage_stage ia", "tumor_stage_stage iia", "tumor_stage_stage iib", "tumor_stage_stage iiia",
    "tumor_stage_stage iiic",
)
FEATURE_COLUMNS: tuple[str, ...] = (AGE_COLUMN, *ONE_HOT_COLUMNS)
BRCA_COLUMNS: tuple[str, ...] = ("pid", *FEATURE_COLUMNS, "E", "T")
AGE_SCALE = 100.0  # fixed, data-independent scale: no site has to share an age statistic

_FOLD = re.compile(r"^(train|test)_([0-5])$")


class DataIntegrityError(RuntimeError):
    """A dataset file differs from the published one; the benchmark must not run on it."""


Flag = Annotated[int, Field(ge=0, le=1)]


class BrcaPatient(BaseModel):
    """One row of brca.csv: the contract of this dataset (FLamby's preprocessing)."""

    model_config = ConfigDict(extra="forbid")

    pid: str = Field(pattern=r"^TCGA-[A-Z0-9]{2}-[A-Z0-9]{4}$")
    age_at_index: int = Field(ge=18, le=110)
    indicators: dict[str, Flag]
    E: float = Field(description="1.0 = death observed, 0.0 = censored")
    T: float = Field(ge=0, le=40_000, description="days from diagnosis to death or last contact")

    def model_post_init(self, _context: object) -> None:
        if self.E not in (0.0, 1.0):
            raise ValueError(f"E must be 0 or 1, got {self.E}")


class SplitRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pid: str = Field(min_length=1)
    fold: str = Field(pattern=r"^(train|test)$")
    fold2: str = Field(pattern=_FOLD.pattern)


@dataclass(frozen=True)
class CenterData:
    """One center's train and test patients (FLamby's split, untouched)."""

    center: int
    region: str
    train: pd.DataFrame
    test: pd.DataFrame


@dataclass(frozen=True)
class SurvivalArrays:
    """What a model sees: features (n, 39) as float32, death flag (n,) bool, time (n,) days."""

    features: np.ndarray
    event: np.ndarray
    time: np.ndarray

    def __len__(self) -> int:
        return int(self.time.shape[0])


def arrays_of(frame: pd.DataFrame) -> SurvivalArrays:
    features = frame[list(FEATURE_COLUMNS)].to_numpy(dtype=np.float32).copy()
    features[:, 0] /= AGE_SCALE
    return SurvivalArrays(features=features, event=frame["E"].to_numpy() > 0.5,
                          time=frame["T"].to_numpy(dtype=np.float64))


def verify_checksums(data_dir: Path = DATA_DIR, checksums: Mapping[str, str] = CHECKSUMS) -> None:
    """Raise DataIntegrityError naming every file that is missing or whose sha256 differs from the published one."""
    problems = []
    for name, expected in checksums.items():
        path = data_dir / name
        if not path.exists():
            problems.append(f"{path}: missing")
            continue
        actual = hashlib.sha256(path.read_bytes()).hexdigest()
        if actual != expected:
            problems.append(f"{path}: sha256 {actual[:12]}… differs from the published {expected[:12]}…")
    if problems:
        raise DataIntegrityError("Fed-TCGA-BRCA files do not match FLamby's published data:\n  "
                                 + "\n  ".join(problems)
                                 + "\nRestore them from simulations/datasets/fed_tcga_brca in the repository "
                                   "(provenance in PROVENANCE.md); results on altered data are not comparable.")


def _validated_patients(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    violations = [Violation(source=source, row=None, column=c, rule="required column is missing")
                  for c in BRCA_COLUMNS if c not in raw.columns]
    violations += [Violation(source=source, row=None, column=c, rule="unexpected column (not in FLamby's 39 "
                             "features)") for c in raw.columns if c not in BRCA_COLUMNS]
    if violations:
        raise DataContractError(violations)
    for row, cells in enumerate(raw.to_dict(orient="records"), start=1):
        record = {"pid": cells["pid"], "age_at_index": cells[AGE_COLUMN], "E": cells["E"], "T": cells["T"],
                  "indicators": {c: cells[c] for c in ONE_HOT_COLUMNS}}
        try:
            BrcaPatient.model_validate(record)
        except ValidationError as error:
            for item in error.errors():
                loc = [str(p) for p in item["loc"]]
                column = loc[-1] if loc[0] == "indicators" else loc[0] if loc else None
                violations.append(Violation(source=source, row=row, column=column,
                                            rule=f"{item['msg'].removeprefix('Value error, ')} "
                                                 f"(got {item['input']!r})"))
    duplicated = raw["pid"][raw["pid"].duplicated()].unique()
    violations += [Violation(source=source, row=None, column="pid", rule=f"patient {p} appears more than once")
                   for p in duplicated]
    if violations:
        raise DataContractError(violations)
    frame = raw.copy()
    for column in FEATURE_COLUMNS:
        frame[column] = frame[column].astype(np.int64)
    frame["E"] = frame["E"].astype(np.float64)
    frame["T"] = frame["T"].astype(np.float64)
    return frame


def _validated_split(raw: pd.DataFrame, patients: pd.DataFrame, source: str) -> pd.DataFrame:
    violations = []
    for row, cells in enumerate(raw.to_dict(orient="records"), start=1):
        try:
            split = SplitRow.model_validate(cells)
        except ValidationError as error:
            violations += [Violation(source=source, row=row, column=".".join(map(str, item["loc"])) or None,
                                     rule=f"{item['msg']} (got {item['input']!r})") for item in error.errors()]
            continue
        if not split.fold2.startswith(split.fold):
            violations.append(Violation(source=source, row=row, column="fold2",
                                        rule=f"'{split.fold2}' disagrees with fold '{split.fold}'"))
    known = set(patients["pid"])
    violations += [Violation(source=source, row=None, column="pid", rule=f"patient {p} is not in brca.csv")
                   for p in raw["pid"] if p not in known]
    violations += [Violation(source=source, row=None, column="pid", rule=f"patient {p} is in the split twice")
                   for p in raw["pid"][raw["pid"].duplicated()].unique()]
    if violations:
        raise DataContractError(violations)
    return raw


def load_centers(data_dir: Path = DATA_DIR, checksums: Mapping[str, str] = CHECKSUMS) -> list[CenterData]:
    """The six centers, each with FLamby's train_k/test_k patients (866/222 in all), after integrity checks.

    `checksums` is the published one; only tests of the contract pass their own files' sums.
    """
    verify_checksums(data_dir, checksums)
    patients = _validated_patients(read_csv_cells(data_dir / "brca.csv"), str(data_dir / "brca.csv"))
    split_path = data_dir / "train_test_split.csv"
    split = _validated_split(read_csv_cells(split_path), patients, str(split_path))
    merged = patients.merge(split[["pid", "fold2"]], on="pid", how="inner", validate="one_to_one")
    centers = []
    for center, region in enumerate(REGIONS):
        part = {kind: merged[merged["fold2"] == f"{kind}_{center}"].drop(columns="fold2").reset_index(drop=True)
                for kind in ("train", "test")}
        centers.append(CenterData(center=center, region=region, train=part["train"], test=part["test"]))
    return centers
