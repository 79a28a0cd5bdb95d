"""The causal outcome model: latent drug sensitivity -> RECIST best response -> progression and death.

For a patient x with cancer c under regimen r (CALIBRATION.md writes it out in full):

* latent sensitivity  S = eta_r(x) + e,  e ~ Logistic(0, 1);
  best response CR if S >= k_CR, PR if 0 <= S < k_CR, SD if k_PD <= S < 0, PD if S < k_PD,
  so P(response) = expit(eta_r(x)) (ordinal logistic model);
* given best response k, an illness-death model (stable -> progressed -> dead, or stable -> dead) with
  Weibull hazards of one shape a and a gamma frailty Z (mean 1, variance theta) shared by all three:
  progression      Z l01 t^a,  l01 = exp(p_r(x) + d_k) / L_r^a
  death, stable    Z l02 t^a,  l02 = w_c * l12
  death, progressed Z l12 t^a, l12 = exp(q_r(x) + g_k) / M_r^a   (clock-forward, Markov);
  PFS = first of progression or death, OS = death, so PFS <= OS by construction;
* integrating Z out gives closed forms for every regimen, with G(h, t) = (1 + theta h t^a)^(-1/theta):
  S_PFS(t) = sum_k P(k) G(l01 + l02, t)
  S_OS(t)  = S_PFS(t) + sum_k P(k) l01 / (l12 - l01 - l02) (G(l01 + l02, t) - G(l12, t)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.vocabulary import REGIMEN_BY_CODE, BestResponse, CancerType, DrugClass
from simulations.cohort.config import OutcomeEffect, OutcomeModel

CATEGORIES: tuple[str, ...] = tuple(b.value for b in BestResponse)  # CR, PR, SD, PD
REFERENCE_TUMOUR_VOLUME_ML = 40.0


@dataclass(frozen=True)
class SurvivalParameters:
    """Closed-form outcome distribution of n patients under one regimen each (see the module docstring).

    Rate arrays are (n, 4) over best response CR, PR, SD, PD; cumulative hazard = Z exp(rate) t**shape.
    """

    category_probability: np.ndarray
    log_progression_rate: np.ndarray
    log_death_before_progression_rate: np.ndarray
    log_death_after_progression_rate: np.ndarray
    shape: np.ndarray
    frailty_variance: np.ndarray

    @property
    def response_probability(self) -> np.ndarray:
        return self.category_probability[:, 0] + self.category_probability[:, 1]

    def rows(self, index: np.ndarray | slice) -> SurvivalParameters:
        return SurvivalParameters(*(getattr(self, f)[index] for f in _FIELDS))


_FIELDS = ("category_probability", "log_progression_rate", "log_death_before_progression_rate",
           "log_death_after_progression_rate", "shape", "frailty_variance")


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _flag(patients: pd.DataFrame, name: str) -> np.ndarray:
    return patients[name].to_numpy(dtype=float) == 1


def _add_effect(totals: tuple[np.ndarray, np.ndarray, np.ndarray], effect: OutcomeEffect, where: np.ndarray) -> None:
    """Add an effect to the response, progression and death predictors (in place) of the patients `where` holds."""
    for total, value in zip(totals, (effect.response, effect.progression, effect.death), strict=True):
        total += value * where


def linear_predictors(patients: pd.DataFrame, regimen_code: str,
                      model: OutcomeModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Response logit, progression log-hazard and death log-hazard relative to the reference patient
    (before the regimen's calibrated intercept and scales, and before the response category)."""
    regimen = REGIMEN_BY_CODE[regimen_code]
    classes = regimen.classes
    cov, mod = model.covariates, model.modifiers
    n = len(patients)
    cancer = patients["cancer_type"].to_numpy()
    ecog = patients["ecog"].to_numpy(dtype=float)
    decades = (patients["age_years"].to_numpy(dtype=float) - 60.0) / 10.0
    charlson = patients["charlson_index"].to_numpy(dtype=float)
    prior = patients["prior_lines"].to_numpy(dtype=float)
    stage = patients["stage_group"].to_numpy()
    stage_iii = (stage == "III").astype(float)
    stage_i_ii = np.isin(stage, ["I", "II"]).astype(float)
    by_cancer = {c.value: model.cancers[c] for c in CancerType}

    def per_cancer(name: str) -> np.ndarray:
        return np.select([cancer == c for c in by_cancer], [getattr(o, name) for o in by_cancer.values()], 0.0)
    burden = np.log(np.nan_to_num(patients["mtv_ml"].to_numpy(dtype=float), nan=REFERENCE_TUMOUR_VOLUME_ML)
                    / REFERENCE_TUMOUR_VOLUME_ML)

    def prognostic(outcome: str, *stage_terms: np.ndarray) -> np.ndarray:
        """One outcome's covariate and stage terms (summed in this order: floating point is order-sensitive)."""
        def slope(effect: OutcomeEffect) -> float:
            return getattr(effect, outcome)
        total = (slope(cov.per_ecog_point) * ecog + slope(cov.ecog_2_or_more) * (ecog >= 2)
                 + slope(cov.per_decade_of_age) * decades + slope(cov.per_charlson_point) * charlson
                 + slope(cov.per_prior_line) * prior)
        for term in stage_terms:
            total = total + term
        return total + slope(cov.per_log_burden) * burden

    response = prognostic("response", per_cancer("response_stage_below_iv") * (stage != "IV"))
    progression = prognostic("progression", per_cancer("progression_stage_iii") * stage_iii,
                             per_cancer("progression_stage_i_ii") * stage_i_ii)
    death = prognostic("death", per_cancer("death_stage_iii") * stage_iii, per_cancer("death_stage_i_ii") * stage_i_ii)
    totals = (response, progression, death)

    # Platinum and homologous-recombination deficiency (any cancer).
    if DrugClass.PLATINUM in classes:
        _add_effect(totals, mod.brca_with_platinum, _flag(patients, "brca1") | _flag(patients, "brca2"))

    breast = cancer == CancerType.BREAST.value
    if breast.any():
        her2 = _flag(patients, "her2_positive")
        hormone = _flag(patients, "er_positive") | _flag(patients, "pr_positive")
        ki67 = np.nan_to_num(patients["ki67_percent"].to_numpy(dtype=float), nan=20.0)
        _add_effect(totals, mod.her2_with_anti_her2 if DrugClass.ANTI_HER2 in classes else mod.her2_without_anti_her2,
                    her2)
        response += breast * (mod.hormone_receptor_positive.response * hormone
                              + mod.breast_ki67_per_20_points.response * (ki67 - 20.0) / 20.0)
        progression += breast * mod.hormone_receptor_positive.progression * hormone
        death += breast * mod.hormone_receptor_positive.death * hormone

    colorectal = cancer == CancerType.COLORECTAL.value
    if colorectal.any():
        kras = _flag(patients, "kras")
        braf = _flag(patients, "braf") & colorectal
        if DrugClass.ANTI_EGFR in classes:
            wild_type = ~kras & ~braf
            response += (mod.kras_wild_type_with_anti_egfr.response * wild_type
                         + mod.kras_mutant_with_anti_egfr.response * kras)
            progression += (mod.kras_wild_type_with_anti_egfr.progression * wild_type
                            + mod.kras_mutant_with_anti_egfr.progression * kras)
            death += mod.kras_wild_type_with_anti_egfr.death * wild_type
        response += mod.braf_colorectal.response * braf + mod.msi_high_colorectal.response * (
            _flag(patients, "msi_high") & colorectal)
        progression += mod.braf_colorectal.progression * braf
        death += mod.braf_colorectal.death * braf

    lung = cancer == CancerType.NSCLC.value
    if lung.any():
        squamous = patients["histology"].to_numpy() == "nsclc_squamous"
        driver = (_flag(patients, "egfr") | _flag(patients, "alk")) & lung
        if DrugClass.ANTIFOLATE in classes:
            response += mod.squamous_with_antifolate.response * squamous
            progression += mod.squamous_with_antifolate.progression * squamous
        if DrugClass.IMMUNE_CHECKPOINT_INHIBITOR in classes:
            tps = np.nan_to_num(patients["pdl1_tps_percent"].to_numpy(dtype=float), nan=0.0)
            high = tps >= 50
            tmb_high = np.nan_to_num(patients["tmb_mut_per_mb"].to_numpy(dtype=float), nan=0.0) >= 10
            retained = np.where(driver, mod.immunotherapy_egfr_alk_retained_share, 1.0)
            io_response = (np.select([high, tps >= 1], [mod.immunotherapy_pdl1_50_plus.response,
                                                        mod.immunotherapy_pdl1_1_to_49.response],
                                     mod.immunotherapy_pdl1_below_1.response)
                           + mod.immunotherapy_tmb_10_plus.response * tmb_high
                           + mod.immunotherapy_msi_high.response * _flag(patients, "msi_high"))
            response += lung * retained * io_response
            progression += lung * retained * (mod.immunotherapy.progression
                                              + mod.immunotherapy_pdl1_50_plus.progression * high)
            death += lung * retained * (mod.immunotherapy.death + mod.immunotherapy_pdl1_50_plus.death * high)
        death += mod.egfr_alk_nsclc.death * driver

    ovarian = cancer == CancerType.OVARIAN.value
    if ovarian.any():
        serous = patients["histology"].to_numpy() == "ovarian_high_grade_serous"
        response += mod.high_grade_serous.response * serous

    return response, progression + np.zeros(n), death + np.zeros(n)


