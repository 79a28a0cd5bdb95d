"""Read a site's OMOP CDM v5.4 database (with the oncology extension) into contract-shaped rows.

Reading goes through SQLAlchemy, so the same code serves the embedded default (a DuckDB file via
duckdb-engine, opened read-only) and PostgreSQL. One patient row per person:

- person -> patient_id (person_source_value, else person_id), sex, race/ethnicity, birth;
- episode (Treatment Regimen, 32531) -> the index regimen: the person's earliest regimen episode. Its start
  is time zero for age, baseline features and outcomes; episode_number is the line of therapy; the regimen
  code is episode_source_value (else "omop:<episode_object_concept_id>"), translated by the site's code map;
- condition_occurrence -> histology and cancer type. When episode_event links the index regimen to a
  condition (field concept 1147127, condition_occurrence.condition_occurrence_id) that diagnosis is used;
  otherwise the person's one cancer diagnosis;
- measurement -> baseline features: per feature the latest value on or before the regimen start;
- observation, death -> best response, prior lines, PFS and OS (days from the regimen start).

OMOP_CONCEPTS is the project's whole concept map. `standard=True` rows carry the OMOP standard concept
ids as published in the OHDSI vocabularies (Athena); `standard=False` rows are OncoFed local concepts
(ids >= 2,000,000,000, the range OMOP reserves for local use) chosen where we did not know the standard id
or none exists; their vocabulary/code columns name the LOINC or ICD-O-3 code a site should map from. A site
extends the map through its ColumnMapping: `columns["omop:<id>"] = "<contract column>"` reads one more
measurement concept, `codes["<column>"]["omop:<id>"] = "<code>"` gives a concept's meaning. Concepts the
map does not know reach the mapping step as "omop:<id>" and are reported there as unknown codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pandas as pd
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict

from shared.contract import CONTRACT_COLUMNS, DataContractError, Violation
from shared.site_config import (
    BOOLEAN_COLUMNS,
    CATEGORY_CODES,
    DECIMAL_COLUMNS,
    INTEGER_COLUMNS,
    ColumnMapping,
)
from shared.vocabulary import HISTOLOGIES

TREATMENT_REGIMEN = 32531  # Episode vocabulary: "Treatment Regimen"
CONDITION_OCCURRENCE_ID_FIELD = 1147127  # CDM field concept: condition_occurrence.condition_occurrence_id
EHR_RECORD = 32817  # Type Concept: "EHR"
HISPANIC, NOT_HISPANIC = 38003563, 38003564  # Ethnicity vocabulary
DAYS_PER_YEAR = 365.25
_TIME_DECIMALS = 6  # OMOP keeps datetimes; ages and times come back at 1e-6 years/days


class OmopConcept(BaseModel):
    """One row of the concept map: what an OMOP concept means in the contract."""

    model_config = ConfigDict(frozen=True)

    concept_id: int
    role: Literal["gender", "race", "ethnicity", "diagnosis", "measurement", "observation", "value"]
    column: str  # the contract column it feeds
    value: str | None  # the contract code the concept stands for; None = the row's value is read
    vocabulary_id: str
    concept_code: str
    concept_name: str
    standard: bool  # True: OMOP standard id; False: OncoFed local id (>= 2e9), see module docstring


def _concept(concept_id: int, role: str, column: str, value: str | None, vocabulary_id: str, concept_code: str,
             concept_name: str, standard: bool = True) -> OmopConcept:
    return OmopConcept(concept_id=concept_id, role=role, column=column, value=value, vocabulary_id=vocabulary_id,
                       concept_code=concept_code, concept_name=concept_name, standard=standard)


_LOCAL = 2_000_000_000  # OncoFed local concepts: 2_000_001xxx
_HISTOLOGY_CODES = {  # histology -> (ICD-O-3 morphology-topography, name)
    "breast_ductal": ("8500/3-C50.9", "Infiltrating duct carcinoma of breast"),
    "breast_lobular": ("8520/3-C50.9", "Lobular carcinoma of breast"),
    "breast_other": ("8010/3-C50.9", "Carcinoma, NOS, of breast"),
    "nsclc_adenocarcinoma": ("8140/3-C34.9", "Adenocarcinoma of lung"),
    "nsclc_squamous": ("8070/3-C34.9", "Squamous cell carcinoma of lung"),
    "nsclc_other": ("8046/3-C34.9", "Non-small cell carcinoma of lung"),
    "crc_adenocarcinoma": ("8140/3-C18.9", "Adenocarcinoma of colon"),
    "crc_mucinous": ("8480/3-C18.9", "Mucinous adenocarcinoma of colon"),
    "ovarian_high_grade_serous": ("8461/3-C56.9", "High-grade serous carcinoma of ovary"),
    "ovarian_other": ("8010/3-C56.9", "Carcinoma, NOS, of ovary"),
}
_GENE_NAMES = {"tp53": "TP53", "kras": "KRAS", "egfr": "EGFR", "alk": "ALK", "braf": "BRAF", "brca1": "BRCA1",
               "brca2": "BRCA2", "pik3ca": "PIK3CA"}

OMOP_CONCEPTS: tuple[OmopConcept, ...] = (
    # person
    _concept(8532, "gender", "sex", "female", "Gender", "F", "FEMALE"),
    _concept(8507, "gender", "sex", "male", "Gender", "M", "MALE"),
    _concept(8527, "race", "race_ethnicity", "white", "Race", "5", "White"),
    _concept(8516, "race", "race_ethnicity", "black", "Race", "3", "Black or African American"),
    _concept(8515, "race", "race_ethnicity", "asian", "Race", "2", "Asian"),
    _concept(8522, "race", "race_ethnicity", "other", "Race", "7", "Other Race (legacy; written for 'other')"),
    _concept(8657, "race", "race_ethnicity", "other", "Race", "1", "American Indian or Alaska Native"),
    _concept(8557, "race", "race_ethnicity", "other", "Race", "4", "Native Hawaiian or Other Pacific Islander"),
    _concept(0, "race", "race_ethnicity", "unknown", "None", "0", "No matching concept"),
    _concept(HISPANIC, "ethnicity", "race_ethnicity", "hispanic", "Ethnicity", "Hispanic", "Hispanic or Latino"),
    # diagnoses: local ids, one per contract histology, coded by ICD-O-3
    *(_concept(_LOCAL + 1001 + i, "diagnosis", "histology", histology, "ICDO3", code, name, standard=False)
      for i, (histology, (code, name)) in enumerate(_HISTOLOGY_CODES.items())),
    # baseline measurements
    _concept(36305384, "measurement", "ecog", None, "LOINC", "89247-1", "ECOG Performance Status score"),
    _concept(3022698, "measurement", "stage_group", None, "LOINC", "21908-9", "Stage group.clinical Cancer"),
    _concept(3004390, "measurement", "er_positive", None, "LOINC", "16112-5",
             "Estrogen receptor [Interpretation] in Tissue"),
    _concept(3003289, "measurement", "pr_positive", None, "LOINC", "16113-3",
             "Progesterone receptor [Interpretation] in Tissue"),
    _concept(3048223, "measurement", "her2_positive", None, "LOINC", "48676-1", "HER2 [Interpretation] in Tissue"),
    _concept(_LOCAL + 1101, "measurement", "charlson_index", None, "OncoFed", "charlson",
             "Charlson comorbidity index (cancer excluded)", standard=False),
    _concept(_LOCAL + 1102, "measurement", "grade", None, "LOINC", "33732-9",
             "Histology grade [Identifier] in Cancer specimen", standard=False),
    _concept(_LOCAL + 1103, "measurement", "ki67_percent", None, "OncoFed", "ki67",
             "Ki-67 positive tumour cells, percent", standard=False),
    _concept(_LOCAL + 1104, "measurement", "msi_high", None, "LOINC", "81695-9",
             "Microsatellite instability [Interpretation] in Cancer specimen (positive = MSI-high)",
             standard=False),
    _concept(_LOCAL + 1105, "measurement", "pdl1_tps_percent", None, "OncoFed", "pdl1-tps",
             "PD-L1 tumour proportion score, percent", standard=False),
    _concept(_LOCAL + 1106, "measurement", "tumour_size_mm", None, "LOINC", "21889-1", "Size Tumor",
             standard=False),
    _concept(_LOCAL + 1107, "measurement", "suv_max", None, "OncoFed", "suv-max", "PET/CT SUVmax", standard=False),
    _concept(_LOCAL + 1108, "measurement", "mtv_ml", None, "OncoFed", "mtv", "PET/CT metabolic tumour volume",
             standard=False),
    _concept(_LOCAL + 1109, "measurement", "lesion_count", None, "OncoFed", "lesion-count",
             "Number of measurable lesions", standard=False),
    _concept(_LOCAL + 1110, "measurement", "tmb_mut_per_mb", None, "LOINC", "94076-7",
             "Mutations/Megabase [# Ratio] in Tumor", standard=False),
    *(_concept(_LOCAL + 1121 + i, "measurement", gene, None, "OncoFed", f"{gene}-status",
               f"{name} pathogenic alteration (positive = altered)", standard=False)
      for i, (gene, name) in enumerate(_GENE_NAMES.items())),
    # observations
    _concept(36305408, "observation", "best_response", None, "LOINC", "88040-1", "Response to cancer treatment"),
    _concept(_LOCAL + 1201, "observation", "prior_lines", None, "OncoFed", "prior-lines",
             "Prior lines of systemic therapy", standard=False),
    _concept(_LOCAL + 1202, "observation", "pfs_event", "true", "OncoFed", "pfs-event",
             "Progression or death (progression-free survival event)", standard=False),
    _concept(_LOCAL + 1203, "observation", "pfs_event", "false", "OncoFed", "pfs-censored",
             "Last tumour assessment without progression (PFS censored)", standard=False),
    _concept(_LOCAL + 1204, "observation", "os_event", "false", "OncoFed", "last-follow-up",
             "Last follow-up, alive (OS censored)", standard=False),
    # values (value_as_concept_id)
    _concept(9191, "value", "*flag", "true", "SNOMED", "10828004", "Positive"),
    _concept(9189, "value", "*flag", "false", "SNOMED", "260385009", "Negative"),
    *(_concept(_LOCAL + 1301 + i, "value", "stage_group", stage, "OncoFed", f"stage-{stage}",
               f"AJCC stage group {stage}", standard=False) for i, stage in enumerate(CATEGORY_CODES["stage_group"])),
    *(_concept(_LOCAL + 1311 + i, "value", "best_response", response, "OncoFed", f"recist-{response}",
               f"RECIST 1.1 best overall response {response}", standard=False)
      for i, response in enumerate(CATEGORY_CODES["best_response"])),
)

# unit_concept_id -> factor to the contract unit, per column; 0 or NULL means "already in the contract unit"
UNIT_CONCEPTS: dict[str, dict[int, float]] = {
    "tumour_size_mm": {8588: 1.0, 8582: 10.0},  # millimeter, centimeter
    "mtv_ml": {8587: 1.0},  # milliliter
    "ki67_percent": {8554: 1.0},  # percent
    "pdl1_tps_percent": {8554: 1.0},
}
# What the reader selects from each table; a database lacking any of these is refused up front.
_READ_COLUMNS: dict[str, tuple[str, ...]] = {
    "person": ("person_id", "gender_concept_id", "year_of_birth", "month_of_birth", "day_of_birth",
               "birth_datetime", "race_concept_id", "ethnicity_concept_id", "person_source_value"),
    "condition_occurrence": ("condition_occurrence_id", "person_id", "condition_concept_id"),
    "measurement": ("measurement_id", "person_id", "measurement_concept_id", "measurement_date",
                    "measurement_datetime", "value_as_number", "value_as_concept_id", "unit_concept_id"),
    "observation": ("observation_id", "person_id", "observation_concept_id", "observation_date",
                    "observation_datetime", "value_as_number", "value_as_concept_id"),
    "death": ("person_id", "death_date", "death_datetime"),
    "episode": ("episode_id", "person_id", "episode_concept_id", "episode_start_date", "episode_start_datetime",
                "episode_number", "episode_object_concept_id", "episode_source_value"),
    "episode_event": ("episode_id", "event_id", "episode_event_field_concept_id"),
}


# --- reading ---------------------------------------------------------------------------------------------

def read_omop(url: str, cdm_schema: str | None = None, mapping: ColumnMapping | None = None,
              label: str | None = None) -> pd.DataFrame:
    """Contract-shaped rows (indexed by person_id, in person_id order) from an OMOP CDM database.

    Values are raw: codes the concept map does not know appear as "omop:<concept_id>" for the site's code
    map (client.data.mapping) to translate or report. Structural problems (missing tables or columns, a
    person with two unlinked diagnoses, a measurement in a unit that is not allowed) raise DataContractError.
    """
    mapping = mapping or ColumnMapping()
    label = label or url
    engine = _open(url, label)
    try:
        with engine.connect() as connection:
            _check_tables(connection, cdm_schema, label)
            tables = _Tables(connection, cdm_schema)
            return _assemble(tables, mapping, label)
    except sa.exc.SQLAlchemyError as error:
        raise DataContractError([Violation(source=label, row=None, column=None,
                                           rule=f"cannot read the OMOP database: "
                                                f"{getattr(error, 'orig', None) or error}")]) from None
    finally:
        engine.dispose()


def _open(url: str, label: str) -> sa.Engine:
    connect_args = {}
    if url.startswith("duckdb:///"):
        target = url.removeprefix("duckdb:///")
        if target and not target.startswith(":") and not Path(target).is_file():
            raise DataContractError([Violation(source=label, row=None, column=None,
                                               rule=f"database file not found: {target}")])
        connect_args = {"read_only": True}  # reading must never create or change the site's database
    try:
        return sa.create_engine(url, connect_args=connect_args)
    except (sa.exc.ArgumentError, ImportError) as error:
        raise DataContractError([Violation(source=label, row=None, column=None,
                                           rule=f"cannot open the OMOP database URL: {error}")]) from None


def _check_tables(connection: sa.Connection, cdm_schema: str | None, label: str) -> None:
    schema = cdm_schema or connection.execute(sa.text("SELECT current_schema()")).scalar()
    rows = connection.execute(sa.text("SELECT table_name, column_name FROM information_schema.columns "
                                      "WHERE table_schema = :schema"), {"schema": schema}).fetchall()
    present: dict[str, set[str]] = {}
    for table_name, column_name in rows:
        present.setdefault(str(table_name).lower(), set()).add(str(column_name).lower())
    violations = []
    for table, columns in _READ_COLUMNS.items():
        if table not in present:
            violations.append(Violation(source=f"{label}, table {table}", row=None, column=None,
                                        rule=f"table '{table}' is missing from schema '{schema}'; OncoFed reads "
                                             f"the OMOP CDM v5.4 tables {', '.join(_READ_COLUMNS)}"))
            continue
        violations += [Violation(source=f"{label}, table {table}", row=None, column=column,
                                 rule="column is missing (OMOP CDM v5.4)")
                       for column in columns if column not in present[table]]
    if violations:
        raise DataContractError(violations)


class _Tables:
    """Reads the needed columns of one CDM table, optionally only rows whose concept is in a set."""

    def __init__(self, connection: sa.Connection, cdm_schema: str | None) -> None:
        self.connection = connection
        self.schema = cdm_schema

    def read(self, table: str, where_column: str | None = None, values: set[int] | None = None) -> pd.DataFrame:
        columns = _READ_COLUMNS[table]
        selectable = sa.table(table, *(sa.column(c) for c in columns), schema=self.schema)
        query = sa.select(*(selectable.c[c] for c in columns))
        if where_column is not None:
            if not values:
                return pd.DataFrame(columns=list(columns))
            query = query.where(selectable.c[where_column].in_(sorted(values)))
        return pd.read_sql(query, self.connection)


def _when(frame: pd.DataFrame, datetime_column: str, date_column: str) -> pd.Series:
    """A datetime per row: the *_datetime column where filled, else midnight of the *_date column."""
    moment = pd.to_datetime(frame[datetime_column], errors="coerce")
    return moment.fillna(pd.to_datetime(frame[date_column], errors="coerce")).astype("datetime64[us]")


def _days(later: pd.Series, earlier: pd.Series) -> pd.Series:
    return ((later - earlier) / pd.Timedelta(days=1)).round(_TIME_DECIMALS)


def _concept_key(concept_id: object) -> str | None:
    if concept_id is None or pd.isna(concept_id):
        return None
    return f"omop:{int(concept_id)}"


def _assemble(tables: _Tables, mapping: ColumnMapping, label: str) -> pd.DataFrame:
    violations: list[Violation] = []
    by_role: dict[str, list[OmopConcept]] = {}
    for concept in OMOP_CONCEPTS:
        by_role.setdefault(concept.role, []).append(concept)

    persons = tables.read("person").sort_values("person_id").drop_duplicates("person_id")
    person_ids = persons["person_id"].astype("int64").to_numpy()
    out = pd.DataFrame(index=pd.Index(person_ids, name="person_id"), columns=list(CONTRACT_COLUMNS), dtype=object)
    source_ids = persons["person_source_value"].where(persons["person_source_value"].notna(), None)
    out["patient_id"] = [str(s).strip() if s is not None and str(s).strip() else str(p)
                         for s, p in zip(source_ids, person_ids)]
    gender = {c.concept_id: c.value for c in by_role["gender"]}
    out["sex"] = [gender.get(int(g), _concept_key(g)) if pd.notna(g) else None
                  for g in persons["gender_concept_id"]]
    race = {c.concept_id: c.value for c in by_role["race"]}
    hispanic = {c.concept_id for c in by_role["ethnicity"]}
    out["race_ethnicity"] = [
        "hispanic" if pd.notna(e) and int(e) in hispanic
        else race.get(int(r) if pd.notna(r) else 0, _concept_key(r))
        for r, e in zip(persons["race_concept_id"], persons["ethnicity_concept_id"])]
    birth = pd.to_datetime(persons["birth_datetime"], errors="coerce").astype("datetime64[us]")
    from_parts = pd.to_datetime(pd.DataFrame({"year": persons["year_of_birth"],
                                              "month": persons["month_of_birth"].fillna(7),
                                              "day": persons["day_of_birth"].fillna(1)}), errors="coerce")
    birth = pd.Series(birth.fillna(from_parts.astype("datetime64[us]")).to_numpy(), index=person_ids)

    # the index regimen: earliest Treatment Regimen episode per person
    episodes = tables.read("episode", "episode_concept_id", {TREATMENT_REGIMEN})
    episodes["start"] = _when(episodes, "episode_start_datetime", "episode_start_date")
    episodes = (episodes.sort_values(["person_id", "start", "episode_id"])
                .drop_duplicates("person_id").set_index("person_id").reindex(person_ids))
    start = episodes["start"]
    out["regimen"] = [(str(v).strip() if isinstance(v, str) and v.strip() else _concept_key(o))
                      for v, o in zip(episodes["episode_source_value"], episodes["episode_object_concept_id"])]
    out["line_of_therapy"] = episodes["episode_number"].to_numpy()
    out["age_years"] = ((start - birth) / pd.Timedelta(days=DAYS_PER_YEAR)).round(_TIME_DECIMALS).to_numpy()

    _diagnoses(tables, mapping, by_role, episodes, out, label, violations)
    _measurements(tables, mapping, by_role, start, out, label, violations)
    _observations(tables, by_role, start, out)
    if violations:
        raise DataContractError(violations)
    return out.where(out.notna(), None)


def _diagnoses(tables: _Tables, mapping: ColumnMapping, by_role: dict[str, list[OmopConcept]],
               episodes: pd.DataFrame, out: pd.DataFrame, label: str, violations: list[Violation]) -> None:
    histology_of = {c.concept_id: c.value for c in by_role["diagnosis"]}
    for key, histology in mapping.codes.get("histology", {}).items():
        if key.startswith("omop:") and key[5:].isdigit():
            histology_of[int(key[5:])] = histology
    conditions = tables.read("condition_occurrence", "condition_concept_id", set(histology_of))
    conditions["histology"] = conditions["condition_concept_id"].map(lambda c: histology_of[int(c)])
    index_episodes = episodes["episode_id"].dropna().astype("int64")
    links = tables.read("episode_event", "episode_event_field_concept_id", {CONDITION_OCCURRENCE_ID_FIELD})
    links = links[links["episode_id"].isin(set(index_episodes))]
    linked_ids = set(links["event_id"].astype("int64"))
    cancer_type_of = {h: c.value for c, hs in HISTOLOGIES.items() for h in hs}
    for person_id, rows in conditions.groupby("person_id"):
        if person_id not in out.index:
            continue
        linked = rows[rows["condition_occurrence_id"].isin(linked_ids)]
        histologies = sorted(set((linked if len(linked) else rows)["histology"]))
        if len(histologies) > 1:
            violations.append(Violation(
                source=f"{label}, table condition_occurrence, person_id {person_id}", row=None,
                column="condition_concept_id",
                rule=f"several cancer diagnoses ({', '.join(histologies)}) and none linked to the index regimen; "
                     f"link the regimen episode to one through episode_event"))
            continue
        out.at[person_id, "histology"] = histologies[0]
        out.at[person_id, "cancer_type"] = cancer_type_of.get(histologies[0])


def _latest_before(frame: pd.DataFrame, start: pd.Series, id_column: str) -> pd.DataFrame:
    """Per (person, column) the latest row on or before the person's regimen start."""
    frame = frame[frame["person_id"].isin(start.index)]
    frame = frame[frame["when"] <= start.reindex(frame["person_id"]).to_numpy()]
    return frame.sort_values(["when", id_column]).drop_duplicates(["person_id", "column"], keep="last")


