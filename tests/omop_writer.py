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

# The CDM v5.4 columns of the tables the reader reads, in the DDL's order; each column's type follows from its
# name (_cdm_type).
CDM_COLUMNS: dict[str, tuple[str, ...]] = {
    "person": tuple("""person_id gender_concept_id year_of_birth month_of_birth day_of_birth birth_datetime
                       race_concept_id ethnicity_concept_id location_id provider_id care_site_id
                       person_source_value gender_source_value gender_source_concept_id race_source_value
                       race_source_concept_id ethnicity_source_value ethnicity_source_concept_id""".split()),
    "condition_occurrence": tuple("""condition_occurrence_id person_id condition_concept_id
                                     condition_start_date condition_start_datetime condition_end_date
                                     condition_end_datetime condition_type_concept_id
                                     condition_status_concept_id stop_reason provider_id visit_occurrence_id
                                     visit_detail_id condition_source_value condition_source_concept_id
                                     condition_status_source_value""".split()),
    "measurement": tuple("""measurement_id person_id measurement_concept_id measurement_date
                            measurement_datetime measurement_time measurement_type_concept_id
                            operator_concept_id value_as_number value_as_concept_id unit_concept_id range_low
                            range_high provider_id visit_occurrence_id visit_detail_id
                            measurement_source_value measurement_source_concept_id unit_source_value
                            unit_source_concept_id value_source_value measurement_event_id
                            meas_event_field_concept_id""".split()),
    "observation": tuple("""observation_id person_id observation_concept_id observation_date
                            observation_datetime observation_type_concept_id value_as_number value_as_string
                            value_as_concept_id qualifier_concept_id unit_concept_id provider_id
                            visit_occurrence_id visit_detail_id observation_source_value
                            observation_source_concept_id unit_source_value qualifier_source_value
                            value_source_value observation_event_id obs_event_field_concept_id""".split()),
    "death": tuple("""person_id death_date death_datetime death_type_concept_id cause_concept_id
                      cause_source_value cause_source_concept_id""".split()),
    "episode": tuple("""episode_id person_id episode_concept_id episode_start_date episode_start_datetime
                        episode_end_date episode_end_datetime episode_parent_id episode_number
                        episode_object_concept_id episode_type_concept_id episode_source_value
                        episode_source_concept_id""".split()),
    "episode_event": tuple("""episode_id event_id episode_event_field_concept_id""".split()),
}


def _cdm_type(column: str) -> str:
    """The CDM's type of a column, by its naming convention. value_as_number and the ranges are DOUBLE rather than
    the DDL's NUMERIC: DuckDB's default NUMERIC is DECIMAL(18,3) and would round values."""
    if column in ("value_as_number", "range_low", "range_high"):
        return "DOUBLE"
    for suffixes, kind in ((("_datetime",), "TIMESTAMP"), (("_date",), "DATE"),
                           (("_concept_id", "_of_birth", "_number"), "INTEGER"), (("_id",), "BIGINT")):
        if column.endswith(suffixes):
            return kind
    return "VARCHAR"


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
            for table, columns in CDM_COLUMNS.items():
                connection.execute(f"CREATE TABLE {table} ({', '.join(f'{c} {_cdm_type(c)}' for c in columns)})")
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