def regimen_truth(patients: pd.DataFrame, regimen_code: str, model: OutcomeModel) -> SurvivalParameters:
    """Analytic response and survival distributions of these patients (one cancer type) under a regimen."""
    cancers = set(patients["cancer_type"].unique())
    if len(cancers) != 1:
        raise ValueError(f"regimen_truth takes patients of one cancer type, got {sorted(cancers)}")
    cancer = CancerType(cancers.pop())
    if cancer not in REGIMEN_BY_CODE[regimen_code].cancer_types:
        raise ValueError(f"{regimen_code} is not a {cancer.value} regimen")
    hazards = model.cancers[cancer]
    scale = model.regimens[cancer][regimen_code]
    cats = model.response_categories
    response, progression, death = linear_predictors(patients, regimen_code, model)
    response = response + scale.response_logit

    at_least_cr = _expit(response - cats.complete_response_cutpoint)
    at_least_pr = _expit(response)
    at_least_sd = _expit(response - cats.progression_cutpoint)
    probability = np.column_stack([at_least_cr, at_least_pr - at_least_cr, at_least_sd - at_least_pr,
                                   1.0 - at_least_sd])
    progression_offset = np.array([cats.progression[k] for k in CATEGORIES])
    death_offset = np.array([cats.death[k] for k in CATEGORIES])
    a = hazards.weibull_shape
    log_progression = progression[:, None] + progression_offset[None, :] - a * np.log(scale.progression_scale_days)
    log_death_after = (death[:, None] + death_offset[None, :]
                       - a * np.log(scale.post_progression_scale_days))
    n = len(patients)
    return SurvivalParameters(
        category_probability=probability, log_progression_rate=log_progression,
        log_death_before_progression_rate=log_death_after + np.log(hazards.death_before_progression_ratio),
        log_death_after_progression_rate=log_death_after, shape=np.full(n, a),
        frailty_variance=np.full(n, hazards.frailty_variance))


