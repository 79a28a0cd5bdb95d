"""Loading a site's CSV or Parquet into a validated contract frame, and every way a file can be wrong."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from client.data.loader import decode_text, load_contract_csv, load_site_frame
from shared.contract import CONTRACT_COLUMNS, DataContractError
from shared.site_config import ColumnMapping, CsvSource, ParquetSource, SiteConfig
from tests.client.test_site_data_examples import example_contract_frame


def site_config(source: CsvSource | ParquetSource, **fields: object) -> SiteConfig:
    return SiteConfig(site_id="site-a", display_name="Site A", data=source, target_epsilon=4.0, **fields)


def text_frame(n: int = 12) -> pd.DataFrame:
    """A valid contract export as the strings a CSV holds."""
    return example_contract_frame(n, seed=7).astype(object).map(lambda v: "" if v is None or v != v else str(v))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the good paths -----------------------------------------------------------------------------------------

def test_csv_loads_to_exactly_the_contract_frame(tmp_path: Path) -> None:
    expected = example_contract_frame(50, seed=2)
    expected.to_csv(tmp_path / "patients.csv", index=False)
    frame = load_site_frame(site_config(CsvSource(path=tmp_path / "patients.csv")))
    pd.testing.assert_frame_equal(frame, expected)
    assert list(frame.columns) == list(CONTRACT_COLUMNS)
    assert {str(frame[c].dtype) for c in ("age_years", "ecog", "er_positive", "pfs_event")} == {"float64"}
    assert {str(frame[c].dtype) for c in ("patient_id", "sex", "regimen", "best_response")} == {"object"}


def test_parquet_loads_to_the_same_frame_as_csv(tmp_path: Path) -> None:
    expected = example_contract_frame(50, seed=2)
    expected.to_parquet(tmp_path / "patients.parquet", index=False)
    frame = load_site_frame(site_config(ParquetSource(path=tmp_path / "patients.parquet")))
    pd.testing.assert_frame_equal(frame, expected)


def test_parquet_with_native_types_and_site_names(tmp_path: Path) -> None:
    exported = example_contract_frame(20, seed=4).rename(columns={"ecog": "ecog_ps"})
    exported["ecog_ps"] = exported["ecog_ps"].astype("int64")
    exported["er_positive"] = exported["er_positive"].map({1.0: True, 0.0: False}).astype("boolean")
    exported.to_parquet(tmp_path / "export.parquet", index=False)
    config = site_config(ParquetSource(path=tmp_path / "export.parquet"),
                         mapping=ColumnMapping(columns={"ecog_ps": "ecog"}))
    pd.testing.assert_frame_equal(load_site_frame(config), example_contract_frame(20, seed=4))


def test_synthetic_site_layout_loads_with_load_contract_csv(tmp_path: Path) -> None:
    site_folder = tmp_path / "out" / "site-1"
    site_folder.mkdir(parents=True)
    expected = example_contract_frame(30, seed=5)
    expected.to_csv(site_folder / "patients.csv", index=False)
    (site_folder / "site.json").write_text('{"site_id": "site-1"}')
    pd.testing.assert_frame_equal(load_contract_csv(site_folder / "patients.csv"), expected)


@pytest.mark.parametrize("encoding, bom", [("utf-8", b""), ("utf-8", b"\xef\xbb\xbf"), ("latin-1", b"")])
def test_encodings_are_detected(tmp_path: Path, encoding: str, bom: bytes) -> None:
    frame = text_frame()
    frame.loc[0, "regimen"] = "FOLFOX-Ré"  # a site code with an accent, mapped below
    frame.loc[0, "cancer_type"], frame.loc[0, "histology"] = "colorectal", "crc_adenocarcinoma"
    path = tmp_path / "patients.csv"
    path.write_bytes(bom + frame.to_csv(index=False).encode(encoding))
    config = site_config(CsvSource(path=path), mapping=ColumnMapping(codes={"regimen": {"FOLFOX-Ré": "FOLFOX"}}))
    assert load_site_frame(config)["regimen"].iloc[0] == "FOLFOX"


def test_configured_encoding_is_used(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    path.write_bytes(text_frame().to_csv(index=False).encode("latin-1"))
    assert len(load_site_frame(site_config(CsvSource(path=path, encoding="latin-1")))) == 12


def test_semicolon_delimited_export(tmp_path: Path) -> None:
    path = tmp_path / "patients.csv"
    text_frame().to_csv(path, index=False, sep=";")
    assert len(load_site_frame(site_config(CsvSource(path=path, delimiter=";")))) == 12


# --- malformed inputs: each names the file, row and column, and nothing is written ---------------------------

def _drop(column: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    return lambda f: f.drop(columns=[column])


def _set(row: int, column: str, value: str) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.copy()
        frame.loc[row - 1, column] = value
        return frame
    return change


def _set_many(*changes: tuple[int, str, str]) -> Callable[[pd.DataFrame], pd.DataFrame]:
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        for row, column, value in changes:
            frame = _set(row, column, value)(frame)
        return frame
    return change


def _duplicate_patient(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[5, "patient_id"] = frame.loc[2, "patient_id"]
    return frame


def _unknown_column(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(hospital_number="123")


MALFORMED = [
    # (case, change to a valid export, site mapping, expected (row, column, words in the rule))
    ("missing required column", _drop("age_years"), None, [(None, "age_years", "required column is missing")]),
    ("unknown column", _unknown_column, None, [(None, "hospital_number", "not in the data contract")]),
    ("unknown regimen code", _set(3, "regimen", "FOLFOXIRI"), None, [(3, "regimen", "unknown code")]),
    ("unknown sex code", _set(4, "sex", "W"), None, [(4, "sex", "unknown code")]),
    ("text in a number column", _set(2, "age_years", "sixty"), None, [(2, "age_years", "not a number")]),
    ("size in mm declared as cm", lambda f: _set(6, "tumour_size_mm", "45")(f.assign(tumour_size_mm="")),
     ColumnMapping(units={"tumour_size_mm": "cm"}),
     [(6, "tumour_size_mm", "less than or equal to 400")]),
    ("fraction where percent is expected", _set(1, "ki67_percent", "250"), None,
     [(1, "ki67_percent", "less than or equal to 100")]),
    ("negative time", _set(7, "pfs_days", "-5"), None, [(7, "pfs_days", "greater than or equal to 0")]),
    ("event without a time", _set(8, "os_days", ""), None, [(8, "os_days/os_event", "give both")]),
    ("time without an event", _set(9, "pfs_event", ""), None, [(9, "pfs_days/pfs_event", "give both")]),
    ("progression after death", _set_many((10, "pfs_days", "5000"), (10, "os_days", "100")), None,
     [(10, "pfs_days", "cannot outlast overall survival")]),
    ("duplicated patient", _duplicate_patient, None, [(6, "patient_id", "duplicated patient")]),
    ("required value empty", _set(11, "regimen", ""), None, [(11, "regimen", "required value is missing")]),
    ("regimen of another cancer", _set_many((1, "cancer_type", "breast"), (1, "histology", "breast_ductal"),
                                            (1, "regimen", "FOLFOX")), None, [(1, "regimen", "is not a breast")]),
    ("whole number expected", _set(12, "ecog", "1.5"), None, [(12, "ecog", "integer")]),
]


@pytest.mark.parametrize("case, change, mapping, expected", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_csv_is_refused_with_a_precise_error(tmp_path: Path, case: str, change, mapping,
                                                      expected: list[tuple[int | None, str, str]]) -> None:
    path = tmp_path / "patients.csv"
    change(text_frame()).to_csv(path, index=False)
    before = snapshot(tmp_path)
    with pytest.raises(DataContractError) as caught:
        load_site_frame(site_config(CsvSource(path=path), mapping=mapping))
    found = [(v.row, v.column, v.rule) for v in caught.value.violations]
    assert len(found) == len(expected), found
    for (row, column, words), (found_row, found_column, rule) in zip(expected, found):
        assert (found_row, found_column) == (row, column) and words in rule, found
    assert all(v.source == str(path) for v in caught.value.violations)
    assert snapshot(tmp_path) == before  # loading never writes


def _write(tmp_path: Path, data: bytes, name: str = "patients.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _mixed_encodings(frame: pd.DataFrame) -> bytes:
    lines = frame.to_csv(index=False).splitlines(keepends=True)
    utf8 = lines[1].replace(lines[1].split(",")[0], "Pé-utf8", 1).encode("utf-8")
    latin = lines[4].replace(lines[4].split(",")[0], "Pé-latin", 1).encode("latin-1")
    return "".join(lines[:1]).encode() + utf8 + "".join(lines[2:4]).encode() + latin + "".join(lines[5:]).encode()


FILE_PROBLEMS = [
    # (case, file bytes, expected row, words in the rule)
    ("empty file", lambda f: b"", None, "the file is empty"),
    ("only blanks", lambda f: b"  \n\n", None, "the file is empty"),
    ("header only", lambda f: f.iloc[:0].to_csv(index=False).encode(), None, "no patient rows"),
    ("mixed encodings", _mixed_encodings, 4, "mixes text encodings: line 5 is not UTF-8"),
    ("utf-16", lambda f: f.to_csv(index=False).encode("utf-16"), None, "UTF-16"),
    ("ragged row", lambda f: (f.to_csv(index=False) + "P9,1,2\nP10,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,"
                                                      "19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,"
                                                      "38,39,40,41,42\n").encode(), 14, "malformed CSV"),
    ("duplicated header", lambda f: f.rename(columns={"sex": "age_years"}).to_csv(index=False).encode(), None,
     "more than once"),
]


@pytest.mark.parametrize("case, data, row, words", FILE_PROBLEMS, ids=[p[0] for p in FILE_PROBLEMS])
def test_unreadable_csv_is_refused_with_a_precise_error(tmp_path: Path, case: str, data, row, words) -> None:
    path = _write(tmp_path, data(text_frame()))
    before = snapshot(tmp_path)
    with pytest.raises(DataContractError) as caught:
        load_site_frame(site_config(CsvSource(path=path)))
    (violation,) = caught.value.violations
    assert violation.source == str(path) and violation.row == row and words in violation.rule, violation
    assert snapshot(tmp_path) == before


def test_wrong_configured_encoding_names_the_line(tmp_path: Path) -> None:
    frame = text_frame()
    frame.loc[2, "patient_id"] = "Pé"
    path = _write(tmp_path, frame.to_csv(index=False).encode("latin-1"))
    with pytest.raises(DataContractError) as caught:
        load_site_frame(site_config(CsvSource(path=path, encoding="utf-8")))
    (violation,) = caught.value.violations
    assert violation.row == 3 and "line 4 is not valid utf-8" in violation.rule


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataContractError) as caught:
        load_site_frame(site_config(CsvSource(path=tmp_path / "nowhere.csv")))
    assert caught.value.violations[0].source == str(tmp_path / "nowhere.csv")
    assert caught.value.violations[0].rule == "file not found"


@pytest.mark.parametrize("damage", ["truncated", "not parquet", "empty"])
def test_damaged_parquet_is_refused_with_a_clear_error(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "patients.parquet"
    example_contract_frame(40, seed=1).to_parquet(path, index=False)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "not parquet": b"patient_id,age\nP1,60\n",
                      "empty": b""}[damage])
    before = snapshot(tmp_path)
    with pytest.raises(DataContractError) as caught:
        load_site_frame(site_config(ParquetSource(path=path)))
    (violation,) = caught.value.violations
    assert violation.source == str(path) and violation.row is None
    assert ("truncated, corrupt or not Parquet" in violation.rule) or violation.rule == "the file is empty"
    assert snapshot(tmp_path) == before


def test_parquet_without_rows(tmp_path: Path) -> None:
    path = tmp_path / "patients.parquet"
    example_contract_frame(5).iloc[:0].to_parquet(path, index=False)
    with pytest.raises(DataContractError, match="no patient rows"):
        load_site_frame(site_config(ParquetSource(path=path)))


def test_every_violation_is_reported_in_one_pass(tmp_path: Path) -> None:
    frame = _set_many((2, "sex", "W"), (5, "regimen", "XELOX"), (9, "age_years", "old"))(text_frame())
    frame.to_csv(tmp_path / "patients.csv", index=False)
    with pytest.raises(DataContractError) as caught:
        load_site_frame(site_config(CsvSource(path=tmp_path / "patients.csv")))
    assert sorted((v.row, v.column) for v in caught.value.violations) == [(2, "sex"), (5, "regimen"), (9, "age_years")]


def test_decode_text_prefers_utf8() -> None:
    assert decode_text("é".encode(), "x") == "é"
    assert decode_text("é".encode("latin-1"), "x") == "é"
    assert decode_text(b"\xef\xbb\xbfa", "x") == "a"


def test_mapping_and_contract_problems_come_together_in_site_column_names(tmp_path: Path) -> None:
    frame = text_frame().rename(columns={"tumour_size_mm": "size_cm", "regimen": "regimen_name"})
    frame = frame.assign(size_cm="")
    frame.loc[1, "size_cm"] = "45"  # 450 mm: over the contract's 400 mm
    frame.loc[4, "regimen_name"] = "XELOX"
    frame.loc[4, "pfs_days"] = "-1"  # the same row, another column: still reported
    frame.to_csv(tmp_path / "patients.csv", index=False)
    mapping = ColumnMapping(columns={"size_cm": "tumour_size_mm", "regimen_name": "regimen"},
                            units={"tumour_size_mm": "cm"})
    with pytest.raises(DataContractError) as caught:
        load_site_frame(site_config(CsvSource(path=tmp_path / "patients.csv"), mapping=mapping))
    found = [(v.row, v.column) for v in caught.value.violations]
    assert found == [(2, "size_cm"), (5, "regimen_name"), (5, "pfs_days")]
