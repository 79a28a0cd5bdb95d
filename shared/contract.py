"""The data contract: one patient record, its modalities, and validation with errors a data steward can act on.

A record is flat (one CSV row = one patient) so sites can export it from any system; MODALITY_FIELDS
groups the columns into the model's modalities. Any non-clinical modality may be missing (all of its
fields empty) for a patient or for a whole site.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.vocabulary import (
    ALL_HISTOLOGIES,
    HISTOLOGIES,
    REGIMEN_BY_CODE,
    BestResponse,
    CancerType,
    RaceEthnicity,
    Sex,
    StageGroup,
)

CLINICAL = ("age_years", "sex", "race_ethnicity", "ecog", "stage_group", "cancer_type", "histology",
            "charlson_index", "prior_lines")
PATHOLOGY = ("grade", "er_positive", "pr_positive", "her2_positive", "ki67_percent", "msi_high",
             "pdl1_tps_percent")
IMAGING = ("tumour_size_mm", "suv_max", "mtv_ml", "lesion_count")
GENES = ("tp53", "kras", "egfr", "alk", "braf", "brca1", "brca2", "pik3ca")
GENOMIC = (*GENES, "tmb_mut_per_mb")
TREATMENT = ("regimen", "line_of_therapy")
OUTCOMES = ("best_response", "pfs_days", "pfs_event", "os_days", "os_event")

MODALITY_FIELDS: dict[str, tuple[str, ...]] = {
    "clinical": CLINICAL,
    "pathology": PATHOLOGY,
    "imaging": IMAGING,
    "genomic": GENOMIC,
}
MODALITIES: tuple[str, ...] = tuple(MODALITY_FIELDS)
CONTRACT_COLUMNS: tuple[str, ...] = ("patient_id", *CLINICAL, *PATHOLOGY, *IMAGING, *GENOMIC,
                                     *TREATMENT, *OUTCOMES)


class PatientRecord(BaseModel):
    """One patient at one site: features at the start of the regimen, the regimen, and its outcomes."""

    model_config = ConfigDict(extra="forbid", use_enum_values=False)

    patient_id: str = Field(min_length=1, description="site-local identifier; never leaves the site")
    # clinical (required)
    age_years: float = Field(ge=18, le=110)
    sex: Sex
    race_ethnicity: RaceEthnicity
    ecog: int = Field(ge=0, le=4, description="ECOG performance status")
    stage_group: StageGroup
    cancer_type: CancerType
    histology: str
    charlson_index: int = Field(ge=0, le=24, description="Charlson comorbidity index (cancer excluded)")
    prior_lines: int = Field(ge=0, le=10, description="prior lines of systemic therapy")
    # pathology
    grade: int | None = Field(default=None, ge=1, le=3)
    er_positive: bool | None = None
    pr_positive: bool | None = None
    her2_positive: bool | None = None
    ki67_percent: float | None = Field(default=None, ge=0, le=100)
    msi_high: bool | None = None
    pdl1_tps_percent: float | None = Field(default=None, ge=0, le=100)
    # imaging
    tumour_size_mm: float | None = Field(default=None, gt=0, le=400)
    suv_max: float | None = Field(default=None, ge=0, le=100)
    mtv_ml: float | None = Field(default=None, ge=0, le=5000)
    lesion_count: int | None = Field(default=None, ge=0, le=200)
    # genomic panel
    tp53: bool | None = None
    kras: bool | None = None
    egfr: bool | None = None
    alk: bool | None = None
    braf: bool | None = None
    brca1: bool | None = None
    brca2: bool | None = None
    pik3ca: bool | None = None
    tmb_mut_per_mb: float | None = Field(default=None, ge=0, le=500)
    # treatment
    regimen: str
    line_of_therapy: int = Field(ge=1, le=10)
    # outcomes
    best_response: BestResponse | None = None
    pfs_days: float | None = Field(default=None, ge=0)
    pfs_event: bool | None = None
    os_days: float | None = Field(default=None, ge=0)
    os_event: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> PatientRecord:
        if self.histology not in ALL_HISTOLOGIES:
            raise ValueError(f"histology: unknown code {self.histology!r}; allowed: {', '.join(ALL_HISTOLOGIES)}")
        if self.histology not in HISTOLOGIES[self.cancer_type]:
            raise ValueError(f"histology: {self.histology!r} is not a {self.cancer_type.value} histology; "
                             f"allowed: {', '.join(HISTOLOGIES[self.cancer_type])}")
        regimen = REGIMEN_BY_CODE.get(self.regimen)
        if regimen is None:
            raise ValueError(f"regimen: unknown code {self.regimen!r}; map it to one of "
                             f"{', '.join(REGIMEN_BY_CODE)}")
        if self.cancer_type not in regimen.cancer_types:
            raise ValueError(f"regimen: {self.regimen!r} is not a {self.cancer_type.value} regimen in the "
                             f"vocabulary")
        for endpoint in ("pfs", "os"):
            days, event = getattr(self, f"{endpoint}_days"), getattr(self, f"{endpoint}_event")
            if (days is None) != (event is None):
                raise ValueError(f"{endpoint}_days/{endpoint}_event: give both the time and the event flag, "
                                 f"or neither")
        if self.pfs_days is not None and self.os_days is not None and self.pfs_days > self.os_days + 1e-9:
            raise ValueError(f"pfs_days: {self.pfs_days} is after os_days {self.os_days}; progression-free "
                             f"survival cannot outlast overall survival")
        return self

    def modalities_present(self) -> dict[str, bool]:
        return {m: any(getattr(self, f) is not None for f in fields) for m, fields in MODALITY_FIELDS.items()}


class Violation(BaseModel):
    """One broken rule, located precisely enough to fix it at the source."""

    source: str
    row: int | None = Field(description="1-based data row (header excluded); None for whole-file problems")
    column: str | None
    rule: str
    value: str | None = None

    def __str__(self) -> str:
        where = self.source + (f" row {self.row}" if self.row is not None else "")
        where += f", column '{self.column}'" if self.column else ""
        shown = f" (value {self.value!r})" if self.value is not None else ""
        return f"{where}: {self.rule}{shown}"


class DataContractError(ValueError):
    """Raised with every violation found, so a steward fixes the file in one pass."""

    def __init__(self, violations: list[Violation], limit: int = 20) -> None:
        self.violations = violations
        lines = [str(v) for v in violations[:limit]]
        more = len(violations) - limit
        if more > 0:
            lines.append(f"... and {more} more")
        super().__init__(f"{len(violations)} data-contract violation(s):\n  " + "\n  ".join(lines)
                         + "\nFix the source data or the site's column/code mapping, then run again.")


def _cell(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str) and value.strip() == "":
        return None
    return value


def validate_frame(frame: pd.DataFrame, source: str | Path) -> list[PatientRecord]:
    """Validate every row of a contract-shaped table; raise DataContractError listing all violations."""
    source = str(source)
    violations: list[Violation] = []
    if frame.empty:
        raise DataContractError([Violation(source=source, row=None, column=None,
                                           rule="the table has no patient rows")])
    missing = [c for c in ("patient_id", *CLINICAL, *TREATMENT) if c not in frame.columns]
    unknown = [c for c in frame.columns if c not in CONTRACT_COLUMNS]
    violations += [Violation(source=source, row=None, column=c, rule="required column is missing")
                   for c in missing]
    violations += [Violation(source=source, row=None, column=c,
                             rule="column is not in the data contract; map or drop it")
                   for c in unknown]
    if violations:
        raise DataContractError(violations)
    duplicated = frame["patient_id"].astype(str).duplicated(keep="first")
    for index in frame.index[duplicated.to_numpy()]:
        violations.append(Violation(source=source, row=int(frame.index.get_loc(index)) + 1,
                                    column="patient_id", rule="duplicated patient",
                                    value=str(frame.at[index, "patient_id"])))
    records: list[PatientRecord] = []
    for row_number, row in enumerate(frame.to_dict(orient="records"), start=1):
        cleaned = {k: _cell(v) for k, v in row.items()}
        if cleaned.get("patient_id") is not None:
            cleaned["patient_id"] = str(cleaned["patient_id"])
        try:
            records.append(PatientRecord.model_validate(cleaned))
        except ValidationError as error:
            for item in error.errors():
                column = str(item["loc"][0]) if item["loc"] else None
                message = item["msg"].removeprefix("Value error, ")
                if column is None and ":" in message:
                    column, message = (part.strip() for part in message.split(":", 1))
                value = cleaned.get(column) if column else None
                violations.append(Violation(source=source, row=row_number, column=column, rule=message,
                                            value=None if value is None else str(value)))
    if violations:
        raise DataContractError(violations)
    return records


def records_to_frame(records: Iterable[PatientRecord]) -> pd.DataFrame:
    """Contract records back to a table with enum values as plain codes (the site's canonical form)."""
    rows = [r.model_dump(mode="json") for r in records]
    return pd.DataFrame(rows, columns=list(CONTRACT_COLUMNS))
