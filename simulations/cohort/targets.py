"""Calibration targets from published trials and registries: per-regimen response and medians
(regimen_targets.csv), response contrasts between patient groups (response_contrasts.csv), each in a subgroup
defined here, and population shares, each with its source.

simulations/cohort/calibration.py measures the generator against them and fits the per-regimen outcomes.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pandas as pd

from shared.vocabulary import CancerType

Selector = Callable[[pd.DataFrame], np.ndarray]
_Target = TypeVar("_Target")

RESPONSE_TOLERANCE = 0.05  # absolute, objective response rate
MEDIAN_TOLERANCE = 0.15  # relative, median PFS/OS


def _is(p: pd.DataFrame, column: str) -> np.ndarray:
    return p[column].astype("boolean").fillna(False).to_numpy(dtype=bool)


def _fit_advanced(p: pd.DataFrame) -> np.ndarray:
    """Trial-like: stage IV and ECOG 0-1."""
    return (p["stage_group"].to_numpy() == "IV") & (p["ecog"].to_numpy() <= 1)


@dataclass(frozen=True)
class Population:
    """A trial-like subgroup of the generated cohort: its name in the calibration tables and who is in it."""

    name: str
    label: str
    select: Selector

    def __call__(self, p: pd.DataFrame) -> np.ndarray:
        return self.select(p)


def _population(label: str) -> Callable[[Selector], Population]:
    """Name a selector where it is defined: every target and contrast in that subgroup then uses both."""
    return lambda select: Population(select.__name__.lstrip("_"), label, select)


@_population("breast HER2+, stage IV, ECOG 0-1, first line")
def _breast_her2_positive(p: pd.DataFrame) -> np.ndarray:
    return _fit_advanced(p) & _is(p, "her2_positive") & (p["prior_lines"].to_numpy() == 0)


@_population("breast HER2-, stage IV, ECOG 0-1, first line")
def _breast_her2_negative(p: pd.DataFrame) -> np.ndarray:
    return _fit_advanced(p) & ~_is(p, "her2_positive") & (p["prior_lines"].to_numpy() == 0)


@_population("breast triple-negative, stage IV, ECOG 0-1")
def _breast_triple_negative(p: pd.DataFrame) -> np.ndarray:
    return _fit_advanced(p) & ~_is(p, "her2_positive") & ~_is(p, "er_positive") & ~_is(p, "pr_positive")


@_population("NSCLC EGFR/ALK wt, stage IV, ECOG 0-1")
def _lung_driver_negative(p: pd.DataFrame) -> np.ndarray:
    return _fit_advanced(p) & ~_is(p, "egfr") & ~_is(p, "alk") & (p["prior_lines"].to_numpy() == 0)


@_population("NSCLC non-squamous EGFR/ALK wt, stage IV, ECOG 0-1")
def _lung_keynote189(p: pd.DataFrame) -> np.ndarray:
    return _lung_driver_negative(p) & (p["histology"].to_numpy() != "nsclc_squamous")


def _lung_keynote189_tps(low: float, high: float, label: str) -> Population:
    def select(p: pd.DataFrame) -> np.ndarray:
        tps = p["pdl1_tps_percent"].to_numpy(dtype=float)
        return _lung_keynote189(p) & (tps >= low) & (tps < high)
    return Population(f"keynote189_tps_{low}_to_{high}", f"KEYNOTE-189 population, PD-L1 TPS {label}", select)


_KEYNOTE189_TPS_50_PLUS = _lung_keynote189_tps(50, 101, ">= 50 %")
_KEYNOTE189_TPS_BELOW_1 = _lung_keynote189_tps(0, 1, "< 1 %")


@_population("colorectal stage IV, ECOG 0-1, first line")
def _colorectal_first_line(p: pd.DataFrame) -> np.ndarray:
    return _fit_advanced(p) & (p["prior_lines"].to_numpy() == 0)


@_population("colorectal KRAS wild-type, stage IV, ECOG 0-1, first line")
def _colorectal_kras_wild_type(p: pd.DataFrame) -> np.ndarray:
    return _colorectal_first_line(p) & ~_is(p, "kras")


@_population("colorectal KRAS mutant, stage IV, ECOG 0-1, first line")
def _colorectal_kras_mutant(p: pd.DataFrame) -> np.ndarray:
    return _colorectal_first_line(p) & _is(p, "kras")


@_population("ovarian first line, stage III-IV, ECOG 0-1")
def _ovarian_first_line(p: pd.DataFrame) -> np.ndarray:
    return (p["ecog"].to_numpy() <= 1) & (p["prior_lines"].to_numpy() == 0)


@_population("ovarian platinum-sensitive relapse, ECOG 0-1")
def _ovarian_relapsed(p: pd.DataFrame) -> np.ndarray:
    return (p["ecog"].to_numpy() <= 1) & (p["prior_lines"].to_numpy() >= 1)


# the subgroups a row of regimen_targets.csv or response_contrasts.csv may name
POPULATIONS: dict[str, Population] = {p.name: p for p in (
    _breast_her2_positive, _breast_her2_negative, _breast_triple_negative, _lung_driver_negative, _lung_keynote189,
    _KEYNOTE189_TPS_50_PLUS, _KEYNOTE189_TPS_BELOW_1, _colorectal_first_line, _colorectal_kras_wild_type,
    _colorectal_kras_mutant, _ovarian_first_line, _ovarian_relapsed)}


@dataclass(frozen=True)
class RegimenTarget:
    """Published response rate and medians of a regimen in a trial-like subgroup of the generated cohort."""

    cancer: CancerType
    regimen: str
    population: Population
    response_rate: float
    median_pfs_months: float
    median_os_months: float
    source: str


@dataclass(frozen=True)
class ResponseContrast:
    """A published response rate in a biomarker subgroup: checks an effect modifier, not fitted."""

    cancer: CancerType
    regimen: str
    population: Population
    response_rate: float
    tolerance: float
    source: str


_TEXT_COLUMNS: dict[str, Callable[[str], object]] = {
    "cancer": CancerType, "regimen": str, "population": POPULATIONS.__getitem__, "source": str}


def _read(table: str, kind: type[_Target]) -> tuple[_Target, ...]:
    """A table of published figures beside this module, one target per row (every other column a number)."""
    with (Path(__file__).resolve().parent / table).open(newline="", encoding="utf-8") as stream:
        return tuple(kind(**{column: _TEXT_COLUMNS.get(column, float)(value) for column, value in row.items()})
                     for row in csv.DictReader(stream))


REGIMEN_TARGETS: tuple[RegimenTarget, ...] = _read("regimen_targets.csv", RegimenTarget)
RESPONSE_CONTRASTS: tuple[ResponseContrast, ...] = _read("response_contrasts.csv", ResponseContrast)


@dataclass(frozen=True)
class ShareTarget:
    """A published prevalence or case-mix share: numerator among denominator patients."""

    name: str
    denominator: Selector
    numerator: Selector
    target: float
    tolerance: float
    source: str


def _cancer(name: str) -> Selector:
    return lambda p: p["cancer_type"].to_numpy() == name


def _histology(name: str) -> Selector:
    return lambda p: p["histology"].to_numpy() == name


def _race(p: pd.DataFrame) -> np.ndarray:
    return p["race_ethnicity"].to_numpy()


SHARE_TARGETS: tuple[ShareTarget, ...] = (
    ShareTarget("HER2+ among breast", _cancer("breast"), lambda p: _is(p, "her2_positive"), 0.18, 0.03,
                "15-20 % of breast cancers (SEER subtype data; Howlader JNCI 2014)"),
    ShareTarget("triple-negative among breast", _cancer("breast"),
                lambda p: ~_is(p, "her2_positive") & ~_is(p, "er_positive") & ~_is(p, "pr_positive"), 0.15, 0.03,
                "10-15 %, about twice as common in Black women (Howlader JNCI 2014)"),
    ShareTarget("PIK3CA among ER+ HER2- breast", lambda p: _is(p, "er_positive") & ~_is(p, "her2_positive"),
                lambda p: _is(p, "pik3ca"), 0.40, 0.04, "~40 % of HR+/HER2- (TCGA Nature 2012; SOLAR-1 screening)"),
    ShareTarget("EGFR among non-Asian NSCLC adenocarcinoma",
                lambda p: _histology("nsclc_adenocarcinoma")(p) & (_race(p) != "asian"), lambda p: _is(p, "egfr"),
                0.15, 0.03, "~10-15 % in Western series (e.g. Lung Cancer Mutation Consortium, Kris JAMA 2014)"),
    ShareTarget("EGFR among Asian NSCLC adenocarcinoma",
                lambda p: _histology("nsclc_adenocarcinoma")(p) & (_race(p) == "asian"), lambda p: _is(p, "egfr"),
                0.48, 0.06, "51 % in PIONEER (Shi JTO 2014)"),
    ShareTarget("KRAS among non-Asian NSCLC adenocarcinoma",
                lambda p: _histology("nsclc_adenocarcinoma")(p) & (_race(p) != "asian"), lambda p: _is(p, "kras"),
                0.28, 0.04, "25-30 % (Kris JAMA 2014)"),
    ShareTarget("ALK among NSCLC adenocarcinoma", _histology("nsclc_adenocarcinoma"), lambda p: _is(p, "alk"),
                0.05, 0.02, "3-7 % (Kris JAMA 2014)"),
    ShareTarget("PD-L1 TPS >= 50 % among NSCLC", _cancer("nsclc"),
                lambda p: p["pdl1_tps_percent"].to_numpy(dtype=float) >= 50, 0.30, 0.03,
                "~30 % of screened patients (KEYNOTE-024, Reck NEJM 2016)"),
    ShareTarget("KRAS among colorectal", _cancer("colorectal"), lambda p: _is(p, "kras"), 0.45, 0.03,
                "~40-45 % of metastatic CRC (CRYSTAL/FIRE-3 screening)"),
    ShareTarget("BRAF among colorectal", _cancer("colorectal"), lambda p: _is(p, "braf"), 0.09, 0.03,
                "8-10 % of metastatic CRC (Tol NEJM 2009)"),
    ShareTarget("MSI-high among colorectal", _cancer("colorectal"), lambda p: _is(p, "msi_high"), 0.045, 0.015,
                "3.5-5 % of metastatic CRC (Koopman BJC 2009; Venderbosch CCR 2014)"),
    ShareTarget("BRCA1/2 among high-grade serous ovarian", _histology("ovarian_high_grade_serous"),
                lambda p: _is(p, "brca1") | _is(p, "brca2"), 0.18, 0.03,
                "15-20 % germline+somatic (TCGA Nature 2011; Alsop JCO 2012)"),
    ShareTarget("TP53 among high-grade serous ovarian", _histology("ovarian_high_grade_serous"),
                lambda p: _is(p, "tp53"), 0.96, 0.02, "96 % (TCGA Nature 2011)"),
    ShareTarget("female among breast", _cancer("breast"), lambda p: p["sex"].to_numpy() == "female", 0.99, 0.01,
                "~99 % (male breast cancer ~1 %)"),
    ShareTarget("ECOG 0", lambda p: np.ones(len(p), bool), lambda p: p["ecog"].to_numpy() == 0, 0.38, 0.05,
                "approx. real-world first-line cohorts: ECOG 0 ~35-40 %, 1 ~45 %, >=2 ~15 % (registry analyses)"),
    ShareTarget("ECOG 1", lambda p: np.ones(len(p), bool), lambda p: p["ecog"].to_numpy() == 1, 0.47, 0.05,
                "as above"),
    ShareTarget("ECOG >= 2", lambda p: np.ones(len(p), bool), lambda p: p["ecog"].to_numpy() >= 2, 0.15, 0.05,
                "as above; trials enrol ECOG 0-1 only"),
    ShareTarget("stage IV among NSCLC", _cancer("nsclc"), lambda p: p["stage_group"].to_numpy() == "IV", 0.80,
                0.05, "assumption: patients starting first-line platinum doublets are mostly metastatic "
                "(SEER: ~55 % of NSCLC diagnosed at distant stage)"),
    ShareTarget("stage IV among colorectal", _cancer("colorectal"), lambda p: p["stage_group"].to_numpy() == "IV",
                0.85, 0.05, "assumption: regimen set is that of metastatic first/second line"),
    ShareTarget("stage IV among ovarian", _cancer("ovarian"), lambda p: p["stage_group"].to_numpy() == "IV", 0.32,
                0.05, "GOG-218 enrolled ~26 % stage IV; FIGO III is ~2/3 of advanced ovarian cancer"),
    ShareTarget("stage IV among breast", _cancer("breast"), lambda p: p["stage_group"].to_numpy() == "IV", 0.50,
                0.05, "assumption: half neoadjuvant (stage II-III), half metastatic"),
)
