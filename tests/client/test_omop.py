"""OMOP CDM sites: a site's OMOP database yields exactly the contract frame of its CSV export."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from client.data.loader import load_site_frame
from client.data.omop import OMOP_CONCEPTS, read_omop
from shared.contract import DataContractError
from shared.harmonisation import summarise_site
from shared.site_config import ColumnMapping, CsvSource, OmopSource, SiteConfig
from tests.client.test_site_data_examples import example_contract_frame
from tests.omop_writer import write_omop_duckdb


def omop_config(path: Path, mapping: ColumnMapping | None = None) -> SiteConfig:
    return SiteConfig(site_id="omop-site", display_name="OMOP site", target_epsilon=2.0, mapping=mapping,
                      data=OmopSource(url=f"duckdb:///{path}"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, Path]:
    """One site's contract frame and its OMOP database, written once for the module."""
    frame = example_contract_frame(80, seed=11)
    path = write_omop_duckdb(frame, tmp_path_factory.mktemp("omop") / "site.duckdb")
    return frame, path


def copy_of(database: Path, folder: Path, *statements: str) -> Path:
    """A copy of the site database with some SQL applied (a site's real-world quirks)."""
    copy = folder / "copy.duckdb"
    copy.write_bytes(database.read_bytes())
    with duckdb.connect(str(copy)) as connection:
        for statement in statements:
            connection.execute(statement)
    return copy


