"""Apply a site's ColumnMapping: its column names, codes and units become contract columns with typed values.

Every cell is read as text first, so CSV, Parquet and OMOP sources go through one set of rules:
trim -> missing? -> the site's code map -> the contract's type (number, true/false, code) -> unit conversion.
A cell that fits none of the rules becomes a Violation naming the source, row, column, the value and what is
allowed; nothing is dropped silently.

The typed frame uses one dtype per kind of column, the same at every site:
- numbers (including ECOG, grade, line of therapy): float64, NaN when missing;
- true/false flags (receptors, MSI, gene alterations, event flags): float64 1.0/0.0, NaN when missing,
  so they feed numpy/torch directly and survive CSV and Parquet round trips unchanged;
- codes (sex, stage, histology, regimen, ...) and patient_id: object holding str, None when missing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from shared.contract import CONTRACT_COLUMNS, MODALITY_FIELDS, DataContractError, Violation
from shared.site_config import (
    BOOLEAN_COLUMNS,
    CATEGORY_CODES,
    DECIMAL_COLUMNS,
    INTEGER_COLUMNS,
    REQUIRED_COLUMNS,
    UNIT_FACTORS,
    ColumnMapping,
)

# Spellings of true/false that clinics use, matched ignoring case; a site adds its own in mapping.codes.
BOOLEAN_SPELLINGS: Mapping[str, bool] = MappingProxyType({
    **dict.fromkeys(("true", "t", "yes", "y", "1", "pos", "positive", "+", "mutated", "mutant", "mut",
                     "altered", "present", "detected", "high"), True),
    **dict.fromkeys(("false", "f", "no", "n", "0", "neg", "negative", "-", "wild-type", "wildtype", "wt",
                     "not mutated", "unaltered", "absent", "not detected", "low"), False),
})

NUMERIC_COLUMNS: tuple[str, ...] = (*INTEGER_COLUMNS, *DECIMAL_COLUMNS)


def cell_text(value: Any) -> str | None:
    """A cell as trimmed text (None when empty), written so that numbers parse back to the same float."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        number = float(value)
        if math.isnan(number):
            return None
        return str(int(number)) if number.is_integer() and abs(number) < 1e15 else repr(number)
    if isinstance(value, Decimal):
        return str(value)
    text = str(value).strip()
    return text or None


class MappedTable(NamedTuple):
    """A site table after mapping: the typed frame (None when columns are unusable) and what went wrong."""

    frame: pd.DataFrame | None
    violations: list[Violation]
    site_column_for: dict[str, str]  # contract column -> the site column it came from
    failed_cells: set[tuple[int, str]]  # (1-based row, contract column) cells that could not be read


def apply_mapping(raw: pd.DataFrame, mapping: ColumnMapping | None, source: str,
                  modalities_absent: Iterable[str] = ()) -> pd.DataFrame:
    """Turn a site's table into every contract column, typed; raise DataContractError listing all violations.

    Rows keep their order and index (the OMOP reader indexes by person_id); row numbers in violations are
    1-based data rows, the header excluded.
    """
    mapped = map_site_table(raw, mapping, source, modalities_absent)
    if mapped.violations or mapped.frame is None:
        raise DataContractError(mapped.violations)
    return mapped.frame


