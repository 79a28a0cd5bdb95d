"""The site's mapping: renames, code maps, units and true/false spellings; unknown codes named, never dropped."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client.data.mapping import BOOLEAN_SPELLINGS, apply_mapping, cell_text
from shared.contract import CONTRACT_COLUMNS, DataContractError, validate_frame
from shared.site_config import CATEGORY_CODES, DEFAULT_MISSING_VALUES, ColumnMapping

SOURCE = "site_export.csv"


def site_rows() -> pd.DataFrame:
    """Three patients as a hospital exports them: its own names, codes and units, all text."""
    return pd.DataFrame({
        "mrn": ["A1", "A2", "A3"],
        "age": ["61", "745", "58.5"],  # the second is in months (see units below)
        "gender": ["F", "M", "F"],
        "race_code": ["2106-3", "2054-5", "UNK"],
        "ecog_ps": ["ECOG 1", "0", "2"],
        "stage": ["IIIA", "IV", "ii"],
        "cancer": ["colorectal", "Colorectal", "breast"],
        "histo": ["crc_adenocarcinoma", "crc_mucinous", "breast_ductal"],
        "cci": ["1", "0", "3"],
        "prior": ["0", "1", "0"],
        "er": ["", "", "pos"],
        "her2": ["", "", "neg"],
        "kras_status": ["mutated", "wild-type", "NA"],
        "size_cm": ["4.5", "2.1", "1.8"],
        "regimen_name": ["FOLFOX4", "mFOLFOX6", "AC-T"],
        "lot": ["1", "2", "1"],
        "pfs_months": ["6", "12.5", ""],
        "progressed": ["Y", "N", ""],
        "notes": ["free text", "", "x"],
    })


def site_mapping(**changes: object) -> ColumnMapping:
    fields = dict(
        columns={"mrn": "patient_id", "age": "age_years", "gender": "sex", "race_code": "race_ethnicity",
                 "ecog_ps": "ecog", "stage": "stage_group", "cancer": "cancer_type", "histo": "histology",
                 "cci": "charlson_index", "prior": "prior_lines", "er": "er_positive", "her2": "her2_positive",
                 "kras_status": "kras", "size_cm": "tumour_size_mm", "regimen_name": "regimen",
                 "lot": "line_of_therapy", "pfs_months": "pfs_days", "progressed": "pfs_event"},
        codes={"sex": {"F": "female", "M": "male"},
               "race_ethnicity": {"2106-3": "white", "2054-5": "black", "UNK": "unknown"},
               "ecog": {"ECOG 1": "1"},
               "stage_group": {"IIIA": "III"},
               "regimen": {"FOLFOX4": "FOLFOX", "mFOLFOX6": "FOLFOX"}},
        units={"tumour_size_mm": "cm", "pfs_days": "months"},
        ignore_columns=["notes"])
    fields.update(changes)
    return ColumnMapping(**fields)


def refused(raw: pd.DataFrame, mapping: ColumnMapping, **options: object) -> DataContractError:
    """The error apply_mapping raises for `raw` (the test fails if it raises none)."""
    with pytest.raises(DataContractError) as caught:
        apply_mapping(raw, mapping, SOURCE, **options)
    return caught.value


def test_site_columns_codes_and_units_become_the_contract() -> None:
    raw = site_rows()
    raw.loc[1, "age"] = "62.25"
    frame = apply_mapping(raw, site_mapping(), SOURCE)
    validate_frame(frame, SOURCE)
    assert list(frame.columns) == list(CONTRACT_COLUMNS)
    assert frame["patient_id"].tolist() == ["A1", "A2", "A3"]
    assert frame["sex"].tolist() == ["female", "male", "female"]
    assert frame["race_ethnicity"].tolist() == ["white", "black", "unknown"]
    assert frame["ecog"].tolist() == [1.0, 0.0, 2.0]
    assert frame["stage_group"].tolist() == ["III", "IV", "II"]  # "ii" matches the contract code ignoring case
    assert frame["cancer_type"].tolist() == ["colorectal", "colorectal", "breast"]
    assert frame["regimen"].tolist() == ["FOLFOX", "FOLFOX", "AC-T"]
    assert frame["tumour_size_mm"].tolist() == [45.0, 21.0, 18.0]
    assert frame["pfs_days"].iloc[:2].tolist() == [6 * 30.4375, 12.5 * 30.4375]
    assert frame["pfs_event"].iloc[:2].tolist() == [1.0, 0.0]
    assert frame["kras"].iloc[:2].tolist() == [1.0, 0.0] and np.isnan(frame["kras"].iloc[2])
    assert frame["er_positive"].iloc[2] == 1.0 and frame["her2_positive"].iloc[2] == 0.0
    assert frame["ecog"].dtype == np.float64 and frame["kras"].dtype == np.float64
    assert frame["sex"].dtype == object and frame["grade"].isna().all()


def test_age_in_months_and_fractions_as_percent() -> None:
    raw = site_rows().assign(age=["732", "745", "702"], ki67=["0.25", "", "0.5"])
    mapping = site_mapping(units={"age_years": "months", "ki67_percent": "fraction"},
                           columns={**site_mapping().columns, "ki67": "ki67_percent"})
    frame = apply_mapping(raw.drop(columns=["size_cm", "pfs_months", "progressed"]),
                          mapping.model_copy(update={"columns": {k: v for k, v in mapping.columns.items()
                                                                 if k not in ("size_cm", "pfs_months", "progressed")}}),
                          SOURCE)
    assert frame["age_years"].tolist() == [61.0, pytest.approx(62.0833333), 58.5]
    assert frame["ki67_percent"].iloc[0] == 25.0 and frame["ki67_percent"].iloc[2] == 50.0


@pytest.mark.parametrize("spelling, expected", [
    ("pos", 1.0), ("NEG", 0.0), ("Y", 1.0), ("n", 0.0), ("1", 1.0), ("0", 0.0), ("1.0", 1.0), ("0.0", 0.0),
    ("mutated", 1.0), ("Wild-Type", 0.0), ("TRUE", 1.0), ("false", 0.0), ("positive", 1.0), ("wt", 0.0)])
def test_true_false_spellings(spelling: str, expected: float) -> None:
    raw = site_rows().assign(kras_status=[spelling, "wt", "mut"])
    assert apply_mapping(raw, site_mapping(), SOURCE)["kras"].iloc[0] == expected


def test_a_site_code_for_a_flag() -> None:
    raw = site_rows().assign(kras_status=["G12D", "no mutation", "no mutation"])
    mapping = site_mapping(codes={**site_mapping().codes, "kras": {"G12D": "true", "no mutation": "false"}})
    assert apply_mapping(raw, mapping, SOURCE)["kras"].tolist() == [1.0, 0.0, 0.0]


def test_unknown_codes_are_violations_naming_row_column_code_and_allowed() -> None:
    raw = site_rows()
    raw.loc[1, "regimen_name"] = "FOLFOXIRI"
    raw.loc[2, "gender"] = "X"
    raw.loc[0, "kras_status"] = "VUS"
    error = refused(raw, site_mapping())
    found = {(v.row, v.column): v for v in error.violations}
    assert set(found) == {(2, "regimen_name"), (3, "gender"), (1, "kras_status")}
    regimen = found[(2, "regimen_name")]
    assert regimen.source == SOURCE and regimen.value == "FOLFOXIRI" and "unknown code" in regimen.rule
    assert "FOLFOX4" in regimen.rule and "CARBOPLATIN-PEMETREXED" in regimen.rule  # site codes and contract codes
    assert "female" in found[(3, "gender")].rule and found[(3, "gender")].value == "X"
    assert "mapping.codes.kras" in found[(1, "kras_status")].rule
    assert "row 2, column 'regimen_name'" in str(error)


def test_not_a_number_names_the_cell() -> None:
    raw = site_rows()
    raw.loc[2, "cci"] = "three"
    error = refused(raw, site_mapping())
    (violation,) = error.violations
    assert (violation.row, violation.column, violation.value) == (3, "cci", "three")
    assert "not a number" in violation.rule


def test_unmapped_unknown_column_is_named() -> None:
    raw = site_rows()
    error = refused(raw, site_mapping(ignore_columns=[]))
    (violation,) = error.violations
    assert violation.column == "notes" and violation.row is None and "ignore_columns" in violation.rule


def test_mapped_column_absent_from_the_file_is_named() -> None:
    raw = site_rows().drop(columns=["age"])
    error = refused(raw, site_mapping())
    columns = {v.column: v.rule for v in error.violations}
    assert "no such column" in columns["age"]
    assert columns["age_years"].startswith("required column is missing")


def test_two_columns_for_one_contract_column() -> None:
    raw = site_rows().assign(ecog=["1", "1", "1"])
    error = refused(raw, site_mapping())
    assert any("both 'ecog_ps' and 'ecog'" in v.rule for v in error.violations)


def test_required_value_missing_is_named() -> None:
    raw = site_rows()
    raw.loc[1, "cancer"] = "  "
    error = refused(raw, site_mapping())
    (violation,) = error.violations
    assert (violation.row, violation.column) == (2, "cancer") and "required value is missing" in violation.rule


def test_site_missing_value_codes() -> None:
    raw = site_rows().assign(kras_status=["not tested", "mutated", "-99"])
    mapping = site_mapping(missing_values=["", "NA", "not tested", "-99"])
    assert apply_mapping(raw, mapping, SOURCE)["kras"].isna().tolist() == [True, False, True]


def test_a_modality_declared_absent_must_be_empty() -> None:
    error = refused(site_rows(), site_mapping(), modalities_absent=["genomic"])
    (violation,) = error.violations
    assert violation.column == "kras_status" and "declares modality 'genomic' absent" in violation.rule


def test_typed_cells_from_parquet_read_as_text_without_losing_precision() -> None:
    assert cell_text(np.int64(3)) == "3" and cell_text(2.0) == "2" and cell_text(0.1 + 0.2) == repr(0.1 + 0.2)
    assert cell_text(True) == "true" and cell_text(np.bool_(False)) == "false"
    assert cell_text(float("nan")) is None and cell_text(pd.NA) is None and cell_text("  x ") == "x"
    assert float(cell_text(63.123456789)) == 63.123456789


def test_boolean_spellings_are_unambiguous() -> None:
    assert BOOLEAN_SPELLINGS["mutated"] is True and BOOLEAN_SPELLINGS["wild-type"] is False
    with pytest.raises(TypeError):
        BOOLEAN_SPELLINGS["maybe"] = True  # type: ignore[index] - read-only, shared by every site


_CODED = [c for c in CATEGORY_CODES if c != "best_response" and c in site_mapping().columns.values()]
_KNOWN = {code.casefold() for codes in CATEGORY_CODES.values() for code in codes}


@settings(max_examples=40, deadline=None)
@given(column=st.sampled_from(_CODED), row=st.integers(0, 2),
       code=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ-_0123456789", min_size=1, max_size=12))
def test_any_unknown_code_in_any_cell_is_reported_there(column: str, row: int, code: str) -> None:
    mapping = site_mapping()
    site_column = next(s for s, t in mapping.columns.items() if t == column)
    if code.casefold() in _KNOWN or code in mapping.codes.get(column, {}) or code.casefold() in DEFAULT_MISSING_VALUES:
        return
    raw = site_rows()
    raw.loc[row, site_column] = code
    error = refused(raw, mapping)
    assert [(v.row, v.column, v.value) for v in error.violations] == [(row + 1, site_column, code)]