def test_omop_database_round_trips_the_csv_export(site: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    frame, database = site
    frame.to_csv(tmp_path / "export.csv", index=False)
    from_csv = load_site_frame(SiteConfig(site_id="csv-site", display_name="CSV", target_epsilon=2.0,
                                          data=CsvSource(path=tmp_path / "export.csv")))
    from_omop = load_site_frame(omop_config(database))
    pd.testing.assert_frame_equal(from_omop, from_csv)
    pd.testing.assert_frame_equal(from_omop, frame)
    assert summarise_site(from_omop) == summarise_site(from_csv)  # hence the same shared feature statistics


def test_reading_never_changes_the_database(site: tuple[pd.DataFrame, Path]) -> None:
    _, database = site
    before = database.read_bytes()
    read_omop(f"duckdb:///{database}")
    assert database.read_bytes() == before


def test_a_missing_table_is_named(site: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    database = copy_of(site[1], tmp_path, "DROP TABLE episode_event", "DROP TABLE death")
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(DataContractError) as caught:
        load_site_frame(omop_config(database))
    tables = [v.source.rsplit("table ", 1)[-1] for v in caught.value.violations]
    assert tables == ["death", "episode_event"]
    assert all("is missing from schema 'main'" in v.rule for v in caught.value.violations)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_missing_column_is_named(site: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    database = copy_of(site[1], tmp_path, "ALTER TABLE measurement DROP COLUMN value_as_concept_id")
    with pytest.raises(DataContractError) as caught:
        read_omop(f"duckdb:///{database}")
    (violation,) = caught.value.violations
    assert violation.source.endswith("table measurement") and violation.column == "value_as_concept_id"


def test_a_missing_database_file_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(DataContractError, match="database file not found"):
        read_omop(f"duckdb:///{tmp_path / 'none.duckdb'}")
    assert list(tmp_path.iterdir()) == []


def test_schema_other_than_the_default(site: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    frame, _ = site
    database = tmp_path / "schemas.duckdb"
    write_omop_duckdb(frame, tmp_path / "plain.duckdb")
    with duckdb.connect(str(database)) as connection:
        connection.execute(f"ATTACH '{tmp_path / 'plain.duckdb'}' AS plain (READ_ONLY)")
        connection.execute("CREATE SCHEMA cdm")
        for (table,) in connection.execute("SELECT table_name FROM information_schema.tables "
                                           "WHERE table_catalog = 'plain'").fetchall():
            connection.execute(f"CREATE TABLE cdm.{table} AS SELECT * FROM plain.main.{table}")
    config = SiteConfig(site_id="s", display_name="S", target_epsilon=1.0,
                        data=OmopSource(url=f"duckdb:///{database}", cdm_schema="cdm"))
    pd.testing.assert_frame_equal(load_site_frame(config), frame)


def test_unknown_concepts_are_reported_by_person_and_can_be_mapped(site: tuple[pd.DataFrame, Path],
                                                                   tmp_path: Path) -> None:
    frame, database = site
    white = frame.index[frame["race_ethnicity"] == "white"][0] + 1  # person_id = row + 1
    database = copy_of(database, tmp_path, f"UPDATE person SET race_concept_id = 4212311 WHERE person_id = {white}")
    with pytest.raises(DataContractError) as caught:
        load_site_frame(omop_config(database))
    (violation,) = caught.value.violations
    assert violation.source.endswith(f"person_id {white}") and violation.column == "race_ethnicity"
    assert violation.value == "omop:4212311" and "unknown code" in violation.rule
    mapped = load_site_frame(omop_config(database, ColumnMapping(
        codes={"race_ethnicity": {"omop:4212311": "white"}})))
    pd.testing.assert_frame_equal(mapped, frame)


def test_site_concepts_extend_the_concept_map(site: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    frame, database = site
    tmb = next(c.concept_id for c in OMOP_CONCEPTS if c.column == "tmb_mut_per_mb")
    database = copy_of(database, tmp_path,
                       f"UPDATE measurement SET measurement_concept_id = 3000001 WHERE measurement_concept_id = {tmb}")
    assert load_site_frame(omop_config(database))["tmb_mut_per_mb"].isna().all()
    mapped = load_site_frame(omop_config(database, ColumnMapping(columns={"omop:3000001": "tmb_mut_per_mb"})))
    pd.testing.assert_frame_equal(mapped, frame)


def test_site_regimen_names_go_through_the_code_map(site: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    frame, database = site
    database = copy_of(database, tmp_path,
                       "UPDATE episode SET episode_source_value = 'mFOLFOX6' WHERE episode_source_value = 'FOLFOX'")
    mapped = load_site_frame(omop_config(database, ColumnMapping(codes={"regimen": {"mFOLFOX6": "FOLFOX"}})))
    pd.testing.assert_frame_equal(mapped, frame)


def test_measurement_units(site: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    frame, database = site
    size = next(c.concept_id for c in OMOP_CONCEPTS if c.column == "tumour_size_mm")
    in_cm = copy_of(database, tmp_path, f"UPDATE measurement SET value_as_number = value_as_number / 10, "
                                        f"unit_concept_id = 8582 WHERE measurement_concept_id = {size}")
    pd.testing.assert_frame_equal(load_site_frame(omop_config(in_cm)), frame)
    in_ml = copy_of(database, tmp_path, f"UPDATE measurement SET unit_concept_id = 8587 "
                                        f"WHERE measurement_id = (SELECT min(measurement_id) FROM measurement "
                                        f"WHERE measurement_concept_id = {size})")
    with pytest.raises(DataContractError) as caught:
        load_site_frame(omop_config(in_ml))
    (violation,) = caught.value.violations
    assert "table measurement, measurement_id" in violation.source and violation.column == "unit_concept_id"
    assert "8587" in violation.rule and "8588" in violation.rule


def test_later_measurements_are_not_baseline(site: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    frame, database = site
    ecog = next(c.concept_id for c in OMOP_CONCEPTS if c.column == "ecog")
    database = copy_of(database, tmp_path,
                       f"INSERT INTO measurement (measurement_id, person_id, measurement_concept_id, measurement_date, "
                       f"measurement_datetime, value_as_number) SELECT 900000 + person_id, person_id, {ecog}, "
                       f"DATE '2020-03-01', TIMESTAMP '2020-03-01 10:00:00', 4 FROM person")
    pd.testing.assert_frame_equal(load_site_frame(omop_config(database)), frame)


def test_two_unlinked_diagnoses_are_refused(site: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    frame, database = site
    other = next(c.concept_id for c in OMOP_CONCEPTS if c.value == "breast_lobular")
    first = frame.index[frame["histology"] != "breast_lobular"][0] + 1
    database = copy_of(database, tmp_path,
                       f"INSERT INTO condition_occurrence (condition_occurrence_id, person_id, condition_concept_id, "
                       f"condition_start_date) VALUES (999001, {first}, {other}, DATE '2019-06-01')",
                       f"DELETE FROM episode_event WHERE episode_id = {first}")
    with pytest.raises(DataContractError) as caught:
        load_site_frame(omop_config(database))
    (violation,) = caught.value.violations
    assert violation.source.endswith(f"table condition_occurrence, person_id {first}")
    assert "several cancer diagnoses" in violation.rule and "episode_event" in violation.rule


def test_contract_violations_name_the_person(site: tuple[pd.DataFrame, Path], tmp_path: Path) -> None:
    _, database = site
    database = copy_of(database, tmp_path, "DELETE FROM episode WHERE person_id = 3")
    with pytest.raises(DataContractError) as caught:
        load_site_frame(omop_config(database))
    regimen = [v for v in caught.value.violations if v.column == "regimen"]
    assert regimen and regimen[0].source.endswith("person_id 3") and "required value is missing" in regimen[0].rule


def test_writer_leaves_nothing_when_the_frame_is_invalid(tmp_path: Path) -> None:
    frame = example_contract_frame(5)
    frame.loc[0, "regimen"] = "NOT-A-REGIMEN"
    with pytest.raises(DataContractError):
        write_omop_duckdb(frame, tmp_path / "bad.duckdb")
    assert list(tmp_path.iterdir()) == []


def test_concept_map_is_one_consistent_table() -> None:
    ids = [(c.role, c.column, c.concept_id) for c in OMOP_CONCEPTS]
    assert len(ids) == len(set(ids))
    assert all(c.concept_id >= 2_000_000_000 for c in OMOP_CONCEPTS if not c.standard)
    assert all(c.concept_id < 2_000_000_000 for c in OMOP_CONCEPTS if c.standard)
