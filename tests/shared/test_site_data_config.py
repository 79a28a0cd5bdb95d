"""SiteConfig files: TOML/JSON, paths relative to the file, errors naming the file, field and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.site_config import ColumnMapping, CsvSource, OmopSource, ParquetSource, SiteConfig, SiteConfigError

GOOD_TOML = """
site_id = "st-olav"
display_name = "St Olav University Hospital"
target_epsilon = 8.0
modalities_absent = ["genomic"]

[data]
path = "export/patients.csv"

[mapping.columns]
ecog_ps = "ecog"

[mapping.codes.regimen]
FOLFOX4 = "FOLFOX"

[mapping.units]
tumour_size_mm = "cm"
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_toml_config_with_defaults_and_relative_paths(tmp_path: Path) -> None:
    config = SiteConfig.from_file(write(tmp_path, "site.toml", GOOD_TOML))
    assert isinstance(config.data, CsvSource)
    assert config.data.path == tmp_path.resolve() / "export" / "patients.csv"
    assert config.data.encoding == "auto" and config.data.delimiter == ","
    assert config.mapping == ColumnMapping(columns={"ecog_ps": "ecog"}, codes={"regimen": {"FOLFOX4": "FOLFOX"}},
                                           units={"tumour_size_mm": "cm"})
    assert (config.target_epsilon, config.target_delta, config.min_cell_size) == (8.0, None, 10)
    assert config.modalities_absent == ["genomic"]
    assert config.state_dir == tmp_path.resolve() / "state"


def test_json_config_with_parquet_and_omop(tmp_path: Path) -> None:
    base = {"site_id": "a", "display_name": "A", "target_epsilon": 1.0, "target_delta": 1e-5, "min_cell_size": 5}
    parquet = SiteConfig.from_file(write(tmp_path, "p.json", json.dumps({**base, "data": {"path": "x.parquet"}})))
    assert isinstance(parquet.data, ParquetSource) and parquet.data.path == tmp_path.resolve() / "x.parquet"
    omop = SiteConfig.from_file(write(tmp_path, "o.json", json.dumps(
        {**base, "data": {"format": "omop", "url": "duckdb:///cdm/omop.duckdb", "cdm_schema": "cdm"}})))
    assert isinstance(omop.data, OmopSource) and omop.data.cdm_schema == "cdm"
    assert omop.data.url == f"duckdb:///{tmp_path.resolve() / 'cdm' / 'omop.duckdb'}"
    postgres = SiteConfig.from_file(write(tmp_path, "pg.json", json.dumps(
        {**base, "data": {"url": "postgresql+psycopg://steward:secret@db.local/cdm"}})))
    assert postgres.data.url == "postgresql+psycopg://steward:secret@db.local/cdm"
    assert "secret" not in postgres.data.describe()


def test_absolute_paths_stay_as_written(tmp_path: Path) -> None:
    elsewhere = tmp_path / "data" / "patients.csv"
    text = GOOD_TOML.replace('path = "export/patients.csv"', f'path = "{elsewhere}"')
    assert SiteConfig.from_file(write(tmp_path / "..", "abs.toml", text)).data.path == elsewhere


BAD_FIELDS = [
    # (what is wrong, TOML text, the field named, words saying what is allowed)
    ("no epsilon", GOOD_TOML.replace("target_epsilon = 8.0\n", ""), "target_epsilon", "Field required"),
    ("epsilon not positive", GOOD_TOML.replace("8.0", "0"), "target_epsilon", "greater than 0"),
    ("delta of 1", GOOD_TOML + "\n", "target_delta", "less than 1"),
    ("unknown unit", GOOD_TOML.replace('tumour_size_mm = "cm"', 'tumour_size_mm = "inch"'), "mapping.units",
     "allowed: mm, cm"),
    ("unit on a unitless column", GOOD_TOML.replace('tumour_size_mm = "cm"', 'ecog = "points"'), "mapping.units",
     "takes no unit"),
    ("rename to a non-contract column", GOOD_TOML.replace('ecog_ps = "ecog"', 'ecog_ps = "performance"'),
     "mapping.columns", "not a contract column"),
    ("code mapped to a non-contract code", GOOD_TOML.replace('FOLFOX4 = "FOLFOX"', 'FOLFOX4 = "FOLFOX-4"'),
     "mapping.codes", "allowed: AC-T"),
    ("unknown modality", GOOD_TOML.replace('["genomic"]', '["radiomics"]'), "modalities_absent",
     "allowed: pathology, imaging, genomic"),
    ("clinical declared absent", GOOD_TOML.replace('["genomic"]', '["clinical"]'), "modalities_absent",
     "clinical fields are required"),
    ("bad site id", GOOD_TOML.replace('"st-olav"', '"St Olav"'), "site_id", "pattern"),
    ("unknown format", GOOD_TOML.replace('path = "export/patients.csv"', 'format = "xlsx"\npath = "a.xlsx"'),
     "data", "expected tags: 'csv', 'parquet', 'omop'"),
    ("suffix says nothing", GOOD_TOML.replace("patients.csv", "patients.dat"), "data.format", "set format"),
    ("unknown field", GOOD_TOML.replace("target_epsilon", "epsilon"), "epsilon", "Extra inputs"),
    ("bad encoding", GOOD_TOML.replace('path = "export/patients.csv"',
                                       'path = "export/patients.csv"\nencoding = "cp1252"'),
     "data.csv.encoding", "'auto', 'utf-8', 'utf-8-sig' or 'latin-1'"),
]


@pytest.mark.parametrize("case, text, field, allowed", BAD_FIELDS, ids=[b[0] for b in BAD_FIELDS])
def test_errors_name_file_field_and_what_is_allowed(tmp_path: Path, case: str, text: str, field: str,
                                                    allowed: str) -> None:
    if case == "delta of 1":
        text = text.replace("target_epsilon = 8.0", "target_epsilon = 8.0\ntarget_delta = 1.0")
    path = write(tmp_path, "site.toml", text)
    with pytest.raises(SiteConfigError) as caught:
        SiteConfig.from_file(path)
    message = str(caught.value)
    assert str(path) in message and field in message and allowed in message, message


def test_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(SiteConfigError, match="site config file not found"):
        SiteConfig.from_file(tmp_path / "missing.toml")
    with pytest.raises(SiteConfigError, match=r"not valid TOML.*line 2"):
        SiteConfig.from_file(write(tmp_path, "broken.toml", 'site_id = "a"\ndisplay_name = \n'))
    with pytest.raises(SiteConfigError, match="not valid JSON"):
        SiteConfig.from_file(write(tmp_path, "broken.json", "{"))
    with pytest.raises(SiteConfigError, match=r"\.toml or \.json"):
        SiteConfig.from_file(write(tmp_path, "site.yaml", "site_id: a"))


def test_duplicate_rename_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="'ecog_ps' and 'ps' both map to 'ecog'"):
        ColumnMapping(columns={"ecog_ps": "ecog", "ps": "ecog"})
