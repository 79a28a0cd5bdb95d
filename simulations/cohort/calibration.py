"""Calibration targets from published trials and registries, how the generator measures against them,
and the fit of the per-regimen intercepts/scales.

Every "generated" figure is measured on a generated sample (observed best response, Kaplan-Meier medians
of the censored outcomes), never typed by hand:

    python -m simulations.cohort.calibration --patients 100000            # print the tables
    python -m simulations.cohort.calibration --patients 100000 --write    # refresh CALIBRATION.md
    python -m simulations.cohort.calibration --fit                        # re-fit RegimenOutcome defaults
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from sksurv.nonparametric import kaplan_meier_estimator

from shared.contract import GENOMIC, IMAGING, PATHOLOGY
from shared.vocabulary import CancerType
from simulations.cohort.config import DAYS_PER_MONTH, CohortConfig, RegimenOutcome, default_consortium
from simulations.cohort.generator import Consortium, generate_consortium
from simulations.cohort.outcomes import SurvivalParameters, regimen_truth, survival

_BREAST, _LUNG, _CRC, _OVARY = CancerType.BREAST, CancerType.NSCLC, CancerType.COLORECTAL, CancerType.OVARIAN
Selector = Callable[[pd.DataFrame], np.ndarray]
CALIBRATION_DOC = Path(__file__).with_name("CALIBRATION.md")
TABLE_START, TABLE_END = "<!-- calibration-table:start -->", "<!-- calibration-table:end -->"

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


# ---------------------------------------------------------------------------------------- measures
def kaplan_meier_median(days: np.ndarray, event: np.ndarray) -> float:
    """Kaplan-Meier median (days); NaN when the curve never reaches 50 %."""
    if len(days) == 0 or not event.any():
        return float("nan")
    times, surv = kaplan_meier_estimator(event.astype(bool), days.astype(float))
    below = np.flatnonzero(surv <= 0.5)
    return float(times[below[0]]) if len(below) else float("nan")


def _given(patients: pd.DataFrame, cancer: CancerType, regimen: str, select: Selector) -> pd.DataFrame:
    """Patients of this cancer in the subgroup who were given the regimen."""
    return patients[(patients["cancer_type"].to_numpy() == cancer.value) & select(patients)
                    & (patients["regimen"].to_numpy() == regimen)]


def regimen_calibration(consortium: Consortium) -> pd.DataFrame:
    """Target vs generated response rate and Kaplan-Meier medians per regimen target."""
    patients = consortium.complete_patients
    rows = []
    for target in REGIMEN_TARGETS:
        given = _given(patients, target.cancer, target.regimen, target.select)
        responders = given["best_response"].isin(["CR", "PR"]).to_numpy()
        for quantity, wanted, generated, tolerance in (
            ("objective response rate", target.response_rate, responders.mean() if len(given) else np.nan,
             RESPONSE_TOLERANCE),
            ("median PFS (months)", target.median_pfs_months,
             kaplan_meier_median(given["pfs_days"].to_numpy(float), given["pfs_event"].to_numpy(bool))
             / DAYS_PER_MONTH, MEDIAN_TOLERANCE),
            ("median OS (months)", target.median_os_months,
             kaplan_meier_median(given["os_days"].to_numpy(float), given["os_event"].to_numpy(bool))
             / DAYS_PER_MONTH, MEDIAN_TOLERANCE),
        ):
            relative = quantity.startswith("median")
            within = abs(generated - wanted) <= (tolerance * wanted if relative else tolerance)
            rows.append({"regimen": target.regimen, "population": target.population, "quantity": quantity,
                         "target": wanted, "generated": float(generated),
                         "tolerance": f"±{tolerance:.0%}" if relative else f"±{tolerance:.2f}",
                         "within": bool(within), "n": len(given), "source": target.source})
    truth = consortium.truth
    for contrast in RESPONSE_CONTRASTS:
        subgroup = patients[(patients["cancer_type"].to_numpy() == contrast.cancer.value) & contrast.select(patients)]
        rows_under = truth[(truth["regimen"] == contrast.regimen) & truth["patient_id"].isin(subgroup["patient_id"])]
        generated = float(rows_under["p_response"].mean())
        rows.append({"regimen": contrast.regimen, "population": contrast.population,
                     "quantity": "response rate if all were given it (ground truth; effect modifier, not fitted)",
                     "target": contrast.response_rate, "generated": generated,
                     "tolerance": f"±{contrast.tolerance:.2f}",
                     "within": bool(abs(generated - contrast.response_rate) <= contrast.tolerance),
                     "n": len(rows_under), "source": contrast.source})
    return pd.DataFrame(rows)


def share_calibration(consortium: Consortium) -> pd.DataFrame:
    """Target vs generated prevalences and case-mix shares (complete values, before missingness)."""
    patients = consortium.complete_patients
    rows = []
    for target in SHARE_TARGETS:
        base = target.denominator(patients)
        generated = float(target.numerator(patients)[base].mean())
        rows.append({"quantity": target.name, "target": target.target, "generated": generated,
                     "tolerance": f"±{target.tolerance:.3f}".rstrip("0"),
                     "within": abs(generated - target.target) <= target.tolerance, "n": int(base.sum()),
                     "source": target.source})
    return pd.DataFrame(rows)


def expected_presence(consortium: Consortium) -> pd.DataFrame:
    """Per site: share of patients with each modality / PET field recorded, expected from the profile."""
    rows = []
    for cohort in consortium.sites:
        site, patients = cohort.profile, cohort.patients
        gaps = site.missingness
        expected = {
            "pathology": 1 - gaps.pathology_rate,
            "imaging": (1 - gaps.imaging_rate) if site.has_imaging else 0.0,
            "suv_max": (1 - gaps.imaging_rate) * (1 - gaps.field_rate) if site.has_pet_ct else 0.0,
            "genomic": (1 - gaps.genomic_rate) if site.has_genomic_panel else 0.0,
            "best_response": 1 - gaps.response_not_evaluable_rate,
        }
        generated = {
            "pathology": patients[list(PATHOLOGY)].notna().any(axis=1).mean(),
            "imaging": patients[list(IMAGING)].notna().any(axis=1).mean(),
            "suv_max": patients["suv_max"].notna().mean(),
            "genomic": patients[list(GENOMIC)].notna().any(axis=1).mean(),
            "best_response": patients["best_response"].notna().mean(),
        }
        for field, wanted in expected.items():
            rows.append({"site_id": site.site_id, "recorded": field, "target": wanted,
                         "generated": float(generated[field]), "n": len(patients),
                         "within": abs(generated[field] - wanted) <= 0.03})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- fit
def _population_median(params: SurvivalParameters, endpoint: str) -> float:
    """Day at which the subgroup's average true survival crosses 50 %."""
    low, high = 0.0, np.log(1e5)
    for _ in range(25):
        mid = (low + high) / 2
        s = survival(params, np.array([np.exp(mid)]), endpoint).mean()
        low, high = (mid, high) if s > 0.5 else (low, mid)
    return float(np.exp((low + high) / 2))


