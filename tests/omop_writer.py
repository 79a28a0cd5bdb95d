"""A contract frame written as an OMOP CDM v5.4 DuckDB database, for the OMOP reader's tests.

Test-only: a site reads its OMOP database (client/data/omop.py) and never writes one. The file appears complete
or not at all: it is built under a temporary name and renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from client.data.omop import (
    CONDITION_OCCURRENCE_ID_FIELD,
    DAYS_PER_YEAR,
    EHR_RECORD,
    HISPANIC,
    NOT_HISPANIC,
    OMOP_CONCEPTS,
    TREATMENT_REGIMEN,
)
from shared.contract import validate_frame
from shared.site_config import BOOLEAN_COLUMNS, CATEGORY_CODES

_WRITE_UNIT = {"tumour_size_mm": 8588, "mtv_ml": 8587, "ki67_percent": 8554, "pdl1_tps_percent": 8554}

# The CDM v5.4 columns of the tables the reader reads, with their types. value_as_number is
# DOUBLE rather than the DDL's NUMERIC: DuckDB's default NUMERIC is DECIMAL(18,3) and would round values.
CDM_TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "person": (("person_id", "BIGINT"), ("gender_concept_id", "INTEGER"), ("year_of_birth", "INTEGER"),
               ("month_of_birth", "INTEGER"), ("day_of_birth", "INTEGER"), ("birth_datetime", "TIMESTAMP"),
               ("race_concept_id", "INTEGER"), ("ethnicity_concept_id", "INTEGER"), ("location_id", "BIGINT"),
               ("provider_id", "BIGINT"), ("care_site_id", "BIGINT"), ("person_source_value", "VARCHAR"),
               ("gender_source_value", "VARCHAR"), ("gender_source_concept_id", "INTEGER"),
               ("race_source_value", "VARCHAR"), ("race_source_concept_id", "INTEGER"),
               ("ethnicity_source_value", "VARCHAR"), ("ethnicity_source_concept_id", "INTEGER")),
    "condition_occurrence": (
        ("condition_occurrence_id", "BIGINT"), ("person_id", "BIGINT"), ("condition_concept_id", "INTEGER"),
        ("condition_start_date", "DATE"), ("condition_start_datetime", "TIMESTAMP"), ("condition_end_date", "DATE"),
        ("condition_end_datetime", "TIMESTAMP"), ("condition_type_concept_id", "INTEGER"),
        ("condition_status_concept_id", "INTEGER"), ("stop_reason", "VARCHAR"), ("provider_id", "BIGINT"),
        ("visit_occurrence_id", "BIGINT"), ("visit_detail_id", "BIGINT"), ("condition_source_value", "VARCHAR"),
        ("condition_source_concept_id", "INTEGER"), ("condition_status_source_value", "VARCHAR")),
    "measurement": (
        ("measurement_id", "BIGINT"), ("person_id", "BIGINT"), ("measurement_concept_id", "INTEGER"),
        ("measurement_date", "DATE"), ("measurement_datetime", "TIMESTAMP"), ("measurement_time", "VARCHAR"),
        ("measurement_type_concept_id", "INTEGER"), ("operator_concept_id", "INTEGER"),
        ("value_as_number", "DOUBLE"), ("value_as_concept_id", "INTEGER"), ("unit_concept_id", "INTEGER"),
        ("range_low", "DOUBLE"), ("range_high", "DOUBLE"), ("provider_id", "BIGINT"),
        ("visit_occurrence_id", "BIGINT"), ("visit_detail_id", "BIGINT"), ("measurement_source_value", "VARCHAR"),
        ("measurement_source_concept_id", "INTEGER"), ("unit_source_value", "VARCHAR"),
        ("unit_source_concept_id", "INTEGER"), ("value_source_value", "VARCHAR"),
        ("measurement_event_id", "BIGINT"), ("meas_event_field_concept_id", "INTEGER")),
    "observation": (
        ("observation_id", "BIGINT"), ("person_id", "BIGINT"), ("observation_concept_id", "INTEGER"),
        ("observation_date", "DATE"), ("observation_datetime", "TIMESTAMP"),
        ("observation_type_concept_id", "INTEGER"), ("value_as_number", "DOUBLE"), ("value_as_string", "VARCHAR"),
        ("value_as_concept_id", "INTEGER"), ("qualifier_concept_id", "INTEGER"), ("unit_concept_id", "INTEGER"),
        ("provider_id", "BIGINT"), ("visit_occurrence_id", "BIGINT"), ("visit_detail_id", "BIGINT"),
        ("observation_source_value", "VARCHAR"), ("observation_source_concept_id", "INTEGER"),
        ("unit_source_value", "VARCHAR"), ("qualifier_source_value", "VARCHAR"), ("value_source_value", "VARCHAR"),
        ("observation_event_id", "BIGINT"), ("obs_event_field_concept_id", "INTEGER")),
    "death": (("person_id", "BIGINT"), ("death_date", "DATE"), ("death_datetime", "TIMESTAMP"),
              ("death_type_concept_id", "INTEGER"), ("cause_concept_id", "INTEGER"),
              ("cause_source_value", "VARCHAR"), ("cause_source_concept_id", "INTEGER")),
    "episode": (("episode_id", "BIGINT"), ("person_id", "BIGINT"), ("episode_concept_id", "INTEGER"),
                ("episode_start_date", "DATE"), ("episode_start_datetime", "TIMESTAMP"),
                ("episode_end_date", "DATE"), ("episode_end_datetime", "TIMESTAMP"),
                ("episode_parent_id", "BIGINT"), ("episode_number", "INTEGER"),
                ("episode_object_concept_id", "INTEGER"), ("episode_type_concept_id", "INTEGER"),
                ("episode_source_value", "VARCHAR"), ("episode_source_concept_id", "INTEGER")),
    "episode_event": (("episode_id", "BIGINT"), ("event_id", "BIGINT"),
                      ("episode_event_field_concept_id", "INTEGER")),
}

_INDEX_DATE = pd.Timestamp("2020-01-01 09:00:00")  # every written regimen starts here; only differences matter


def write_omop_duckdb(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write a contract frame as an OMOP CDM v5.4 DuckDB file that read_omop turns back into the same frame.

    The file appears complete or not at all: it is built under a temporary name and renamed into place.
    """
    path = Path(path)
    validate_frame(frame, "frame given to write_omop_duckdb")
    tables = _omop_rows(frame.reset_index(drop=True))
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with contextlib.closing(duckdb.connect(str(temporary))) as connection:
            for table, columns in CDM_TABLES.items():
                connection.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {t}' for c, t in columns)})")
                rows = tables[table]
                if len(rows):
                    connection.register("incoming", rows)
                    connection.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming")
                    connection.unregister("incoming")
        os.replace(temporary, path)
    finally:
        for leftover in (temporary, temporary.with_name(temporary.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return path


def _omop_rows(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    first = {}
    for concept in OMOP_CONCEPTS:  # the first concept listed for a meaning is the one written
        first.setdefault((concept.role, concept.column, concept.value), concept.concept_id)
    measured = {c.column: c.concept_id for c in OMOP_CONCEPTS if c.role == "measurement"}
    n = len(frame)
    person_id = np.arange(1, n + 1)
    start = pd.Series([_INDEX_DATE] * n).astype("datetime64[us]")
    birth = (start - pd.to_timedelta(frame["age_years"].astype(float) * DAYS_PER_YEAR, unit="D")).dt.round("us")
    race = frame["race_ethnicity"]
    tables: dict[str, pd.DataFrame] = {}
    tables["person"] = pd.DataFrame({
        "person_id": person_id,
        "gender_concept_id": [first[("gender", "sex", s)] for s in frame["sex"]],
        "year_of_birth": birth.dt.year, "month_of_birth": birth.dt.month, "day_of_birth": birth.dt.day,
        "birth_datetime": birth,
        "race_concept_id": [0 if r in ("hispanic", "unknown") else first[("race", "race_ethnicity", r)]
                            for r in race],
        "ethnicity_concept_id": [HISPANIC if r == "hispanic" else 0 if r == "unknown" else NOT_HISPANIC
                                 for r in race],
        "person_source_value": frame["patient_id"].astype(str), "gender_source_value": frame["sex"],
        "race_source_value": race})
    tables["condition_occurrence"] = pd.DataFrame({
        "condition_occurrence_id": person_id, "person_id": person_id,
        "condition_concept_id": [first[("diagnosis", "histology", h)] for h in frame["histology"]],
        "condition_start_date": (start - pd.Timedelta(days=30)).dt.date,
        "condition_type_concept_id": EHR_RECORD, "condition_source_value": frame["histology"]})
    tables["episode"] = pd.DataFrame({
        "episode_id": person_id, "person_id": person_id, "episode_concept_id": TREATMENT_REGIMEN,
        "episode_start_date": start.dt.date, "episode_start_datetime": start,
        "episode_number": frame["line_of_therapy"].astype(int), "episode_object_concept_id": 0,
        "episode_type_concept_id": EHR_RECORD, "episode_source_value": frame["regimen"]})
    tables["episode_event"] = pd.DataFrame({"episode_id": person_id, "event_id": person_id,
                                            "episode_event_field_concept_id": CONDITION_OCCURRENCE_ID_FIELD})

    measurements, observations, deaths = [], [], []
    for i, record in enumerate(frame.to_dict(orient="records")):
        pid, index_time = int(person_id[i]), start.iloc[i]
        for column, concept_id in measured.items():
            value = record[column]
            if value is None or (isinstance(value, float) and np.isnan(value)):
                continue
            row = {"person_id": pid, "measurement_concept_id": concept_id, "measurement_date": index_time.date(),
                   "measurement_datetime": index_time, "measurement_type_concept_id": EHR_RECORD,
                   "unit_concept_id": _WRITE_UNIT.get(column)}
            if column in BOOLEAN_COLUMNS:
                row["value_as_concept_id"] = first[("value", "*flag", "true" if value else "false")]
            elif column in CATEGORY_CODES:
                row["value_as_concept_id"] = first[("value", column, value)]
            else:
                row["value_as_number"] = float(value)
            measurements.append(row)

        def observe(concept_id: int, at: pd.Timestamp, **values: object) -> None:
            observations.append({"person_id": pid, "observation_concept_id": concept_id, "observation_date": at.date(),
                                 "observation_datetime": at, "observation_type_concept_id": EHR_RECORD, **values})

        observe(first[("observation", "prior_lines", None)], index_time, value_as_number=float(record["prior_lines"]))
        if record["best_response"] is not None:
            observe(first[("observation", "best_response", None)], index_time + pd.Timedelta(days=1),
                    value_as_concept_id=first[("value", "best_response", record["best_response"])])
        if not pd.isna(record["pfs_days"]):
            event = "true" if record["pfs_event"] else "false"
            observe(first[("observation", "pfs_event", event)], _after(index_time, record["pfs_days"]))
        if not pd.isna(record["os_days"]):
            if record["os_event"]:
                at = _after(index_time, record["os_days"])
                deaths.append({"person_id": pid, "death_date": at.date(), "death_datetime": at,
                               "death_type_concept_id": EHR_RECORD})
            else:
                observe(first[("observation", "os_event", "false")], _after(index_time, record["os_days"]))
    for table, rows, id_column in (("measurement", measurements, "measurement_id"),
                                   ("observation", observations, "observation_id"), ("death", deaths, None)):
        table_frame = pd.DataFrame(rows)
        if id_column is not None and len(table_frame):
            table_frame.insert(0, id_column, np.arange(1, len(table_frame) + 1))
        tables[table] = table_frame
    return tables


def _after(moment: pd.Timestamp, days: float) -> pd.Timestamp:
    return (moment + pd.to_timedelta(float(days), unit="D")).round("us")
