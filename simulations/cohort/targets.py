"""Calibration targets from published trials and registries: per-regimen response and medians, response
contrasts between patient groups, and population shares, each with its source.

simulations/cohort/calibration.py measures the generator against them and fits the per-regimen outcomes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.vocabulary import CancerType

_BREAST, _LUNG, _CRC, _OVARY = CancerType.BREAST, CancerType.NSCLC, CancerType.COLORECTAL, CancerType.OVARIAN
Selector = Callable[[pd.DataFrame], np.ndarray]

RESPONSE_TOLERANCE = 0.05  # absolute, objective response rate
MEDIAN_TOLERANCE = 0.15  # relative, median PFS/OS


def _is(p: pd.DataFrame, column: str) -> np.ndarray:
    return p[column].astype("boolean").fillna(False).to_numpy(dtype=bool)


def _fit_advanced(p: pd.DataFrame) -> np.ndarray:
    """Trial-like: stage IV and ECOG 0-1."""
    return (p["stage_group"].to_numpy() == "IV") & (p["ecog"].to_numpy() <= 1)


def _breast_her2_positive(p: pd.DataFrame) -> np.ndarray:
    return _fit_advanced(p) & _is(p, "her2_positive") & (p["prior_lines"].to_numpy() == 0)


def _breast_her2_negative(p: pd.DataFrame) -> np.ndarray:
    return _fit_advanced(p) & ~_is(p, "her2_positive") & (p["prior_lines"].to_numpy() == 0)


def _breast_triple_negative(p: pd.DataFrame) -> np.ndarray:
    return _fit_advanced(p) & ~_is(p, "her2_positive") & ~_is(p, "er_positive") & ~_is(p, "pr_positive")


def _lung_driver_negative(p: pd.DataFrame) -> np.ndarray:
    return _fit_advanced(p) & ~_is(p, "egfr") & ~_is(p, "alk") & (p["prior_lines"].to_numpy() == 0)


def _lung_keynote189(p: pd.DataFrame) -> np.ndarray:
    return _lung_driver_negative(p) & (p["histology"].to_numpy() != "nsclc_squamous")


def _lung_keynote189_tps(low: float, high: float) -> Selector:
    def select(p: pd.DataFrame) -> np.ndarray:
        tps = p["pdl1_tps_percent"].to_numpy(dtype=float)
        return _lung_keynote189(p) & (tps >= low) & (tps < high)
    return select


def _colorectal_first_line(p: pd.DataFrame) -> np.ndarray:
    return _fit_advanced(p) & (p["prior_lines"].to_numpy() == 0)


def _colorectal_kras_wild_type(p: pd.DataFrame) -> np.ndarray:
    return _colorectal_first_line(p) & ~_is(p, "kras")


def _colorectal_kras_mutant(p: pd.DataFrame) -> np.ndarray:
    return _colorectal_first_line(p) & _is(p, "kras")


def _ovarian_first_line(p: pd.DataFrame) -> np.ndarray:
    return (p["ecog"].to_numpy() <= 1) & (p["prior_lines"].to_numpy() == 0)


def _ovarian_relapsed(p: pd.DataFrame) -> np.ndarray:
    return (p["ecog"].to_numpy() <= 1) & (p["prior_lines"].to_numpy() >= 1)


@dataclass(frozen=True)
class RegimenTarget:
    """Published response rate and medians of a regimen in a trial-like subgroup of the generated cohort."""

    cancer: CancerType
    regimen: str
    population: str
    select: Selector
    response_rate: float
    median_pfs_months: float
    median_os_months: float
    source: str


REGIMEN_TARGETS: tuple[RegimenTarget, ...] = (
    RegimenTarget(_BREAST, "TCHP", "breast HER2+, stage IV, ECOG 0-1, first line", _breast_her2_positive,
                  0.80, 18.5, 56.5,
                  "CLEOPATRA docetaxel+trastuzumab+pertuzumab (Baselga NEJM 2012; Swain NEJM 2015)"),
    RegimenTarget(_BREAST, "AC-T", "breast HER2-, stage IV, ECOG 0-1, first line", _breast_her2_negative,
                  0.57, 8.5, 22.5,
                  "TAX 306 anthracycline+taxane arm, approx. (Nabholtz JCO 2003)"),
    RegimenTarget(_BREAST, "TC", "breast HER2-, stage IV, ECOG 0-1, first line", _breast_her2_negative,
                  0.45, 7.0, 20.0,
                  "assumption: no first-line metastatic pivotal trial; set below anthracycline+taxane"),
    RegimenTarget(_BREAST, "PACLITAXEL-CARBOPLATIN", "breast triple-negative, stage IV, ECOG 0-1",
                  _breast_triple_negative, 0.55, 6.5, 16.5,
                  "approx. between tnAcity nab-P/carboplatin (Yardley Ann Oncol 2018) and "
                  "TNT carboplatin (Tutt Nat Med 2018)"),
    RegimenTarget(_LUNG, "CARBOPLATIN-PEMETREXED-PEMBROLIZUMAB", "NSCLC non-squamous EGFR/ALK wt, stage IV, ECOG 0-1",
                  _lung_keynote189, 0.476, 8.8, 22.0, "KEYNOTE-189 pembrolizumab arm (Gandhi NEJM 2018; "
                  "Gadgeel JCO 2020)"),
    RegimenTarget(_LUNG, "CARBOPLATIN-PEMETREXED", "NSCLC non-squamous EGFR/ALK wt, stage IV, ECOG 0-1",
                  _lung_keynote189, 0.189, 4.9, 10.7,
                  "KEYNOTE-189 placebo+chemotherapy arm (Gandhi NEJM 2018; Gadgeel JCO 2020)"),
    RegimenTarget(_LUNG, "CARBOPLATIN-PACLITAXEL", "NSCLC EGFR/ALK wt, stage IV, ECOG 0-1", _lung_driver_negative,
                  0.15, 4.5, 10.3, "E4599 carboplatin+paclitaxel arm (Sandler NEJM 2006)"),
    RegimenTarget(_CRC, "FOLFOX", "colorectal stage IV, ECOG 0-1, first line", _colorectal_first_line,
                  0.49, 8.0, 19.9,
                  "NO16966 chemotherapy+placebo arm (Saltz JCO 2008)"),
    RegimenTarget(_CRC, "FOLFOX-BEVACIZUMAB", "colorectal stage IV, ECOG 0-1, first line", _colorectal_first_line,
                  0.47, 9.4, 21.3, "NO16966 chemotherapy+bevacizumab arm (Saltz JCO 2008)"),
    RegimenTarget(_CRC, "FOLFIRI", "colorectal stage IV, ECOG 0-1, first line", _colorectal_first_line,
                  0.387, 8.0, 18.6,
                  "CRYSTAL FOLFIRI arm, all comers (Van Cutsem NEJM 2009)"),
    RegimenTarget(_CRC, "FOLFIRI-CETUXIMAB", "colorectal KRAS wild-type, stage IV, ECOG 0-1, first line",
                  _colorectal_kras_wild_type, 0.573, 9.9, 23.5,
                  "CRYSTAL KRAS wild-type FOLFIRI+cetuximab (Van Cutsem JCO 2011)"),
    RegimenTarget(_OVARY, "CARBOPLATIN-PACLITAXEL", "ovarian first line, stage III-IV, ECOG 0-1", _ovarian_first_line,
                  0.48, 10.3, 39.3, "GOG-218 control arm PFS/OS (Burger NEJM 2011); ORR ICON7 (Perren NEJM 2011)"),
    RegimenTarget(_OVARY, "CARBOPLATIN-PACLITAXEL-BEVACIZUMAB", "ovarian first line, stage III-IV, ECOG 0-1",
                  _ovarian_first_line, 0.67, 14.1, 39.7,
                  "GOG-218 bevacizumab-throughout arm (Burger NEJM 2011); ORR ICON7 (Perren NEJM 2011)"),
    RegimenTarget(_OVARY, "CARBOPLATIN-PLD", "ovarian platinum-sensitive relapse, ECOG 0-1", _ovarian_relapsed,
                  0.55, 11.3, 30.7, "CALYPSO PFS/OS (Pujade-Lauraine JCO 2010; Wagner BJC 2012); ORR assumed "
                  "from platinum doublets in relapse (AGO-OVAR 2.5, OCEANS: 47-57 %)"),
)


@dataclass(frozen=True)
class ResponseContrast:
    """A published response rate in a biomarker subgroup: checks an effect modifier, not fitted."""

    cancer: CancerType
    regimen: str
    population: str
    select: Selector
    response_rate: float
    tolerance: float
    source: str


RESPONSE_CONTRASTS: tuple[ResponseContrast, ...] = (
    ResponseContrast(_LUNG, "CARBOPLATIN-PEMETREXED-PEMBROLIZUMAB", "KEYNOTE-189 population, PD-L1 TPS >= 50 %",
                     _lung_keynote189_tps(50, 101), 0.614, 0.08, "KEYNOTE-189 (Gandhi NEJM 2018)"),
    ResponseContrast(_LUNG, "CARBOPLATIN-PEMETREXED", "KEYNOTE-189 population, PD-L1 TPS >= 50 %",
                     _lung_keynote189_tps(50, 101), 0.229, 0.08, "KEYNOTE-189 (Gandhi NEJM 2018)"),
    ResponseContrast(_LUNG, "CARBOPLATIN-PEMETREXED-PEMBROLIZUMAB", "KEYNOTE-189 population, PD-L1 TPS < 1 %",
                     _lung_keynote189_tps(0, 1), 0.323, 0.08, "KEYNOTE-189 (Gandhi NEJM 2018)"),
    ResponseContrast(_LUNG, "CARBOPLATIN-PEMETREXED", "KEYNOTE-189 population, PD-L1 TPS < 1 %",
                     _lung_keynote189_tps(0, 1), 0.143, 0.08, "KEYNOTE-189 (Gandhi NEJM 2018)"),
    ResponseContrast(_CRC, "FOLFIRI-CETUXIMAB", "colorectal KRAS mutant, stage IV, ECOG 0-1, first line",
                     _colorectal_kras_mutant, 0.313, 0.08, "CRYSTAL KRAS mutant (Van Cutsem JCO 2011)"),
    ResponseContrast(_CRC, "FOLFIRI", "colorectal KRAS mutant, stage IV, ECOG 0-1, first line",
                     _colorectal_kras_mutant, 0.361, 0.08, "CRYSTAL KRAS mutant (Van Cutsem JCO 2011)"),
)


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
