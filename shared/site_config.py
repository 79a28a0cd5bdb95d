"""A site's own description: where its data lives, how its columns and codes map to the contract, its privacy budget.

One TOML or JSON file per site, written by the site's data steward and read by the site's client only.
Paths in it are relative to the file, so a site folder can move as a whole. Errors name the file, the
field and what is allowed, because the person reading them is fixing a config file, not Python.

Example (TOML)::

    site_id = "st-olav"
    display_name = "St Olav University Hospital"
    target_epsilon = 8.0
    modalities_absent = ["genomic"]
    # the app versions this site runs (FAB hashes from `oncofed-app-hash <app folder>`); left out: any app runs
    approved_apps = ["a45dc42705e1e10afe3b81baefac5dfaa40db8bffd35c18192a7e72794ee53ad"]

    [data]
    format = "csv"            # csv | parquet | omop; inferred from the path suffix when left out
    path = "export/patients.csv"

    [mapping.columns]         # site column -> contract column
    ecog_ps = "ecog"
    mrn = "patient_id"

    [mapping.codes.regimen]   # site code -> contract code, per contract column
    FOLFOX4 = "FOLFOX"
    mFOLFOX6 = "FOLFOX"

    [mapping.units]           # contract column -> the unit the site's values are in
    tumour_size_mm = "cm"
    pfs_days = "months"

    [resources]
    torch_threads = 4         # CPU threads for this site's training and evaluation
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from shared.contract import CONTRACT_COLUMNS, MODALITIES
from shared.vocabulary import DICTIONARY

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# --- What kind of value each contract column holds (mapping and harmonisation both read these) -----------

_FIELDS = DICTIONARY.table_schema.fields
BOOLEAN_COLUMNS: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.type == "boolean")
INTEGER_COLUMNS: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.type == "integer")
DECIMAL_COLUMNS: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.type == "number")
CATEGORY_CODES: dict[str, tuple[str, ...]] = {f.name: DICTIONARY.codes(f) for f in _FIELDS if f.categorical}
REQUIRED_COLUMNS: tuple[str, ...] = tuple(f.name for f in _FIELDS if f.constraints.required)

# The units a site may declare per column, and the factor that turns one of them into the contract's unit.
# Months and years are calendar averages (30.4375 and 365.25 days), the usual convention in survival data.
UNIT_FACTORS: dict[str, dict[str, float]] = {f.name: {str(f.unit): 1.0, **f.unit_factors}
                                             for f in _FIELDS if f.unit_factors}

# Cells that mean "not recorded" unless the site says otherwise (compared case-insensitively, after trimming).
DEFAULT_MISSING_VALUES: tuple[str, ...] = DICTIONARY.table_schema.missing_values


class SiteConfigError(ValueError):
    """A site configuration file that cannot be used; the message names the file, the field and the fix."""


def _resolve(path: Path, info: ValidationInfo) -> Path:
    base_dir = (info.context or {}).get("base_dir")
    if base_dir is not None and not path.is_absolute():
        return Path(base_dir) / path
    return path


class _FileSource(BaseModel):
    """An export in one file; a relative path is read from the configuration file's folder."""

    model_config = ConfigDict(extra="forbid")

    format: str
    path: Path

    @field_validator("path")
    @classmethod
    def _relative_to_config(cls, path: Path, info: ValidationInfo) -> Path:
        return _resolve(path, info)


class CsvSource(_FileSource):
    """A delimited text export, one row per patient."""

    format: Literal["csv"] = "csv"
    encoding: Literal["auto", "utf-8", "utf-8-sig", "latin-1"] = Field(
        "auto", description="'auto' reads UTF-8 (with or without BOM) and falls back to Latin-1")
    delimiter: str = Field(",", min_length=1, max_length=1)

    def describe(self) -> str:
        return f"CSV {self.path}"


class ParquetSource(_FileSource):
    """An Apache Parquet file, one row per patient."""

    format: Literal["parquet"] = "parquet"

    def describe(self) -> str:
        return f"Parquet {self.path}"