# ------------------------------------------------------------------------------- survival functions
def _by_category(params: SurvivalParameters, log_t: np.ndarray, endpoint: str) -> np.ndarray:
    """Survival given best response, (n, 4, m), at log-times log_t of shape (n or 1, m)."""
    if endpoint not in ("pfs", "os"):
        raise ValueError(f"endpoint must be 'pfs' or 'os', got {endpoint!r}")
    theta = params.frailty_variance[:, None, None]
    t_power = np.exp(params.shape[:, None, None] * log_t[:, None, :])
    leave_stable = np.exp(params.log_progression_rate) + np.exp(params.log_death_before_progression_rate)
    stable = np.exp(-np.log1p(theta * leave_stable[:, :, None] * t_power) / theta)
    if endpoint == "pfs":
        return stable
    progression = np.exp(params.log_progression_rate)
    after = np.exp(params.log_death_after_progression_rate)
    gap = after - leave_stable
    gap = np.where(np.abs(gap) < 1e-9 * after, 1e-9 * after, gap)  # equal rates: the limit, numerically
    dead_after = np.exp(-np.log1p(theta * after[:, :, None] * t_power) / theta)
    return stable + (progression / gap)[:, :, None] * (stable - dead_after)


def survival(params: SurvivalParameters, days: np.ndarray, endpoint: str) -> np.ndarray:
    """S(t) for n patients at m days -> (n, m); endpoint 'pfs' or 'os'."""
    log_t = np.log(np.maximum(np.asarray(days, dtype=float), 1e-12))[None, :]
    values = np.einsum("nk,nkm->nm", params.category_probability, _by_category(params, log_t, endpoint))
    return np.where(np.asarray(days, dtype=float)[None, :] <= 0, 1.0, values)


