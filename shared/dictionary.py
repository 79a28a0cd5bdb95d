"""The consortium data dictionary: one versioned YAML/JSON file that every other part of the contract reads.

It declares the endpoints the consortium models, the cancer types and their histologies, the treatments (a
regimen is a set of drugs with classes; no drugs = no systemic therapy; radiotherapy may be part of it) and
the fields of the export grouped into modalities. The field part follows the Frictionless Table Schema shape
(name, type, constraints, missingValues) with a few OncoFed properties (modality, unit, unitFactors,
transform, vocabulary, missingIndicator). Loading checks it whole and names every bad entry, because the
person reading the error is editing the file, not Python.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.provenance import canonical_sha256

DEFAULT_DICTIONARY_PATH = Path(__file__).resolve().parent / "dictionaries" / "default.yaml"

Endpoint = Literal["response", "pfs", "os"]
ENDPOINT_FIELDS: dict[str, tuple[str, ...]] = {"response": ("best_response",), "pfs": ("pfs_days", "pfs_event"),
                                               "os": ("os_days", "os_event")}
FieldType = Literal["string", "number", "integer", "boolean"]
Modality = Literal["identifier", "clinical", "pathology", "imaging", "genomic", "treatment", "outcome"]
Vocabulary = Literal["cancer_types", "histologies", "treatments"]
MODEL_MODALITIES = ("clinical", "pathology", "imaging", "genomic")  # the input blocks a dictionary may declare


class DictionaryError(ValueError):
    """A data dictionary that cannot be used; the message names the file, the entry and the fix."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Constraints(_Strict):
    """Frictionless field constraints (the subset OncoFed enforces)."""

    required: bool = False
    unique: bool = False
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: float | None = Field(default=None, alias="exclusiveMinimum")
    enum: tuple[str, ...] | None = None

    @model_validator(mode="after")
    def _ordered(self) -> Constraints:
        low = self.minimum if self.minimum is not None else self.exclusive_minimum
        if low is not None and self.maximum is not None and low > self.maximum:
            raise ValueError(f"minimum {low} is above maximum {self.maximum}")
        if self.enum is not None and (not self.enum or len(set(self.enum)) != len(self.enum)):
            raise ValueError("enum must list at least one code, each once")
        return self