def _measurements(tables: _Tables, mapping: ColumnMapping, by_role: dict[str, list[OmopConcept]],
                  start: pd.Series, out: pd.DataFrame, label: str, violations: list[Violation]) -> None:
    column_of = {c.concept_id: c.column for c in by_role["measurement"]}
    for key, column in mapping.columns.items():
        if key.startswith("omop:") and key[5:].isdigit():
            column_of[int(key[5:])] = column
    values = {(c.column, c.concept_id): c.value for c in by_role["value"]}
    rows = tables.read("measurement", "measurement_concept_id", set(column_of))
    rows["column"] = rows["measurement_concept_id"].map(lambda c: column_of[int(c)])
    rows["when"] = _when(rows, "measurement_datetime", "measurement_date")
    for row in _latest_before(rows, start, "measurement_id").itertuples(index=False):
        column = row.column
        if column in BOOLEAN_COLUMNS or column in CATEGORY_CODES:
            concept = None if pd.isna(row.value_as_concept_id) else int(row.value_as_concept_id)
            flag_or_code = values.get(("*flag" if column in BOOLEAN_COLUMNS else column, concept))
            out.at[row.person_id, column] = flag_or_code or _concept_key(row.value_as_concept_id)
            continue
        is_number = column in INTEGER_COLUMNS or column in DECIMAL_COLUMNS
        if not is_number or pd.isna(row.value_as_number):
            continue
        unit = 0 if pd.isna(row.unit_concept_id) else int(row.unit_concept_id)
        factors = UNIT_CONCEPTS.get(column, {})
        if unit != 0 and unit not in factors:
            allowed = ", ".join(str(u) for u in factors) or "none"
            violations.append(Violation(source=f"{label}, table measurement, measurement_id {row.measurement_id}",
                                        row=None, column="unit_concept_id", value=str(unit),
                                        rule=f"unit concept {unit} is not allowed for {column}; allowed unit "
                                             f"concepts: {allowed} (or 0 for the contract unit)"))
            continue
        out.at[row.person_id, column] = round(float(row.value_as_number) * factors.get(unit, 1.0), 9)


