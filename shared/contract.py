"""The data contract: the export's columns and modalities, and validation with errors a data steward can act on.

Both come from the consortium data dictionary (shared/dictionary.py; the default one in
shared/dictionaries/default.yaml). A record is flat (one CSV row = one patient) so sites can export it from
any system; MODALITY_FIELDS groups the columns into the model's modalities. Any non-clinical modality may be
missing (all of its fields empty) for a patient or for a whole site. The checks themselves run column-wise
with pandera (shared/export_schema.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from shared.dictionary import ENDPOINT_FIELDS, DataDictionary
from shared.vocabulary import DICTIONARY


def _names(modality: str) -> tuple[str, ...]:
    return tuple(f.name for f in DICTIONARY.fields_of(modality))


# Column groups of the default dictionary (shared/dictionaries/default.yaml), in its field order.
CLINICAL = _names("clinical")
PATHOLOGY = _names("pathology")
IMAGING = _names("imaging")
GENES = tuple(f.name for f in DICTIONARY.fields_of("genomic") if f.type == "boolean")
GENOMIC = _names("genomic")
TREATMENT = _names("treatment")
OUTCOMES = _names("outcome")

MODALITY_FIELDS: dict[str, tuple[str, ...]] = {m: _names(m) for m in DICTIONARY.modalities}
MODALITIES: tuple[str, ...] = tuple(MODALITY_FIELDS)
CONTRACT_COLUMNS: tuple[str, ...] = DICTIONARY.columns


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


def with_every_endpoint(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the columns of endpoints its dictionary does not model added empty (unknown for every
    patient), so the model's heads and the metrics of those endpoints see no outcome rather than no column."""
    absent = [c for fields in ENDPOINT_FIELDS.values() for c in fields if c not in frame.columns]
    return frame.assign(**{c: np.nan for c in absent}) if absent else frame


class PatientRow(NamedTuple):
    """A validated row as callers count and label them (the values stay in the frame)."""

    row: int
    patient_id: str


def check_frame(frame: pd.DataFrame, source: str | Path, dictionary: DataDictionary = DICTIONARY) -> pd.DataFrame:
    """Validate a contract-shaped table against the dictionary (shared/export_schema.py, pandera); return it
    normalised (rows numbered from 0, blank text missing, flags 1.0/0.0) or raise DataContractError with
    every violation."""
    source = str(source)
    if frame.empty:
        raise DataContractError([Violation(source=source, row=None, column=None,
                                           rule="the table has no patient rows")])
    required = [f.name for f in dictionary.table_schema.fields if f.constraints.required]
    violations = [Violation(source=source, row=None, column=c, rule="required column is missing")
                  for c in required if c not in frame.columns]
    violations += [Violation(source=source, row=None, column=c, rule="column is not in the data contract; map or drop it")
                   for c in frame.columns if c not in dictionary.columns]
    if violations:
        raise DataContractError(violations)
    # on use: pandera (with its httpx, typeguard) is needed only when a table is checked, not on a cached message
    from shared.export_schema import failures, normalised

    normal = normalised(frame, dictionary)
    violations = [Violation(source=source, row=row, column=column, rule=rule,
                            value=None if value is None else str(value))
                  for row, column, rule, value in failures(normal, dictionary)]
    if violations:
        raise DataContractError(violations)
    return normal


def validate_frame(frame: pd.DataFrame, source: str | Path, dictionary: DataDictionary = DICTIONARY) -> list[PatientRow]:
    """Validate every row of a contract-shaped table; raise DataContractError listing all violations."""
    checked = check_frame(frame, source, dictionary)
    key = dictionary.table_schema.primary_key
    return [PatientRow(row, str(pid)) for row, pid in enumerate(checked[key].tolist(), start=1)]