def map_site_table(raw: pd.DataFrame, mapping: ColumnMapping | None, source: str,
                   modalities_absent: Iterable[str] = ()) -> MappedTable:
    """apply_mapping without raising, so the caller can add contract checks and report everything at once."""
    mapping = mapping or ColumnMapping()
    raw = raw.rename(columns=lambda name: str(name).strip())
    violations: list[Violation] = []
    site_column_for = _contract_columns(raw, mapping, source, violations)
    if violations:
        return MappedTable(None, violations, site_column_for, set())

    missing_values = {m.strip().casefold() for m in mapping.missing_values}
    typed: dict[str, Any] = {}
    empty_rows: dict[str, list[int]] = {}  # rows whose cell is empty (not rows whose cell failed to convert)
    for column in CONTRACT_COLUMNS:
        site_column = site_column_for.get(column)
        if site_column is None:
            typed[column] = _empty_column(column, len(raw))
            continue
        rows, texts = _distinct_texts(raw[site_column], missing_values)
        empty_rows[column] = np.flatnonzero(rows < 0).tolist()
        distinct_violations: list[Violation] = []
        converted = _convert(column, site_column, texts, mapping, source, distinct_violations)
        violations += _per_row(distinct_violations, rows)
        typed[column] = _spread(converted, rows)
    frame = pd.DataFrame(typed, index=raw.index, columns=list(CONTRACT_COLUMNS))
    contract_column_of = {site: contract for contract, site in site_column_for.items()}
    failed_cells = {(v.row, contract_column_of[v.column]) for v in violations if v.row is not None}

    for column in REQUIRED_COLUMNS:
        for row in empty_rows.get(column, []):
            violations.append(Violation(source=source, row=row + 1, column=site_column_for[column],
                                        rule=f"required value is missing ({column})"))
            failed_cells.add((row + 1, column))
    for modality in modalities_absent:
        for column in MODALITY_FIELDS[modality]:
            if column in site_column_for and frame[column].notna().any():
                violations.append(Violation(
                    source=source, row=None, column=site_column_for[column],
                    rule=f"the site config declares modality '{modality}' absent, but this column has values; "
                         f"remove '{modality}' from modalities_absent or ignore the column"))
    return MappedTable(frame, violations, site_column_for, failed_cells)


def _distinct_texts(values: pd.Series, missing_values: set[str]) -> tuple[np.ndarray, list[str]]:
    """The column's distinct cell texts (missing cells left out) and, per row, the index of its text (-1: missing).

    Each rule then runs once per distinct value rather than once per cell: a 100,000-patient export has a few
    distinct codes per column, and this made mapping it ~10× faster."""
    if pd.api.types.infer_dtype(values, skipna=False) == "string":  # text cells (CSV): equal values, equal texts
        rows, distinct = pd.factorize(values, use_na_sentinel=True)
        texts = [cell_text(value) for value in distinct]
    else:  # typed cells (Parquet, OMOP): 1, 1.0 and True hash alike but read differently, so take the texts first
        rows, distinct = pd.factorize(pd.Series([cell_text(v) for v in values.tolist()], dtype=object),
                                      use_na_sentinel=True)
        texts = list(distinct)
    kept = [t is not None and t.casefold() not in missing_values for t in texts]
    if not all(kept):  # renumber without the missing texts
        new_index = np.cumsum(kept) - 1
        lookup = np.append(np.where(kept, new_index, -1), -1)  # the last entry maps an already-missing row (-1)
        rows = lookup[rows]
        texts = [t for t, keep in zip(texts, kept) if keep]
    return rows, texts


def _per_row(distinct_violations: list[Violation], rows: np.ndarray) -> list[Violation]:
    """Violations found on distinct texts (row = index + 1), repeated for every row holding that text, in row order."""
    if not distinct_violations:
        return []
    by_text = {v.row - 1: v for v in distinct_violations}
    failing = np.flatnonzero(np.isin(rows, list(by_text)))
    return [by_text[int(rows[row])].model_copy(update={"row": int(row) + 1}) for row in failing]


def _spread(converted: list[Any] | np.ndarray, rows: np.ndarray) -> list[Any] | np.ndarray:
    """Per-row values from per-distinct-text values; a missing row (-1) takes the column's missing value."""
    if isinstance(converted, np.ndarray):
        return np.append(converted, np.nan)[rows]
    return np.array([*converted, None], dtype=object)[rows].tolist()


