"""Controlled vocabularies of the data contract: cancer types, histologies, treatments and field codes.

Every table here is a view of the default consortium data dictionary (shared/dictionaries/default.yaml, read
by shared/dictionary.py): the codes a site may send are edited there, never here. Validation, encoding, the
synthetic generator and the tumour-board comparison read these views.
"""

from __future__ import annotations

import re
from enum import Enum

from pydantic import BaseModel, ConfigDict

from shared.dictionary import DataDictionary, default_dictionary

DICTIONARY: DataDictionary = default_dictionary()


def _code_enum(name: str, codes: tuple[str, ...], doc: str) -> type[Enum]:
    """A str Enum whose members are the dictionary's codes (member name: the code upper-cased)."""
    members = [(re.sub(r"[^A-Za-z0-9]+", "_", code).strip("_").upper(), code) for code in codes]
    enum = Enum(name, members, type=str, module=__name__)  # type: ignore[misc]
    enum.__doc__ = doc
    return enum


def _field_codes(name: str) -> tuple[str, ...]:
    """A categorical field's codes; none when this consortium's dictionary has no such field."""
    return DICTIONARY.codes(DICTIONARY.field(name)) if name in DICTIONARY.columns else ()


CancerType = _code_enum("CancerType", tuple(c.code for c in DICTIONARY.cancer_types), "Cancer types.")
Sex = _code_enum("Sex", _field_codes("sex"), "Sex as recorded.")
RaceEthnicity = _code_enum("RaceEthnicity", _field_codes("race_ethnicity"),
                           "OMB-style categories; 'unknown' is a real value (not reported), not a missing cell.")
StageGroup = _code_enum("StageGroup", _field_codes("stage_group"), "AJCC stage groups.")
BestResponse = _code_enum("BestResponse", _field_codes("best_response"), "RECIST 1.1 best overall response.")
DrugClass = _code_enum("DrugClass", DICTIONARY.drug_classes, "Drug classes of the treatments.")

RESPONDER = frozenset(BestResponse(code) for code in DICTIONARY.responders)

HISTOLOGIES: dict[CancerType, tuple[str, ...]] = {CancerType(c.code): c.histologies for c in DICTIONARY.cancer_types}
ALL_HISTOLOGIES: tuple[str, ...] = tuple(h for hs in HISTOLOGIES.values() for h in hs)


class Regimen(BaseModel):
    """A named treatment: its code is what sites send, its drugs and classes drive biology and display."""

    model_config = ConfigDict(frozen=True)

    code: str
    name: str
    drugs: tuple[str, ...]
    classes: frozenset[DrugClass]
    cancer_types: frozenset[CancerType]
    radiotherapy: bool = False


REGIMENS: tuple[Regimen, ...] = tuple(
    Regimen(code=t.code, name=t.name, drugs=t.drugs, radiotherapy=t.radiotherapy,
            classes=frozenset(DrugClass(c) for c in DICTIONARY.treatment_classes(t)),
            cancer_types=frozenset(CancerType(c) for c in t.cancer_types))
    for t in DICTIONARY.treatments)

REGIMEN_BY_CODE: dict[str, Regimen] = {r.code: r for r in REGIMENS}
REGIMEN_CODES: tuple[str, ...] = tuple(r.code for r in REGIMENS)


def regimens_for(cancer_type: CancerType) -> tuple[Regimen, ...]:
    """The regimens of the vocabulary that are used for this cancer type (the comparison set)."""
    return tuple(r for r in REGIMENS if cancer_type in r.cancer_types)