class OmopSource(BaseModel):
    """An OMOP CDM v5.4 database (with the oncology extension) reachable through SQLAlchemy.

    `url` is a SQLAlchemy URL: `duckdb:///omop.duckdb` (a file; relative to the config file) or
    `postgresql+psycopg://user@host/db`. Credentials belong in the environment (e.g. PGPASSWORD), not here.
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["omop"] = "omop"
    url: str = Field(min_length=1)
    cdm_schema: str | None = Field(None, description="schema holding the CDM tables; None = the default schema")

    @field_validator("url")
    @classmethod
    def _relative_duckdb_file(cls, url: str, info: ValidationInfo) -> str:
        prefix = "duckdb:///"
        if url.startswith(prefix):
            target = url[len(prefix):]
            if target and target != ":memory:" and not target.startswith(":"):
                return prefix + str(_resolve(Path(target), info))
        return url

    def describe(self) -> str:
        shown = self.url.split("@")[-1] if "@" in self.url else self.url  # never print a password
        return f"OMOP {shown}" + (f" schema {self.cdm_schema}" if self.cdm_schema else "")


DataSource = Annotated[CsvSource | ParquetSource | OmopSource, Field(discriminator="format")]

_FORMAT_BY_SUFFIX = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}


class ColumnMapping(BaseModel):
    """How a site's columns, codes and units translate to the contract.

    Codes not listed here must already be contract codes (matched ignoring case); anything else is a
    violation that names the code, never a silent drop. For OMOP sources, `columns` may also map a site's
    own measurement concept (key "omop:<concept_id>") to a contract column, and `codes` may map a concept
    (key "omop:<concept_id>") to a contract code, extending the project's concept map.
    """

    model_config = ConfigDict(extra="forbid")

    columns: dict[str, str] = Field(default_factory=dict, description="site column -> contract column")
    codes: dict[str, dict[str, str]] = Field(default_factory=dict,
                                             description="contract column -> {site code: contract code}")
    units: dict[str, str] = Field(default_factory=dict, description="contract column -> unit of the site values")
    missing_values: list[str] = Field(default_factory=lambda: list(DEFAULT_MISSING_VALUES))
    ignore_columns: list[str] = Field(default_factory=list,
                                      description="site columns that are read and discarded (identifiers, notes)")

    @field_validator("columns")
    @classmethod
    def _targets_are_contract_columns(cls, columns: dict[str, str]) -> dict[str, str]:
        for site_column, target in columns.items():
            if target not in CONTRACT_COLUMNS:
                raise ValueError(f"'{site_column}' maps to '{target}', which is not a contract column; "
                                 f"allowed: {', '.join(CONTRACT_COLUMNS)}")
        seen: dict[str, str] = {}
        for site_column, target in columns.items():
            if target in seen:
                raise ValueError(f"'{seen[target]}' and '{site_column}' both map to '{target}'; keep one")
            seen[target] = site_column
        return columns

    @field_validator("codes")
    @classmethod
    def _codes_name_contract_values(cls, codes: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for column, table in codes.items():
            if column not in CONTRACT_COLUMNS:
                raise ValueError(f"'{column}' is not a contract column; allowed: {', '.join(CONTRACT_COLUMNS)}")
            for site_code, target in table.items():
                if not _is_contract_value(column, target):
                    raise ValueError(f"{column}: '{site_code}' maps to '{target}', which is not allowed; "
                                     f"allowed: {allowed_values_text(column)}")
        return codes

    @field_validator("units")
    @classmethod
    def _units_are_known(cls, units: dict[str, str]) -> dict[str, str]:
        for column, unit in units.items():
            if column not in UNIT_FACTORS:
                raise ValueError(f"'{column}' takes no unit; columns with units: {', '.join(UNIT_FACTORS)}")
            if unit not in UNIT_FACTORS[column]:
                raise ValueError(f"{column}: unit '{unit}' is not allowed; allowed: "
                                 f"{', '.join(UNIT_FACTORS[column])}")
        return units


def allowed_values_text(column: str) -> str:
    """What a contract column accepts, in words a data steward can act on."""
    if column in CATEGORY_CODES:
        return ", ".join(CATEGORY_CODES[column])
    if column in BOOLEAN_COLUMNS:
        return "true, false"
    if column in INTEGER_COLUMNS:
        return "a whole number"
    if column in DECIMAL_COLUMNS:
        return "a number"
    return "any non-empty text"


def _is_contract_value(column: str, value: str) -> bool:
    if column in CATEGORY_CODES:
        return value in CATEGORY_CODES[column]
    if column in BOOLEAN_COLUMNS:
        return value in ("true", "false")
    if column in INTEGER_COLUMNS or column in DECIMAL_COLUMNS:
        try:
            float(value)
        except ValueError:
            return False
        return True
    return bool(value.strip())


class SiteResources(BaseModel):
    """What federated work may use on the site's machine; memory and CPU caps belong to the container."""

    model_config = ConfigDict(extra="forbid")

    torch_threads: int | None = Field(None, ge=1, le=1024,
                                      description="CPU threads for training and evaluation; None = torch's "
                                                  "default (every core)")


def distinct_site_ids(sites: list[Any]) -> list[Any]:
    """Pydantic after-validator of a list of per-site records: each site_id once (a repeated id would merge or
    hide a site's figures). The cohort generator's sites and the consortium report's sites both use it."""
    ids = [s.site_id for s in sites]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicated site_id in {ids}: each site appears once")
    return sites


