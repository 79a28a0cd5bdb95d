"""Controlled vocabularies of the data contract: cancer types, histologies and named regimens.

One place lists every code a site may send; everything else (validation, encoding, the synthetic
generator, the tumour-board comparison) reads these tables.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict


class CancerType(str, Enum):
    BREAST = "breast"
    NSCLC = "nsclc"
    COLORECTAL = "colorectal"
    OVARIAN = "ovarian"


class Sex(str, Enum):
    FEMALE = "female"
    MALE = "male"


class RaceEthnicity(str, Enum):
    """OMB-style categories; 'unknown' is a real value (not reported), not a missing cell."""

    WHITE = "white"
    BLACK = "black"
    HISPANIC = "hispanic"
    ASIAN = "asian"
    OTHER = "other"
    UNKNOWN = "unknown"


class StageGroup(str, Enum):
    I = "I"  # noqa: E741 - AJCC stage group names
    II = "II"
    III = "III"
    IV = "IV"


class BestResponse(str, Enum):
    """RECIST 1.1 best overall response."""

    CR = "CR"
    PR = "PR"
    SD = "SD"
    PD = "PD"


RESPONDER = frozenset({BestResponse.CR, BestResponse.PR})

HISTOLOGIES: dict[CancerType, tuple[str, ...]] = {
    CancerType.BREAST: ("breast_ductal", "breast_lobular", "breast_other"),
    CancerType.NSCLC: ("nsclc_adenocarcinoma", "nsclc_squamous", "nsclc_other"),
    CancerType.COLORECTAL: ("crc_adenocarcinoma", "crc_mucinous"),
    CancerType.OVARIAN: ("ovarian_high_grade_serous", "ovarian_other"),
}
ALL_HISTOLOGIES: tuple[str, ...] = tuple(h for hs in HISTOLOGIES.values() for h in hs)


class DrugClass(str, Enum):
    ANTHRACYCLINE = "anthracycline"
    TAXANE = "taxane"
    ALKYLATING = "alkylating"
    PLATINUM = "platinum"
    ANTIFOLATE = "antifolate"
    FLUOROPYRIMIDINE = "fluoropyrimidine"
    TOPOISOMERASE = "topoisomerase_inhibitor"
    ANTI_HER2 = "anti_her2"
    ANTI_EGFR = "anti_egfr"
    ANTI_VEGF = "anti_vegf"
    IMMUNOTHERAPY = "immune_checkpoint_inhibitor"
    LIPOSOMAL_ANTHRACYCLINE = "liposomal_anthracycline"


class Regimen(BaseModel):
    """A named regimen: its code is what sites send, its drugs and classes drive biology and display."""

    model_config = ConfigDict(frozen=True)

    code: str
    name: str
    drugs: tuple[str, ...]
    classes: frozenset[DrugClass]
    cancer_types: frozenset[CancerType]


def _regimen(code: str, name: str, drugs: tuple[str, ...], classes: set[DrugClass],
             cancers: set[CancerType]) -> Regimen:
    return Regimen(code=code, name=name, drugs=drugs, classes=frozenset(classes),
                   cancer_types=frozenset(cancers))


_C = DrugClass
REGIMENS: tuple[Regimen, ...] = (
    # Breast
    _regimen("AC-T", "Doxorubicin + cyclophosphamide, then paclitaxel",
             ("doxorubicin", "cyclophosphamide", "paclitaxel"),
             {_C.ANTHRACYCLINE, _C.ALKYLATING, _C.TAXANE}, {CancerType.BREAST}),
    _regimen("TC", "Docetaxel + cyclophosphamide", ("docetaxel", "cyclophosphamide"),
             {_C.TAXANE, _C.ALKYLATING}, {CancerType.BREAST}),
    _regimen("TCHP", "Docetaxel + carboplatin + trastuzumab + pertuzumab",
             ("docetaxel", "carboplatin", "trastuzumab", "pertuzumab"),
             {_C.TAXANE, _C.PLATINUM, _C.ANTI_HER2}, {CancerType.BREAST}),
    _regimen("PACLITAXEL-CARBOPLATIN", "Paclitaxel + carboplatin", ("paclitaxel", "carboplatin"),
             {_C.TAXANE, _C.PLATINUM}, {CancerType.BREAST}),
    # Non-small-cell lung
    _regimen("CARBOPLATIN-PEMETREXED", "Carboplatin + pemetrexed", ("carboplatin", "pemetrexed"),
             {_C.PLATINUM, _C.ANTIFOLATE}, {CancerType.NSCLC}),
    _regimen("CARBOPLATIN-PACLITAXEL", "Carboplatin + paclitaxel", ("carboplatin", "paclitaxel"),
             {_C.PLATINUM, _C.TAXANE}, {CancerType.NSCLC, CancerType.OVARIAN}),
    _regimen("CARBOPLATIN-PEMETREXED-PEMBROLIZUMAB", "Carboplatin + pemetrexed + pembrolizumab",
             ("carboplatin", "pemetrexed", "pembrolizumab"),
             {_C.PLATINUM, _C.ANTIFOLATE, _C.IMMUNOTHERAPY}, {CancerType.NSCLC}),
    # Colorectal
    _regimen("FOLFOX", "Fluorouracil + leucovorin + oxaliplatin",
             ("fluorouracil", "leucovorin", "oxaliplatin"),
             {_C.FLUOROPYRIMIDINE, _C.PLATINUM}, {CancerType.COLORECTAL}),
    _regimen("FOLFIRI", "Fluorouracil + leucovorin + irinotecan",
             ("fluorouracil", "leucovorin", "irinotecan"),
             {_C.FLUOROPYRIMIDINE, _C.TOPOISOMERASE}, {CancerType.COLORECTAL}),
    _regimen("FOLFOX-BEVACIZUMAB", "FOLFOX + bevacizumab",
             ("fluorouracil", "leucovorin", "oxaliplatin", "bevacizumab"),
             {_C.FLUOROPYRIMIDINE, _C.PLATINUM, _C.ANTI_VEGF}, {CancerType.COLORECTAL}),
    _regimen("FOLFIRI-CETUXIMAB", "FOLFIRI + cetuximab",
             ("fluorouracil", "leucovorin", "irinotecan", "cetuximab"),
             {_C.FLUOROPYRIMIDINE, _C.TOPOISOMERASE, _C.ANTI_EGFR}, {CancerType.COLORECTAL}),
    # Ovarian
    _regimen("CARBOPLATIN-PACLITAXEL-BEVACIZUMAB", "Carboplatin + paclitaxel + bevacizumab",
             ("carboplatin", "paclitaxel", "bevacizumab"),
             {_C.PLATINUM, _C.TAXANE, _C.ANTI_VEGF}, {CancerType.OVARIAN}),
    _regimen("CARBOPLATIN-PLD", "Carboplatin + pegylated liposomal doxorubicin",
             ("carboplatin", "pegylated liposomal doxorubicin"),
             {_C.PLATINUM, _C.LIPOSOMAL_ANTHRACYCLINE}, {CancerType.OVARIAN}),
)

REGIMEN_BY_CODE: dict[str, Regimen] = {r.code: r for r in REGIMENS}
REGIMEN_CODES: tuple[str, ...] = tuple(r.code for r in REGIMENS)


def regimens_for(cancer_type: CancerType) -> tuple[Regimen, ...]:
    """The regimens of the vocabulary that are used for this cancer type (the comparison set)."""
    return tuple(r for r in REGIMENS if cancer_type in r.cancer_types)