def fit_regimen_outcomes(config: CohortConfig,
                         total_patients: int = 200_000) -> dict[CancerType, dict[str, RegimenOutcome]]:
    """Fit each regimen's response intercept and progression/post-progression scales to its target.

    Uses the analytic truth on the trial-like subgroup of the patients who got the regimen (features
    and assignment do not depend on these parameters), so the fit is exact up to the sample of patients:
    the intercept matches the response rate, then alternating bisections match the PFS and OS medians.
    """
    consortium = generate_consortium(config.scaled(total_patients))
    patients = consortium.complete_patients
    model = config.outcome_model
    fitted = {cancer: dict(by_code) for cancer, by_code in model.regimens.items()}
    for target in REGIMEN_TARGETS:
        given = _given(patients, target.cancer, target.regimen, target.select)
        outcome = fitted[target.cancer][target.regimen]

        def params(candidate: RegimenOutcome) -> SurvivalParameters:
            regimens = {**fitted, target.cancer: {**fitted[target.cancer], target.regimen: candidate}}
            return regimen_truth(given, target.regimen, model.model_copy(update={"regimens": regimens}))

        logit = outcome.response_logit
        for _ in range(8):
            probability = params(outcome.model_copy(update={"response_logit": logit})).response_probability.mean()
            logit += np.log(target.response_rate / (1 - target.response_rate)) - np.log(probability / (1 - probability))
        outcome = outcome.model_copy(update={"response_logit": round(float(logit), 3)})
        for _ in range(3):
            for field, endpoint, months in (("progression_scale_days", "pfs", target.median_pfs_months),
                                            ("post_progression_scale_days", "os", target.median_os_months)):
                low, high = np.log(5.0), np.log(50_000.0)
                for _ in range(20):
                    mid = (low + high) / 2
                    median = _population_median(params(outcome.model_copy(update={field: np.exp(mid)})), endpoint)
                    low, high = (mid, high) if median < months * DAYS_PER_MONTH else (low, mid)
                outcome = outcome.model_copy(update={field: round(float(np.exp((low + high) / 2)), 1)})
        fitted[target.cancer][target.regimen] = outcome
    return fitted


# ------------------------------------------------------------------------------------------ report
def _markdown(frame: pd.DataFrame, columns: list[str]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else "**no**"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"
        return str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines)


def calibration_markdown(consortium: Consortium) -> str:
    """The three calibration tables as markdown, measured on this consortium."""
    n = consortium.config.n_patients
    return "\n\n".join([
        f"Measured on the default consortium scaled to {n:,} patients (seed {consortium.config.seed}) by "
        f"`python -m simulations.cohort.calibration --patients {round(n, -3)} --write`.",
        "### Regimens (trial-like subgroups; observed best response, Kaplan-Meier medians)",
        _markdown(regimen_calibration(consortium),
                  ["regimen", "population", "quantity", "target", "generated", "tolerance", "within", "n", "source"]),
        "### Prevalences and case mix (complete values)",
        _markdown(share_calibration(consortium), ["quantity", "target", "generated", "tolerance", "within", "n",
                                                  "source"]),
        "### Recorded modalities per site (target from the site profile, tolerance ±0.03)",
        _markdown(expected_presence(consortium), ["site_id", "recorded", "target", "generated", "within", "n"]),
    ])


def write_calibration_doc(consortium: Consortium, path: Path = CALIBRATION_DOC) -> None:
    """Replace the measured tables between the markers of CALIBRATION.md."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    path.write_text(text[:start] + "\n" + calibration_markdown(consortium) + "\n" + text[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure (or re-fit) the cohort calibration.")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--write", action="store_true", help="refresh the tables in CALIBRATION.md")
    parser.add_argument("--fit", action="store_true", help="print re-fitted RegimenOutcome defaults")
    args = parser.parse_args(argv)
    config = default_consortium(args.patients, seed=args.seed)
    if args.fit:
        for cancer, by_code in fit_regimen_outcomes(config, args.patients).items():
            print(f"        CancerType.{cancer.name}: {{")
            for code, outcome in by_code.items():
                print(f'            "{code}": ({outcome.response_logit}, {outcome.progression_scale_days}, '
                      f'{outcome.post_progression_scale_days}),')
            print("        },")
        return 0
    consortium = generate_consortium(config)
    if args.write:
        write_calibration_doc(consortium)
    print(calibration_markdown(consortium))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