def _observations(tables: _Tables, by_role: dict[str, list[OmopConcept]], start: pd.Series,
                  out: pd.DataFrame) -> None:
    meaning = {c.concept_id: (c.column, c.value) for c in by_role["observation"]}
    responses = {c.concept_id: c.value for c in by_role["value"] if c.column == "best_response"}
    rows = tables.read("observation", "observation_concept_id", set(meaning))
    rows["column"] = rows["observation_concept_id"].map(lambda c: meaning[int(c)][0])
    rows["event"] = rows["observation_concept_id"].map(lambda c: meaning[int(c)][1])
    rows["when"] = _when(rows, "observation_datetime", "observation_date")
    rows = rows[rows["person_id"].isin(start.index)]
    rows["days"] = _days(rows["when"], start.reindex(rows["person_id"]).to_numpy())
    rows = rows.sort_values(["when", "observation_id"])

    for row in _latest_before(rows[rows["column"] == "prior_lines"], start, "observation_id").itertuples():
        out.at[row.person_id, "prior_lines"] = row.value_as_number
    for row in rows[rows["column"] == "best_response"].drop_duplicates("person_id", keep="last").itertuples():
        concept = None if pd.isna(row.value_as_concept_id) else int(row.value_as_concept_id)
        out.at[row.person_id, "best_response"] = responses.get(concept) or _concept_key(row.value_as_concept_id)
    pfs = rows[rows["column"] == "pfs_event"]
    progressed = pfs[pfs["event"] == "true"].drop_duplicates("person_id", keep="first")
    censored = pfs[~pfs["person_id"].isin(progressed["person_id"])].drop_duplicates("person_id", keep="last")
    for row in pd.concat([progressed, censored]).itertuples():
        out.at[row.person_id, "pfs_days"] = row.days
        out.at[row.person_id, "pfs_event"] = row.event

    deaths = tables.read("death")
    deaths = deaths[deaths["person_id"].isin(start.index)].copy()
    deaths["when"] = _when(deaths, "death_datetime", "death_date")
    deaths = deaths.sort_values("when").drop_duplicates("person_id")
    deaths["days"] = _days(deaths["when"], start.reindex(deaths["person_id"]).to_numpy())
    alive = rows[(rows["column"] == "os_event") & ~rows["person_id"].isin(deaths["person_id"])]
    for row in alive.drop_duplicates("person_id", keep="last").itertuples():
        out.at[row.person_id, "os_days"] = row.days
        out.at[row.person_id, "os_event"] = "false"
    for row in deaths.itertuples():
        out.at[row.person_id, "os_days"] = row.days
        out.at[row.person_id, "os_event"] = "true"
