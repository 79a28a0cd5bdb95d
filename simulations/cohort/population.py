"""Who walks into each hospital: the complete (true, unmasked) characteristics of patients starting a regimen.

Vectorised over patients; every prevalence below is written out in CALIBRATION.md with its source.
Fields that do not apply to a cancer (ER for lung, PD-L1 for ovarian) are left empty, as a site would.
Missingness and scanner shift are added later (generator.py), so the truth keeps the complete values.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.contract import CLINICAL, GENOMIC, IMAGING, PATHOLOGY
from shared.vocabulary import HISTOLOGIES, CancerType, RaceEthnicity, Sex
from simulations.cohort.config import SiteProfile

CANCERS: tuple[CancerType, ...] = tuple(CancerType)
RACES: tuple[RaceEthnicity, ...] = tuple(RaceEthnicity)
STAGES: tuple[str, ...] = ("I", "II", "III", "IV")

# Age (mean, sd) of patients starting systemic therapy; sex share male.
AGE_MEAN_SD = {CancerType.BREAST: (57.0, 12.0), CancerType.NSCLC: (66.0, 9.0),
               CancerType.COLORECTAL: (63.0, 11.0), CancerType.OVARIAN: (62.0, 10.0)}
MALE_SHARE = {CancerType.BREAST: 0.01, CancerType.NSCLC: 0.52, CancerType.COLORECTAL: 0.55,
              CancerType.OVARIAN: 0.0}
# Stage group I/II/III/IV at the start of a regimen with measurable disease (neoadjuvant or advanced).
STAGE_SHARES = {CancerType.BREAST: (0.0, 0.20, 0.30, 0.50), CancerType.NSCLC: (0.0, 0.0, 0.20, 0.80),
                CancerType.COLORECTAL: (0.0, 0.0, 0.15, 0.85), CancerType.OVARIAN: (0.0, 0.0, 0.68, 0.32)}
HISTOLOGY_SHARES = {CancerType.BREAST: (0.80, 0.12, 0.08), CancerType.NSCLC: (0.60, 0.28, 0.12),
                    CancerType.COLORECTAL: (0.88, 0.12), CancerType.OVARIAN: (0.72, 0.28)}
# Prior lines 0/1/2 (advanced disease; neoadjuvant breast is always first line).
PRIOR_LINE_SHARES = {CancerType.BREAST: (0.65, 0.25, 0.10), CancerType.NSCLC: (0.85, 0.12, 0.03),
                     CancerType.COLORECTAL: (0.78, 0.17, 0.05), CancerType.OVARIAN: (0.62, 0.28, 0.10)}
CHARLSON_BASE_MEAN = {CancerType.BREAST: 0.5, CancerType.NSCLC: 1.1, CancerType.COLORECTAL: 0.8,
                      CancerType.OVARIAN: 0.6}
ECOG_CANCER_OFFSET = {CancerType.BREAST: -0.25, CancerType.NSCLC: 0.30, CancerType.COLORECTAL: 0.0,
                      CancerType.OVARIAN: 0.0}
ECOG_CUTPOINTS = (-0.35, 2.0, 3.8)
SUV_MEDIAN = {CancerType.BREAST: 6.5, CancerType.NSCLC: 11.0, CancerType.COLORECTAL: 9.0,
              CancerType.OVARIAN: 10.0}
TUMOUR_SIZE_MEDIAN_MM = {CancerType.BREAST: 32.0, CancerType.NSCLC: 42.0, CancerType.COLORECTAL: 35.0,
                         CancerType.OVARIAN: 55.0}
PDL1_TIER_SHARES = (0.32, 0.36, 0.32)  # TPS <1 %, 1-49 %, >=50 % in EGFR/ALK wild-type NSCLC
PDL1_TIER_SHARES_DRIVER = (0.50, 0.35, 0.15)  # EGFR/ALK-driven tumours express less PD-L1


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(p, 1e-9, 1 - 1e-9)
    return np.log(p / (1 - p))


def _expit(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


def _pick(rng: np.random.Generator, shares: np.ndarray) -> np.ndarray:
    """One categorical draw per row of `shares` (rows need not be normalised)."""
    shares = np.asarray(shares, dtype=float)
    cumulative = np.cumsum(shares / shares.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(shares.shape[0])[:, None]
    return np.minimum((u > cumulative).sum(axis=1), shares.shape[1] - 1)


def _flag(rng: np.random.Generator, probability: np.ndarray) -> np.ndarray:
    return rng.random(len(probability)) < probability


def _per_cancer(cancer: np.ndarray, values: dict[CancerType, float]) -> np.ndarray:
    return np.select([cancer == c.value for c in CANCERS], [values[c] for c in CANCERS], np.nan)


def _stage_shares(cancer: CancerType, late_stage_shift: float) -> np.ndarray:
    shares = np.array(STAGE_SHARES[cancer])
    stage_iv = float(_expit(_logit(shares[3]) + late_stage_shift))
    earlier = shares[:3] * (1 - stage_iv) / shares[:3].sum()
    return np.array([*earlier, stage_iv])


def draw_patients(site: SiteProfile, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """`n` patients of this site with complete clinical, pathology, imaging and genomic fields."""
    mix = np.array([site.cancer_mix.get(c, 0.0) for c in CANCERS])
    cancer_index = _pick(rng, np.tile(mix, (n, 1)))
    race_mix = np.array([site.race_mix.get(r, 0.0) for r in RACES])
    race = np.array([r.value for r in RACES])[_pick(rng, np.tile(race_mix, (n, 1)))]
    asian = race == RaceEthnicity.ASIAN.value
    black = race == RaceEthnicity.BLACK.value

    nan = np.full(n, np.nan)
    col: dict[str, np.ndarray] = {name: nan.copy() for name in (*PATHOLOGY, *IMAGING, *GENOMIC)}
    cancer = np.array([c.value for c in CANCERS])[cancer_index]
    sex = np.full(n, Sex.FEMALE.value, dtype=object)
    age = np.empty(n)
    stage = np.empty(n, dtype=object)
    histology = np.empty(n, dtype=object)
    prior_lines = np.zeros(n, dtype=int)
    charlson_mean = np.empty(n)
    ecog_offset = np.empty(n)

    for k, c in enumerate(CANCERS):
        rows = np.flatnonzero(cancer_index == k)
        m = len(rows)
        if m == 0:
            continue
        mean, sd = AGE_MEAN_SD[c]
        age[rows] = np.clip(np.round(rng.normal(mean + site.mean_age_shift_years, sd, m)), 21, 92)
        sex[rows[rng.random(m) < MALE_SHARE[c]]] = Sex.MALE.value
        stage[rows] = np.array(STAGES)[_pick(rng, np.tile(_stage_shares(c, site.late_stage_shift), (m, 1)))]
        histology[rows] = np.array(HISTOLOGIES[c])[_pick(rng, np.tile(HISTOLOGY_SHARES[c], (m, 1)))]
        lines = _pick(rng, np.tile(PRIOR_LINE_SHARES[c], (m, 1)))
        if c == CancerType.BREAST:
            lines[stage[rows] != "IV"] = 0
        prior_lines[rows] = lines
        charlson_mean[rows] = CHARLSON_BASE_MEAN[c]
        ecog_offset[rows] = ECOG_CANCER_OFFSET[c]

    # Comorbidity rises with age; ECOG with age and comorbidity; a deprived catchment shifts both.
    charlson_mean = charlson_mean * np.exp(0.035 * (age - 62) + 0.4 * site.frailty_shift)
    charlson = np.clip(rng.poisson(charlson_mean * rng.gamma(1.5, 1 / 1.5, n)), 0, 12)
    latent = (0.03 * (age - 62) + 0.25 * (charlson - 0.8) + ecog_offset + site.frailty_shift
              + rng.logistic(0, 1, n))
    ecog = np.searchsorted(np.array(ECOG_CUTPOINTS), latent)

    _draw_breast_biology(col, rng, cancer == CancerType.BREAST.value, age, black)
    _draw_genomics(col, rng, cancer, histology, asian, sex, age)
    _draw_pathology(col, rng, cancer, histology)
    _draw_imaging(col, rng, cancer, stage)

    frame = pd.DataFrame({
        "age_years": age, "sex": sex, "race_ethnicity": race, "ecog": ecog, "stage_group": stage,
        "cancer_type": cancer, "histology": histology, "charlson_index": charlson, "prior_lines": prior_lines,
        **col,
    })
    return frame[[*CLINICAL, *PATHOLOGY, *IMAGING, *GENOMIC]]


def _draw_breast_biology(col: dict[str, np.ndarray], rng: np.random.Generator, breast: np.ndarray,
                         age: np.ndarray, black: np.ndarray) -> None:
    """Receptor subtypes (HER2+ ~18 %, triple negative ~15 %, twice as common in Black women) and Ki-67."""
    rows = np.flatnonzero(breast)
    m = len(rows)
    her2 = rng.random(m) < 0.18
    er_negative_given_her2_negative = np.where(black[rows], 0.34, 0.17) * np.where(age[rows] < 45, 1.4, 1.0)
    er = np.where(her2, rng.random(m) < 0.55, rng.random(m) >= er_negative_given_her2_negative)
    pr = np.where(er, rng.random(m) < 0.82, rng.random(m) < 0.05)
    triple_negative = ~er & ~pr & ~her2
    grade_shares = np.where(triple_negative[:, None], [0.03, 0.17, 0.80],
                            np.where(her2[:, None], [0.05, 0.35, 0.60], [0.15, 0.50, 0.35]))
    grade = _pick(rng, grade_shares) + 1
    ki67_median = np.where(triple_negative, 50.0, np.where(her2, 30.0, 15.0)) * np.exp(0.25 * (grade - 2))
    ki67 = np.clip(np.round(ki67_median * np.exp(rng.normal(0, 0.5, m))), 1, 95)
    col["her2_positive"][rows] = her2
    col["er_positive"][rows] = er
    col["pr_positive"][rows] = pr
    col["grade"][rows] = grade
    col["ki67_percent"][rows] = ki67


def _draw_genomics(col: dict[str, np.ndarray], rng: np.random.Generator, cancer: np.ndarray,
                   histology: np.ndarray, asian: np.ndarray, sex: np.ndarray, age: np.ndarray) -> None:
    """Panel alterations with cancer-, histology- and ancestry-specific prevalences; drivers mutually exclusive."""
    n = len(cancer)
    u = rng.random((n, 8))
    breast, lung, crc, ovary = (cancer == c.value for c in CANCERS)
    adeno = histology == "nsclc_adenocarcinoma"
    squamous = histology == "nsclc_squamous"
    serous = histology == "ovarian_high_grade_serous"
    female = sex == Sex.FEMALE.value
    her2 = col["her2_positive"] == 1
    er = col["er_positive"] == 1
    triple_negative = breast & (col["er_positive"] == 0) & (col["pr_positive"] == 0) & (col["her2_positive"] == 0)

    # MSI-high first (it drives BRAF and TMB in colorectal cancer).
    msi = np.where(crc, u[:, 0] < 0.045, np.where(lung, u[:, 0] < 0.007, False))

    # Lung drivers: EGFR (15 % non-Asian / 45 % Asian adenocarcinoma), then ALK, KRAS, BRAF among the rest.
    egfr_p = np.where(adeno, np.where(asian, 0.45, 0.15) * np.where(female, 1.2, 0.85),
                      np.where(squamous, 0.03, 0.08))
    egfr = np.where(lung, u[:, 1] < egfr_p, u[:, 1] < 0.005)
    alk = lung & ~egfr & (u[:, 2] < np.where(adeno, 0.06, np.where(squamous, 0.005, 0.03)))
    kras_lung_p = np.where(adeno, np.where(asian, 0.18, 0.36), np.where(squamous, 0.05, 0.15))
    braf_crc_p = np.where(msi, 0.40, 0.075)
    braf = np.where(crc, u[:, 3] < braf_crc_p,
                    np.where(lung, ~egfr & ~alk & (u[:, 3] < 0.03),
                             u[:, 3] < np.where(ovary & ~serous, 0.05, 0.005)))
    kras_p = np.select([lung, crc, ovary & ~serous], [kras_lung_p, np.where(msi, 0.25, 0.50), 0.12], 0.01)
    kras = ~egfr & ~alk & ~braf & (u[:, 4] < kras_p)

    tp53_p = np.select(
        [triple_negative, breast & her2, breast, lung & squamous, lung & egfr, lung, crc, ovary & serous, ovary],
        [0.80, 0.70, 0.22, 0.82, 0.55, 0.48, 0.60, 0.96, 0.25], 0.3)
    tp53 = u[:, 5] < tp53_p

    young = np.where(age < 45, 2.0, 1.0)
    brca1_p = np.select([breast & triple_negative, breast, ovary & serous, ovary, lung, crc],
                        [0.11 * young, 0.012 * young, 0.12, 0.02, 0.008, 0.008], 0.01)
    brca2_p = np.select([breast, ovary & serous, ovary, lung, crc], [0.03 * young, 0.07, 0.02, 0.02, 0.015], 0.01)
    brca_draw = u[:, 6]
    brca1 = brca_draw < brca1_p
    brca2 = (brca_draw >= brca1_p) & (brca_draw < brca1_p + brca2_p)

    pik3ca_p = np.select([triple_negative, breast & her2, breast & er, breast, crc, lung, ovary & serous, ovary],
                         [0.10, 0.30, 0.40, 0.25, 0.18, 0.04, 0.03, 0.25], 0.05)
    pik3ca = u[:, 7] < pik3ca_p

    tmb_median = np.select(
        [crc & msi, lung & msi, crc, lung & (egfr | alk), lung & squamous, lung, breast, ovary],
        [45.0, 35.0, 4.0, 3.0, 10.0, 7.0, 2.5, 3.5], 4.0)
    tmb = np.clip(np.round(tmb_median * np.exp(rng.normal(0, 0.6, n)), 1), 0.1, 300.0)

    for name, values in (("tp53", tp53), ("kras", kras), ("egfr", egfr), ("alk", alk), ("braf", braf),
                         ("brca1", brca1), ("brca2", brca2), ("pik3ca", pik3ca)):
        col[name] = values.astype(float)
    col["tmb_mut_per_mb"] = tmb
    col["msi_high"] = np.where(crc | lung, msi.astype(float), np.nan)


def _draw_pathology(col: dict[str, np.ndarray], rng: np.random.Generator, cancer: np.ndarray,
                    histology: np.ndarray) -> None:
    """Grade for non-breast cancers and PD-L1 TPS for lung (lower in EGFR/ALK-driven tumours)."""
    n = len(cancer)
    lung = cancer == CancerType.NSCLC.value
    grade_shares = np.select(
        [(histology == "crc_mucinous")[:, None], (cancer == CancerType.COLORECTAL.value)[:, None],
         (histology == "ovarian_high_grade_serous")[:, None], (cancer == CancerType.OVARIAN.value)[:, None]],
        [[0.05, 0.60, 0.35], [0.10, 0.72, 0.18], [0.0, 0.0, 1.0], [0.35, 0.35, 0.30]],
        [0.15, 0.45, 0.40])
    grade = _pick(rng, grade_shares) + 1
    not_breast = cancer != CancerType.BREAST.value
    col["grade"][not_breast] = grade[not_breast]

    driver = (col["egfr"] == 1) | (col["alk"] == 1)
    tier = _pick(rng, np.where(driver[:, None], PDL1_TIER_SHARES_DRIVER, PDL1_TIER_SHARES))
    tps = np.select([tier == 0, tier == 1], [0.0, rng.integers(1, 50, n)], rng.integers(50, 101, n))
    col["pdl1_tps_percent"][lung] = tps[lung]


def _draw_imaging(col: dict[str, np.ndarray], rng: np.random.Generator, cancer: np.ndarray,
                  stage: np.ndarray) -> None:
    """Largest lesion, lesion count, metabolic tumour volume and true SUVmax (before any scanner factor)."""
    n = len(cancer)
    size_median = _per_cancer(cancer, TUMOUR_SIZE_MEDIAN_MM)
    size_median *= np.select([stage == "II", stage == "III"], [0.75, 1.3], 1.0)
    size = np.clip(np.round(size_median * np.exp(rng.normal(0, 0.45, n))), 5, 300)
    metastatic_extra = rng.poisson(4.0 * rng.gamma(2.0, 0.5, n))
    lesions = 1 + np.select([stage == "IV", stage == "III"], [metastatic_extra, rng.poisson(0.6, n)], 0)
    lesions = np.clip(lesions, 1, 200)
    sphere_ml = np.pi / 6 * size**3 / 1000
    mtv = np.clip(np.round(sphere_ml * (1 + 0.35 * (lesions - 1)) * np.exp(rng.normal(0, 0.35, n)), 1), 0.5, 5000)
    suv_median = _per_cancer(cancer, SUV_MEDIAN) * np.exp(0.15 * (col["grade"] - 2))
    suv_median = np.where(np.isnan(suv_median), 8.0, suv_median)
    suv = np.clip(np.round(suv_median * np.exp(rng.normal(0, 0.4, n)), 1), 1.0, 60.0)
    col["tumour_size_mm"] = size
    col["lesion_count"] = lesions.astype(float)
    col["mtv_ml"] = mtv
    col["suv_max"] = suv
