import pandas as pd
import pytest

from shared.contract import DataContractError, check_frame, validate_frame
from shared.encoding import modality_presence


def record(**changes) -> dict:
    base = dict(patient_id="p1", age_years=64, sex="female", race_ethnicity="black", ecog=1, stage_group="IV",
                cancer_type="breast", histology="breast_ductal", charlson_index=2, prior_lines=0,
                her2_positive=True, regimen="TCHP", line_of_therapy=1, best_response="PR",
                pfs_days=300, pfs_event=True, os_days=700, os_event=False)
    return base | changes


def test_a_valid_record_passes_and_reports_its_modalities():
    [row] = validate_frame(pd.DataFrame([record()]), "x.csv")
    assert row.patient_id == "p1"
    checked = check_frame(pd.DataFrame([record()]), "x.csv")
    assert modality_presence(checked).tolist() == [[1.0, 1.0, 0.0, 0.0]]


@pytest.mark.parametrize("changes, column, words", [
    ({"ecog": 5}, "ecog", "less than or equal to 4"),
    ({"regimen": "FOLFOXIRI"}, "regimen", "unknown code 'FOLFOXIRI'"),
    ({"regimen": "FOLFOX"}, "regimen", "not a breast regimen"),
    ({"histology": "crc_mucinous"}, "histology", "not a breast histology"),
    ({"pfs_days": 900}, "pfs_days", "cannot outlast overall survival"),
    ({"os_event": None}, "os_days/os_event", "give both"),
    ({"pfs_days": -3}, "pfs_days", "greater than or equal to 0"),
    ({"sex": "F"}, "sex", "'female' or 'male'"),
    ({"best_response": "MR"}, "best_response", "'CR', 'PR', 'SD' or 'PD'"),
])
def test_bad_records_are_rejected_naming_row_column_and_rule(changes, column, words):
    frame = pd.DataFrame([record(patient_id="ok"), record(**changes)])
    with pytest.raises(DataContractError) as raised:
        validate_frame(frame, "site_a/patients.csv")
    [violation] = raised.value.violations
    assert (violation.source, violation.row, violation.column) == ("site_a/patients.csv", 2, column)
    assert words in violation.rule
    assert "site_a/patients.csv row 2" in str(raised.value)


def test_missing_and_unknown_columns_and_duplicates_are_reported_together():
    frame = pd.DataFrame([record(), record()]).drop(columns=["age_years"]).assign(ecog_ps=1)
    with pytest.raises(DataContractError) as raised:
        validate_frame(frame, "x.csv")
    rules = {(v.column, v.rule) for v in raised.value.violations}
    assert ("age_years", "required column is missing") in rules
    assert ("ecog_ps", "column is not in the data contract; map or drop it") in rules
    frame = pd.DataFrame([record(), record()])
    with pytest.raises(DataContractError, match="duplicated patient"):
        validate_frame(frame, "x.csv")


def test_an_empty_table_is_an_error():
    with pytest.raises(DataContractError, match="no patient rows"):
        validate_frame(pd.DataFrame(columns=list(record())), "empty.csv")