def median_days(params: SurvivalParameters, endpoint: str) -> np.ndarray:
    """Per-patient median survival (days) by bisection on log time (precision ~0.005 %); capped at 100,000."""
    n = params.category_probability.shape[0]
    low, high = np.zeros(n), np.full(n, np.log(1e5))
    for _ in range(18):
        mid = (low + high) / 2
        s = np.sum(params.category_probability * _by_category(params, mid[:, None], endpoint)[:, :, 0], axis=1)
        above = s > 0.5
        low = np.where(above, mid, low)
        high = np.where(above, high, mid)
    return np.exp((low + high) / 2)


# -------------------------------------------------------------------------------------- sampling
@dataclass(frozen=True)
class SampledOutcomes:
    """What happened to each patient under the regimen given, before any censoring."""

    best_response: np.ndarray
    progression_free_days: np.ndarray
    death_days: np.ndarray
    progressed_before_death: np.ndarray


def sample_outcomes(params: SurvivalParameters, rng: np.random.Generator) -> SampledOutcomes:
    """Draw best response, frailty, then the illness-death path (rows are patients)."""
    n = params.category_probability.shape[0]
    category = np.minimum((rng.random(n)[:, None] > np.cumsum(params.category_probability, axis=1)).sum(axis=1), 3)
    rows = np.arange(n)
    a = params.shape
    frailty = rng.gamma(1.0 / params.frailty_variance, params.frailty_variance)

    def weibull(log_rate: np.ndarray) -> np.ndarray:
        return (rng.exponential(size=n) / (frailty * np.exp(log_rate[rows, category]))) ** (1.0 / a)

    progression = weibull(params.log_progression_rate)
    death_stable = weibull(params.log_death_before_progression_rate)
    progressed = progression < death_stable
    after_rate = frailty * np.exp(params.log_death_after_progression_rate[rows, category])
    death_progressed = (progression**a + rng.exponential(size=n) / after_rate) ** (1.0 / a)
    death = np.where(progressed, death_progressed, death_stable)
    return SampledOutcomes(best_response=np.array(CATEGORIES)[category],
                           progression_free_days=np.minimum(progression, death_stable), death_days=death,
                           progressed_before_death=progressed)