class FieldSpec(_Strict):
    """One column of the export: a Frictionless field plus the model block that reads it."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    type: FieldType
    modality: Modality
    constraints: Constraints = Constraints()
    description: str = ""
    unit: str | None = None
    unit_factors: dict[str, float] = Field(default_factory=dict, alias="unitFactors")
    transform: Literal["identity", "log1p"] = "identity"
    vocabulary: Vocabulary | None = None
    missing_indicator: bool = Field(default=False, alias="missingIndicator")

    @model_validator(mode="after")
    def _coherent(self) -> FieldSpec:
        numeric = self.type in ("number", "integer")
        if not numeric and (self.constraints.minimum is not None or self.constraints.maximum is not None
                            or self.constraints.exclusive_minimum is not None):
            raise ValueError(f"a {self.type} field takes no minimum/maximum")
        if (self.unit_factors or self.transform != "identity") and not numeric:
            raise ValueError(f"a {self.type} field takes no unitFactors or transform")
        if self.unit_factors and self.unit is None:
            raise ValueError("unitFactors need the field's own unit")
        if any(factor <= 0 for factor in self.unit_factors.values()):
            raise ValueError("unitFactors must be positive")
        if self.vocabulary is not None and (self.type != "string" or self.constraints.enum is not None):
            raise ValueError("a field with a vocabulary is a string field whose codes come from it (no enum)")
        return self

    @property
    def categorical(self) -> bool:
        return self.type == "string" and (self.constraints.enum is not None or self.vocabulary is not None)


class CancerTypeSpec(_Strict):
    code: str = Field(min_length=1)
    histologies: tuple[str, ...] = Field(min_length=1)


class TreatmentSpec(_Strict):
    """A treatment a site may record: its drugs (none = no systemic therapy) and whether radiotherapy is part."""

    code: str = Field(min_length=1)
    name: str = Field(min_length=1)
    drugs: tuple[str, ...] = ()
    radiotherapy: bool = False
    cancer_types: tuple[str, ...] = Field(min_length=1)


class TableSchema(_Strict):
    primary_key: str = Field(alias="primaryKey")
    missing_values: tuple[str, ...] = Field(default=("",), alias="missingValues")
    fields: tuple[FieldSpec, ...] = Field(min_length=1)


class DataDictionary(_Strict):
    """The consortium's data dictionary, checked whole (every cross-reference resolves)."""

    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    title: str = ""
    endpoints: tuple[Endpoint, ...] = Field(min_length=1)
    responders: tuple[str, ...] = ()
    cancer_types: tuple[CancerTypeSpec, ...] = Field(min_length=1)
    drug_classes: tuple[str, ...] = ()
    drugs: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    treatments: tuple[TreatmentSpec, ...] = Field(min_length=1)
    modalities: tuple[Literal["clinical", "pathology", "imaging", "genomic"], ...] = Field(min_length=1)
    table_schema: TableSchema = Field(alias="schema")

    @model_validator(mode="after")
    def _cross_references(self) -> DataDictionary:
        problems: list[str] = []
        _unique(problems, "cancer_types", [c.code for c in self.cancer_types])
        _unique(problems, "histologies", [h for c in self.cancer_types for h in c.histologies])
        _unique(problems, "treatments", [t.code for t in self.treatments])
        _unique(problems, "drug_classes", list(self.drug_classes))
        _unique(problems, "schema.fields", [f.name for f in self.table_schema.fields])
        _unique(problems, "endpoints", list(self.endpoints))
        _unique(problems, "modalities", list(self.modalities))
        cancers = {c.code for c in self.cancer_types}
        for drug, classes in self.drugs.items():
            problems += [f"drugs.{drug}: unknown drug class {c!r}; declare it in drug_classes"
                         for c in classes if c not in self.drug_classes]
        for treatment in self.treatments:
            problems += [f"treatments.{treatment.code}: unknown drug {d!r}; declare it under drugs"
                         for d in treatment.drugs if d not in self.drugs]
            problems += [f"treatments.{treatment.code}: unknown cancer type {c!r}; allowed: {', '.join(cancers)}"
                         for c in treatment.cancer_types if c not in cancers]
        fields = {f.name: f for f in self.table_schema.fields}
        key = fields.get(self.table_schema.primary_key)
        if key is None:
            problems.append(f"schema.primaryKey: {self.table_schema.primary_key!r} is not a field")
        elif not (key.constraints.required and key.constraints.unique):
            problems.append(f"schema.fields.{key.name}: the primary key must be required and unique")
        for endpoint, names in ENDPOINT_FIELDS.items():
            for name in names:
                if endpoint in self.endpoints and name not in fields:
                    problems.append(f"endpoints: {endpoint} needs the field {name!r} in schema.fields")
                if endpoint not in self.endpoints and name in fields:
                    problems.append(f"schema.fields.{name}: the field of endpoint {endpoint}, which is not in "
                                    f"endpoints; add the endpoint or drop the field")
        expected = {"best_response": "string", "pfs_days": "number", "os_days": "number",
                    "pfs_event": "boolean", "os_event": "boolean", "cancer_type": "string", "regimen": "string"}
        for name, kind in expected.items():
            if name in fields and fields[name].type != kind:
                problems.append(f"schema.fields.{name}: must be of type {kind}, not {fields[name].type}")
        if "response" in self.endpoints:
            codes = fields["best_response"].constraints.enum if "best_response" in fields else None
            if not codes:
                problems.append("schema.fields.best_response: list its codes in constraints.enum")
            elif not self.responders or any(r not in codes for r in self.responders):
                problems.append(f"responders: give the best_response codes that count as a response, among "
                                f"{', '.join(codes)}")
        for name, vocabulary in (("cancer_type", "cancer_types"), ("regimen", "treatments")):
            if name not in fields or fields[name].vocabulary != vocabulary:
                problems.append(f"schema.fields: needs the field {name!r} with vocabulary: {vocabulary}")
            elif not fields[name].constraints.required:
                problems.append(f"schema.fields.{name}: must be required")
        for spec in self.table_schema.fields:
            if spec.modality in ("clinical", "pathology", "imaging", "genomic") and spec.modality not in self.modalities:
                problems.append(f"schema.fields.{spec.name}: modality {spec.modality!r} is not in modalities")
            if spec.modality == "outcome" and spec.name not in {n for e in self.endpoints for n in ENDPOINT_FIELDS[e]}:
                problems.append(f"schema.fields.{spec.name}: an outcome field must be an endpoint's field")
        if self.modalities[:1] != ("clinical",) or list(self.modalities) != sorted(self.modalities,
                                                                                  key=MODEL_MODALITIES.index):
            problems.append(f"modalities: the model's input blocks are the modalities declared here: clinical "
                            f"first (it holds the required fields), then any of pathology, imaging, genomic in "
                            f"this order")
        if "cancer_type" in fields and fields["cancer_type"].modality != "clinical":
            problems.append("schema.fields.cancer_type: must be of modality clinical (the always-present block)")
        for modality in self.modalities:
            if not any(f.modality == modality for f in self.table_schema.fields):
                problems.append(f"modalities: {modality!r} has no field")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    # --- derived views (everything else reads these) ---------------------------------------------------
    def field(self, name: str) -> FieldSpec:
        return next(f for f in self.table_schema.fields if f.name == name)

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.table_schema.fields)

    def fields_of(self, modality: str) -> tuple[FieldSpec, ...]:
        return tuple(f for f in self.table_schema.fields if f.modality == modality)

    def codes(self, spec: FieldSpec) -> tuple[str, ...]:
        """A categorical field's allowed codes, from its enum or its vocabulary."""
        if spec.vocabulary == "cancer_types":
            return tuple(c.code for c in self.cancer_types)
        if spec.vocabulary == "histologies":
            return tuple(h for c in self.cancer_types for h in c.histologies)
        if spec.vocabulary == "treatments":
            return tuple(t.code for t in self.treatments)
        return spec.constraints.enum or ()

    def treatment_classes(self, treatment: TreatmentSpec) -> frozenset[str]:
        return frozenset(c for drug in treatment.drugs for c in self.drugs[drug])

    def frictionless_schema(self) -> dict[str, Any]:
        """The field part as a plain Frictionless Table Schema (vocabularies spelled out as enums)."""
        fields = []
        for spec in self.table_schema.fields:
            entry = spec.model_dump(by_alias=True, exclude_defaults=True, exclude={"vocabulary"})
            if spec.vocabulary is not None:
                entry.setdefault("constraints", {})["enum"] = list(self.codes(spec))
            fields.append(entry)
        return {"fields": fields, "primaryKey": self.table_schema.primary_key,
                "missingValues": list(self.table_schema.missing_values)}

    def content_sha256(self) -> str:
        """Hash of the dictionary's content (not its file's bytes): comments and layout do not change it."""
        return canonical_sha256(self.model_dump(mode="json", by_alias=True))