class SiteConfig(BaseModel):
    """Everything a site's client needs to know about the site before it trains."""

    model_config = ConfigDict(extra="forbid")

    site_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
                         description="short lowercase id used in run folders and reports")
    display_name: str = Field(min_length=1)
    data: DataSource
    mapping: ColumnMapping | None = None
    target_epsilon: float = Field(gt=0, description="DP budget for the whole run at this site")
    target_delta: float | None = Field(None, gt=0, lt=1,
                                       description="None = chosen at training as below 1/n of the site's cohort")
    min_cell_size: int = Field(10, ge=1, description="counts below this are suppressed before leaving the site")
    modalities_absent: list[str] = Field(default_factory=list,
                                         description="modalities this site never collects")
    state_dir: Path = Field(Path("state"), validate_default=True,
                            description="the site's own folder for its privacy ledger, per-patient outputs "
                                        "and report; relative to this file")
    resources: SiteResources = Field(default_factory=SiteResources)
    dictionary: Path | None = Field(
        None, description="the site's copy of the consortium data dictionary (relative to this file); a run whose "
                          "dictionary hash differs is refused. None: the app's default dictionary")
    reproducible_dp_noise: bool = Field(
        False, description="seed DP-SGD's sampling and noise from the run's seed, which the coordinator knows, so "
                           "that a rehearsal on synthetic data can be reproduced; DP does not hold against the "
                           "coordinator while true. Never for real patients")
    test_patients: Path | None = Field(
        None, description="a CSV file (relative to this file) whose column patient_id lists the site's test patients: "
                          "a fixed held-out set, e.g. a benchmark's published split. The other patients are split "
                          "into training and validation by validation-fraction. None: test-fraction draws the test "
                          "set by patient id")
    approved_apps: list[str] | None = Field(
        None, description="FAB hashes (SHA-256, from `oncofed-app-hash <app folder>`) of the app versions this site "
                          "runs; any other app is refused before the site's data is opened. None: every app runs "
                          "(each one's hash is still recorded in the site's audit log)")

    @field_validator("approved_apps")
    @classmethod
    def _app_hashes(cls, hashes: list[str] | None) -> list[str] | None:
        if hashes is None:
            return None
        cleaned = [h.strip().lower() for h in hashes]
        for value in cleaned:
            if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
                raise ValueError(f"'{value}' is not an app hash: expected the 64 hex digits `oncofed-app-hash "
                                 f"<app folder>` prints")
        return cleaned

    @field_validator("state_dir")
    @classmethod
    def _state_relative_to_config(cls, path: Path, info: ValidationInfo) -> Path:
        return _resolve(path, info)

    @field_validator("dictionary", "test_patients")
    @classmethod
    def _file_relative_to_config(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        return None if path is None else _resolve(path, info)

    @model_validator(mode="before")
    @classmethod
    def _infer_data_format(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), dict) or "format" in raw["data"]:
            return raw
        data = dict(raw["data"])
        if "url" in data:
            data["format"] = "omop"
        elif "path" in data:
            suffix = Path(str(data["path"])).suffix.lower()
            if suffix not in _FORMAT_BY_SUFFIX:
                raise ValueError(f"data.format: cannot tell the format of '{data['path']}' from its suffix; "
                                 f"set format = 'csv', 'parquet' or 'omop'")
            data["format"] = _FORMAT_BY_SUFFIX[suffix]
        return {**raw, "data": data}

    @field_validator("modalities_absent")
    @classmethod
    def _known_optional_modalities(cls, modalities: list[str]) -> list[str]:
        optional = [m for m in MODALITIES if m != "clinical"]
        for modality in modalities:
            if modality not in optional:
                raise ValueError(f"'{modality}' is not an optional modality; allowed: {', '.join(optional)} "
                                 f"(clinical fields are required at every site)")
        return modalities

    @classmethod
    def from_file(cls, path: str | Path) -> SiteConfig:
        """Read a site config from TOML or JSON; raise SiteConfigError naming the file and every bad field."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise SiteConfigError(f"{path}: site config file not found") from None
        except (OSError, UnicodeDecodeError) as error:
            raise SiteConfigError(f"{path}: cannot read the site config ({error})") from None
        suffix = path.suffix.lower()
        try:
            if suffix == ".toml":
                raw = tomllib.loads(text)
            elif suffix == ".json":
                raw = json.loads(text)
            else:
                raise SiteConfigError(f"{path}: a site config must be a .toml or .json file")
        except tomllib.TOMLDecodeError as error:
            raise SiteConfigError(f"{path}: not valid TOML: {error}") from None
        except json.JSONDecodeError as error:
            raise SiteConfigError(f"{path}: not valid JSON: {error}") from None
        try:
            return cls.model_validate(raw, context={"base_dir": path.resolve().parent})
        except ValidationError as error:
            lines = []
            for item in error.errors():
                field = ".".join(str(part) for part in item["loc"]) or "(top level)"
                message = item["msg"].removeprefix("Value error, ")
                lines.append(f"  field '{field}': {message}")
            raise SiteConfigError(f"{path}: invalid site config:\n" + "\n".join(lines)) from None