def _contract_columns(raw: pd.DataFrame, mapping: ColumnMapping, source: str,
                      violations: list[Violation]) -> dict[str, str]:
    """Which site column feeds each contract column; column-level problems go into `violations`."""
    site_columns = [str(c) for c in raw.columns]
    for site_column, target in mapping.columns.items():
        if site_column not in site_columns and not site_column.startswith("omop:"):
            violations.append(Violation(source=source, row=None, column=site_column,
                                        rule=f"the mapping renames this column to '{target}', but the data has no "
                                             f"such column; its columns are: {', '.join(site_columns)}"))
    ignored = set(mapping.ignore_columns)
    site_column_for: dict[str, str] = {}
    for site_column in site_columns:
        if site_column in ignored:
            continue
        target = mapping.columns.get(site_column, site_column)
        if target not in CONTRACT_COLUMNS:
            violations.append(Violation(source=source, row=None, column=site_column,
                                        rule="column is not in the data contract; map it to a contract column "
                                             "(mapping.columns) or list it in mapping.ignore_columns"))
        elif target in site_column_for:
            violations.append(Violation(source=source, row=None, column=site_column,
                                        rule=f"both '{site_column_for[target]}' and '{site_column}' give contract "
                                             f"column '{target}'; map or ignore one of them"))
        else:
            site_column_for[target] = site_column
    for column in REQUIRED_COLUMNS:
        if column not in site_column_for:
            renamed_from = [s for s, t in mapping.columns.items() if t == column]
            hint = "" if renamed_from else " (map the site's column to it in mapping.columns)"
            violations.append(Violation(source=source, row=None, column=column,
                                        rule=f"required column is missing{hint}"))
    return site_column_for


def _empty_column(column: str, length: int) -> list[Any] | np.ndarray:
    if column in NUMERIC_COLUMNS or column in BOOLEAN_COLUMNS:
        return np.full(length, np.nan)
    return [None] * length


def _convert(column: str, site_column: str, texts: list[str | None], mapping: ColumnMapping, source: str,
             violations: list[Violation]) -> list[Any] | np.ndarray:
    """Each text as the contract column's value: one parser per kind of column (number, flag, category), each
    returning the value or the rule it breaks; a broken rule is a violation naming the cell."""
    site_codes = mapping.codes.get(column, {})
    factor = UNIT_FACTORS.get(column, {}).get(mapping.units.get(column, ""), 1.0)

    def unknown_code(allowed: list[str]) -> str:
        return f"unknown code; allowed: {', '.join(allowed)} (or add it to mapping.codes.{column})"

    def number(text: str) -> tuple[float | None, str | None]:
        try:
            value = float(site_codes.get(text, text))
        except ValueError:
            return None, (f"not a number ({column} takes {_number_kind(column)}"
                          + (f"; site codes: {', '.join(site_codes)}" if site_codes else "") + ")")
        if not math.isfinite(value):
            return None, "not a finite number"
        return (value if factor == 1.0 else round(value * factor, 9)), None

    def flag(text: str) -> tuple[float | None, str | None]:
        mapped = site_codes.get(text, text)
        value = BOOLEAN_SPELLINGS.get(mapped.casefold(), _flag_from_number(mapped))
        if value is None:
            return None, unknown_code([*site_codes, "true/false", "yes/no", "1/0", "pos/neg", "mutated/wild-type"])
        return (1.0 if value else 0.0), None

    by_folded = {code.casefold(): code for code in CATEGORY_CODES.get(column, ())}

    def category(text: str) -> tuple[str | None, str | None]:
        code = site_codes.get(text) or by_folded.get(text.casefold())
        return (code, None) if code is not None else (None, unknown_code([*site_codes, *CATEGORY_CODES[column]]))

    values: list[Any] | np.ndarray
    if column in NUMERIC_COLUMNS:
        parse, values = number, np.full(len(texts), np.nan)
    elif column in BOOLEAN_COLUMNS:
        parse, values = flag, np.full(len(texts), np.nan)
    elif column in CATEGORY_CODES:
        parse, values = category, [None] * len(texts)
    else:
        return [None if t is None else site_codes.get(t, t) for t in texts]  # patient_id: free text
    for row, text in enumerate(texts):
        if text is None:
            continue
        value, problem = parse(text)
        if problem is not None:
            violations.append(Violation(source=source, row=row + 1, column=site_column, rule=problem, value=text))
        else:
            values[row] = value
    return values


def _flag_from_number(text: str) -> bool | None:
    """1.0 and 0.0 (how a table of 0/1 floats is written out) are flags too."""
    try:
        number = float(text)
    except ValueError:
        return None
    return {1.0: True, 0.0: False}.get(number)


def _number_kind(column: str) -> str:
    unit = next(iter(UNIT_FACTORS.get(column, {})), None)
    kind = "a whole number" if column in INTEGER_COLUMNS else "a number"
    return kind + (f" in {unit} unless mapping.units says otherwise" if unit else "")