def _unique(problems: list[str], where: str, codes: list[str]) -> None:
    seen: set[str] = set()
    for code in codes:
        if code in seen:
            problems.append(f"{where}: {code!r} is declared twice")
        seen.add(code)


def _named(content: dict[str, Any], loc: tuple[Any, ...]) -> list[str]:
    """An error location with list indices followed by the entry's name or code: `schema.fields.18(suv_max)`."""
    parts, node = [], content
    for part in loc:
        node = node[part] if isinstance(node, (dict, list)) and _has(node, part) else None
        name = node.get("name", node.get("code")) if isinstance(node, dict) and isinstance(part, int) else None
        parts.append(f"{part}({name})" if name else str(part))
    return parts


def _has(node: dict[str, Any] | list[Any], part: Any) -> bool:
    return part in node if isinstance(node, dict) else isinstance(part, int) and 0 <= part < len(node)


def parse_dictionary(content: dict[str, Any], source: str) -> DataDictionary:
    """Check a dictionary's content; DictionaryError names the source and every bad entry."""
    try:
        return DataDictionary.model_validate(content)
    except ValidationError as error:
        lines = []
        for item in error.errors():
            where = ".".join(_named(content, item["loc"]))
            message = item["msg"].removeprefix("Value error, ")
            lines += [f"{where}: {m}" if where else m for m in message.split("\n")]
        raise DictionaryError(f"{source}: the data dictionary is not usable:\n  " + "\n  ".join(lines)
                              + "\nFix these entries in the dictionary file, then run again.") from None


def load_dictionary(path: str | Path) -> DataDictionary:
    """Read a dictionary file (.yaml/.yml/.json)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DictionaryError(f"{path}: cannot read the data dictionary ({error.strerror})") from None
    try:
        content = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise DictionaryError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {error}") from None
    if not isinstance(content, dict):
        raise DictionaryError(f"{path}: a data dictionary is a mapping of name, version, endpoints, ... at the top")
    return parse_dictionary(content, str(path))


@lru_cache(maxsize=1)
def default_dictionary() -> DataDictionary:
    """The dictionary shipped with the app (the synthetic consortium's); read once, immutable."""
    return load_dictionary(DEFAULT_DICTIONARY_PATH)
