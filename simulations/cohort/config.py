"""Every knob of the synthetic consortium, typed, with the defaults a user should get.

One `CohortConfig` holds the sites (`SiteProfile`: size, population, practice pattern, equipment,
missingness, scanner calibration, export coding) and the outcome model (`OutcomeModel`: per-regimen
calibrated intercepts/scales, covariate effects, effect modifiers). `default_consortium()` is the
embedded default data set of the project: 6 hospitals, about 4,650 patients.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.contract import CONTRACT_COLUMNS
from shared.site_config import distinct_site_ids
from shared.vocabulary import REGIMEN_BY_CODE, CancerType, RaceEthnicity, regimens_for

DAYS_PER_MONTH = 30.4375


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------- sites
class SporadicMissingness(_Frozen):
    """Per-patient gaps at a site that does have the equipment: lost slides, failed sequencing, skipped fields."""

    pathology_rate: float = Field(0.03, ge=0, le=1, description="whole pathology modality missing")
    imaging_rate: float = Field(0.05, ge=0, le=1, description="whole imaging modality missing")
    genomic_rate: float = Field(0.10, ge=0, le=1, description="panel failed or not sent (tissue insufficient)")
    field_rate: float = Field(0.03, ge=0, le=1, description="single non-clinical cell left empty")
    response_not_evaluable_rate: float = Field(0.02, ge=0, le=1, description="best response not assessable")


class SiteCoding(_Frozen):
    """How a site names and scales its export. The default is the contract itself.

    `export_site_frame` applies it; another engineer can give a site its own column names or units and
    then a mapping file back to the contract, to exercise the harmonisation path.
    """

    column_names: dict[str, str] = Field(default_factory=dict, description="contract column -> site column")
    tumour_size_unit: Literal["mm", "cm"] = "mm"
    boolean_codes: tuple[str, str] = ("true", "false")

    @field_validator("column_names")
    @classmethod
    def _known_columns(cls, names: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(names) - set(CONTRACT_COLUMNS))
        if unknown:
            raise ValueError(f"column_names: {unknown} are not contract columns")
        if len(set(names.values())) != len(names):
            raise ValueError("column_names: two contract columns map to the same site column")
        return names

    @property
    def is_contract(self) -> bool:
        return not self.column_names and self.tumour_size_unit == "mm" and self.boolean_codes == ("true", "false")


class SiteProfile(_Frozen):
    """One hospital: who it treats, how it treats them, what it measures and how it exports."""

    site_id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    display_name: str
    n_patients: int = Field(ge=1)
    cancer_mix: dict[CancerType, float] = Field(description="relative share of each cancer type")
    race_mix: dict[RaceEthnicity, float] = Field(description="relative share of each race/ethnicity")
    mean_age_shift_years: float = Field(0.0, ge=-15, le=15, description="older/younger catchment")
    frailty_shift: float = Field(0.0, ge=-2, le=2, description="log-odds toward worse ECOG and more comorbidity")
    late_stage_shift: float = Field(0.0, ge=-2, le=2, description="log-odds toward stage IV at presentation")
    has_imaging: bool = True
    has_pet_ct: bool = Field(True, description="without PET/CT, suv_max and mtv_ml are never recorded")
    has_genomic_panel: bool = Field(True, description="without a panel the whole genomic modality is missing")
    suv_scale: float = Field(1.0, gt=0.3, lt=3.0, description="scanner/reconstruction factor on recorded SUVmax")
    missingness: SporadicMissingness = SporadicMissingness()
    intensity_preference: float = Field(0.0, ge=-3, le=3, description="log-odds toward intensive regimens")
    regimen_preference: dict[str, float] = Field(default_factory=dict, description="extra log-odds per regimen")
    coding: SiteCoding = SiteCoding()

    @model_validator(mode="after")
    def _consistent(self) -> SiteProfile:
        if not self.cancer_mix or sum(self.cancer_mix.values()) <= 0 or min(self.cancer_mix.values()) < 0:
            raise ValueError(f"{self.site_id}: cancer_mix needs non-negative shares with a positive sum")
        if not self.race_mix or sum(self.race_mix.values()) <= 0 or min(self.race_mix.values()) < 0:
            raise ValueError(f"{self.site_id}: race_mix needs non-negative shares with a positive sum")
        unknown = sorted(set(self.regimen_preference) - set(REGIMEN_BY_CODE))
        if unknown:
            raise ValueError(f"{self.site_id}: regimen_preference has unknown regimen codes {unknown}")
        if self.has_pet_ct and not self.has_imaging:
            raise ValueError(f"{self.site_id}: has_pet_ct needs has_imaging")
        return self


# ------------------------------------------------------------------------------------------ outcomes
class RegimenOutcome(_Frozen):
    """Calibrated per-regimen figures for the reference patient (ECOG 0, 60 y, Charlson 0, first line,
    stage IV, median tumour burden, biomarker-negative); fitted by `calibration.fit_regimen_outcomes`."""

    response_logit: float
    progression_scale_days: float = Field(gt=0)
    post_progression_scale_days: float = Field(gt=0, description="scale of the death hazard after progression")


class CancerOutcome(_Frozen):
    """Hazard shape, the unmeasured frailty shared by progression and death, and what stage means here.

    Stage effects are relative to stage IV: in breast cancer stage II-III means neoadjuvant treatment
    (far better outlook); in ovarian cancer FIGO III vs IV matters much less.
    """

    weibull_shape: float = Field(1.15, gt=0, description="shape of all three illness-death hazards")
    frailty_variance: float = Field(0.4, gt=0, description="gamma frailty shared by progression and death")
    death_before_progression_ratio: float = Field(
        0.12, gt=0, description="death hazard while progression-free, relative to after progression")
    response_stage_below_iv: float = 0.2
    progression_stage_iii: float = -0.6
    death_stage_iii: float = -0.7
    progression_stage_i_ii: float = -1.2
    death_stage_i_ii: float = -1.4


class ResponseCategoryEffects(_Frozen):
    """Log hazard ratios by best response, relative to stable disease: responders progress and die later."""

    progression: dict[str, float] = Field(default_factory=lambda: {"CR": -1.8, "PR": -1.0, "SD": 0.0, "PD": 1.7})
    death: dict[str, float] = Field(default_factory=lambda: {"CR": -0.6, "PR": -0.3, "SD": 0.0, "PD": 0.4})
    complete_response_cutpoint: float = Field(2.8, gt=0, description="latent sensitivity above which CR")
    progression_cutpoint: float = Field(-2.6, lt=0, description="latent sensitivity below which PD")


class OutcomeEffect(_Frozen):
    """One effect on the three outcomes: response on the logit scale, progression and death as log hazard ratios."""

    response: float = 0.0
    progression: float = 0.0
    death: float = 0.0


class CovariateEffects(_Frozen):
    """Prognostic effects shared by every regimen, per unit of each covariate.

    Age effects are per decade from 60; burden is the natural log of metabolic tumour volume / 40 ml.
    """

    per_ecog_point: OutcomeEffect = OutcomeEffect(response=-0.30, progression=0.18, death=0.38)
    ecog_2_or_more: OutcomeEffect = OutcomeEffect(response=-0.35)
    per_decade_of_age: OutcomeEffect = OutcomeEffect(response=-0.10, progression=0.03, death=0.12)
    per_charlson_point: OutcomeEffect = OutcomeEffect(response=-0.08, progression=0.04, death=0.12)
    per_prior_line: OutcomeEffect = OutcomeEffect(response=-0.45, progression=0.25, death=0.15)
    per_log_burden: OutcomeEffect = OutcomeEffect(response=-0.15, progression=0.15, death=0.20)


class EffectModifiers(_Frozen):
    """Biomarker × drug-class effects: who each regimen helps."""

    her2_with_anti_her2: OutcomeEffect = OutcomeEffect(response=2.0, progression=-0.35, death=-0.40)
    her2_without_anti_her2: OutcomeEffect = OutcomeEffect(response=-0.40, progression=0.30, death=0.30)
    hormone_receptor_positive: OutcomeEffect = OutcomeEffect(response=-0.45, progression=-0.30, death=-0.40)
    breast_ki67_per_20_points: OutcomeEffect = OutcomeEffect(response=0.20)
    brca_with_platinum: OutcomeEffect = OutcomeEffect(response=0.95, progression=-0.30, death=-0.30)
    kras_wild_type_with_anti_egfr: OutcomeEffect = OutcomeEffect(response=0.85, progression=-0.15, death=-0.20)
    kras_mutant_with_anti_egfr: OutcomeEffect = OutcomeEffect(response=-0.25, progression=0.10)
    braf_colorectal: OutcomeEffect = OutcomeEffect(response=-0.60, progression=0.50, death=0.65)
    msi_high_colorectal: OutcomeEffect = OutcomeEffect(response=-0.30)
    squamous_with_antifolate: OutcomeEffect = OutcomeEffect(response=-0.90, progression=0.30)
    # immunotherapy: the response effect by PD-L1 category (below 1 %, 1-49 %, 50 % and more) plus TMB and MSI;
    # the hazards' effect for all, plus more for PD-L1 ≥ 50 %
    immunotherapy_pdl1_below_1: OutcomeEffect = OutcomeEffect(response=0.35)
    immunotherapy_pdl1_1_to_49: OutcomeEffect = OutcomeEffect(response=0.85)
    immunotherapy_pdl1_50_plus: OutcomeEffect = OutcomeEffect(response=1.65, progression=-0.35, death=-0.25)
    immunotherapy_tmb_10_plus: OutcomeEffect = OutcomeEffect(response=0.50)
    immunotherapy_msi_high: OutcomeEffect = OutcomeEffect(response=1.00)
    immunotherapy: OutcomeEffect = OutcomeEffect(progression=-0.25, death=-0.30)
    immunotherapy_egfr_alk_retained_share: float = Field(0.2, ge=0, le=1,
                                                          description="IO effect left in EGFR/ALK-driven tumours")
    egfr_alk_nsclc: OutcomeEffect = OutcomeEffect(death=-0.50)
    high_grade_serous: OutcomeEffect = OutcomeEffect(response=0.30)


def _default_regimen_outcomes() -> dict[CancerType, dict[str, RegimenOutcome]]:
    # Fitted with `python -m simulations.cohort.calibration --fit` (default consortium scaled to 200,000
    # patients, trial-like subgroups of CALIBRATION.md); re-fit after changing any effect above.
    fitted = {
        CancerType.BREAST: {
            "AC-T": (0.742, 178.5, 349.2),
            "TC": (0.313, 177.6, 367.8),
            "TCHP": (-0.41, 211.8, 671.5),
            "PACLITAXEL-CARBOPLATIN": (-0.038, 191.4, 348.7),
        },
        CancerType.NSCLC: {
            "CARBOPLATIN-PEMETREXED": (-1.051, 327.3, 358.2),
            "CARBOPLATIN-PACLITAXEL": (-1.342, 337.1, 360.7),
            "CARBOPLATIN-PEMETREXED-PEMBROLIZUMAB": (-0.871, 231.9, 474.9),
        },
        CancerType.COLORECTAL: {
            "FOLFOX": (0.359, 278.6, 579.3),
            "FOLFIRI": (-0.093, 327.5, 519.9),
            "FOLFOX-BEVACIZUMAB": (0.164, 327.4, 520.2),
            "FOLFIRI-CETUXIMAB": (-0.219, 257.2, 471.8),
        },
        CancerType.OVARIAN: {
            "CARBOPLATIN-PACLITAXEL": (-0.014, 324.1, 1287.3),
            "CARBOPLATIN-PACLITAXEL-BEVACIZUMAB": (0.786, 351.7, 1026.4),
            "CARBOPLATIN-PLD": (0.838, 437.9, 965.7),
        },
    }
    return {cancer: {code: RegimenOutcome(response_logit=a, progression_scale_days=p, post_progression_scale_days=d)
                     for code, (a, p, d) in by_code.items()}
            for cancer, by_code in fitted.items()}


def _default_cancer_outcomes() -> dict[CancerType, CancerOutcome]:
    return {
        CancerType.BREAST: CancerOutcome(response_stage_below_iv=0.35, progression_stage_iii=-1.2,
                                         death_stage_iii=-1.3, progression_stage_i_ii=-2.0, death_stage_i_ii=-2.1),
        CancerType.NSCLC: CancerOutcome(response_stage_below_iv=0.2, progression_stage_iii=-0.6,
                                        death_stage_iii=-0.7),
        CancerType.COLORECTAL: CancerOutcome(response_stage_below_iv=0.2, progression_stage_iii=-0.8,
                                             death_stage_iii=-0.9),
        CancerType.OVARIAN: CancerOutcome(response_stage_below_iv=0.1, progression_stage_iii=-0.25,
                                          death_stage_iii=-0.3),
    }


class OutcomeModel(_Frozen):
    """The causal outcome model of OUTCOMES in CALIBRATION.md, every coefficient a knob."""

    regimens: dict[CancerType, dict[str, RegimenOutcome]] = Field(default_factory=_default_regimen_outcomes,
                                                                  description="per cancer, per regimen code")
    cancers: dict[CancerType, CancerOutcome] = Field(default_factory=_default_cancer_outcomes)
    response_categories: ResponseCategoryEffects = ResponseCategoryEffects()
    covariates: CovariateEffects = CovariateEffects()
    modifiers: EffectModifiers = EffectModifiers()

    @model_validator(mode="after")
    def _complete(self) -> OutcomeModel:
        for cancer in CancerType:
            if cancer not in self.cancers:
                raise ValueError(f"cancers: no hazard shapes for {cancer.value}")
            missing = [r.code for r in regimens_for(cancer) if r.code not in self.regimens.get(cancer, {})]
            if missing:
                raise ValueError(f"regimens: no calibrated outcome for {cancer.value} {missing}")
        return self


# ------------------------------------------------------------------------------------------- cohort
class CohortConfig(_Frozen):
    """The whole synthetic consortium: sites, study calendar and outcome model. Same seed, same files."""

    seed: int = Field(20240611, ge=0)
    sites: Annotated[list[SiteProfile], AfterValidator(distinct_site_ids)] = Field(min_length=1)
    accrual_days: int = Field(1461, ge=1, description="patients start their regimen uniformly over accrual")
    minimum_followup_days: int = Field(1096, ge=1, description="study end = accrual end + this")
    loss_to_followup_per_year: float = Field(0.04, ge=0, le=1, description="exponential drop-out hazard")
    outcome_model: OutcomeModel = OutcomeModel()

    @property
    def n_patients(self) -> int:
        return sum(s.n_patients for s in self.sites)

    def scaled(self, total_patients: int) -> CohortConfig:
        """The same consortium with site sizes scaled (proportionally, at least 1 each) to about this total."""
        if total_patients < len(self.sites):
            raise ValueError(f"total_patients: {total_patients} is fewer than the {len(self.sites)} sites")
        factor = total_patients / self.n_patients
        sites = [s.model_copy(update={"n_patients": max(1, round(s.n_patients * factor))}) for s in self.sites]
        return self.model_copy(update={"sites": sites})


# ------------------------------------------------------------------------------------------ default
_C, _R = CancerType, RaceEthnicity


def default_consortium(total_patients: int | None = None, seed: int = 20240611) -> CohortConfig:
    """The project's default consortium: 2 large and 4 smaller hospitals, 4,650 patients in total.

    Sites differ the way real ones do: a diverse academic centre, an older regional hospital with a
    different PET reconstruction, an Asian-majority centre (EGFR-rich lung cancer), a rural community
    hospital with neither PET/CT nor a genomic panel, a safety-net hospital with frailer, later-stage
    patients and no panel, and a women's cancer institute (breast and ovarian).
    """
    sites = [
        SiteProfile(
            site_id="metro_academic", display_name="Metropolitan University Cancer Centre", n_patients=1400,
            cancer_mix={_C.BREAST: 0.30, _C.NSCLC: 0.30, _C.COLORECTAL: 0.25, _C.OVARIAN: 0.15},
            race_mix={_R.WHITE: 0.52, _R.BLACK: 0.18, _R.HISPANIC: 0.14, _R.ASIAN: 0.10, _R.OTHER: 0.03,
                      _R.UNKNOWN: 0.03},
            mean_age_shift_years=-2.0, intensity_preference=0.5,
            regimen_preference={"CARBOPLATIN-PEMETREXED-PEMBROLIZUMAB": 0.4},
        ),
        SiteProfile(
            site_id="coastal_regional", display_name="Coastal Regional Hospital", n_patients=1000,
            cancer_mix={_C.BREAST: 0.30, _C.NSCLC: 0.30, _C.COLORECTAL: 0.28, _C.OVARIAN: 0.12},
            race_mix={_R.WHITE: 0.80, _R.BLACK: 0.07, _R.HISPANIC: 0.07, _R.ASIAN: 0.03, _R.OTHER: 0.01,
                      _R.UNKNOWN: 0.02},
            mean_age_shift_years=3.0, suv_scale=1.18,
            regimen_preference={"FOLFOX-BEVACIZUMAB": 0.6, "CARBOPLATIN-PACLITAXEL-BEVACIZUMAB": -0.4},
            missingness=SporadicMissingness(genomic_rate=0.12, field_rate=0.04),
        ),
        SiteProfile(
            site_id="pacific_medical", display_name="Pacific Medical Centre", n_patients=650,
            cancer_mix={_C.BREAST: 0.25, _C.NSCLC: 0.40, _C.COLORECTAL: 0.25, _C.OVARIAN: 0.10},
            race_mix={_R.ASIAN: 0.58, _R.WHITE: 0.25, _R.HISPANIC: 0.08, _R.BLACK: 0.03, _R.OTHER: 0.04,
                      _R.UNKNOWN: 0.02},
            mean_age_shift_years=-1.0, suv_scale=0.90, intensity_preference=0.2,
            regimen_preference={"FOLFIRI": 0.5, "FOLFIRI-CETUXIMAB": 0.3},
        ),
        SiteProfile(
            site_id="valley_community", display_name="Valley Community Hospital", n_patients=350,
            cancer_mix={_C.BREAST: 0.30, _C.NSCLC: 0.32, _C.COLORECTAL: 0.28, _C.OVARIAN: 0.10},
            race_mix={_R.WHITE: 0.84, _R.HISPANIC: 0.08, _R.BLACK: 0.03, _R.ASIAN: 0.01, _R.OTHER: 0.02,
                      _R.UNKNOWN: 0.02},
            mean_age_shift_years=5.0, frailty_shift=0.3, has_pet_ct=False, has_genomic_panel=False,
            intensity_preference=-0.8, regimen_preference={"TC": 0.6},
            missingness=SporadicMissingness(pathology_rate=0.06, imaging_rate=0.08, field_rate=0.06,
                                            response_not_evaluable_rate=0.05),
        ),
        SiteProfile(
            site_id="southside_public", display_name="Southside Public Hospital", n_patients=600,
            cancer_mix={_C.BREAST: 0.28, _C.NSCLC: 0.34, _C.COLORECTAL: 0.26, _C.OVARIAN: 0.12},
            race_mix={_R.BLACK: 0.45, _R.HISPANIC: 0.25, _R.WHITE: 0.22, _R.ASIAN: 0.03, _R.OTHER: 0.02,
                      _R.UNKNOWN: 0.03},
            mean_age_shift_years=-1.0, frailty_shift=0.6, late_stage_shift=0.6, has_genomic_panel=False,
            intensity_preference=-0.4,
            missingness=SporadicMissingness(pathology_rate=0.05, imaging_rate=0.10, field_rate=0.06,
                                            response_not_evaluable_rate=0.04),
        ),
        SiteProfile(
            site_id="womens_institute", display_name="Women's Cancer Institute", n_patients=650,
            cancer_mix={_C.BREAST: 0.62, _C.OVARIAN: 0.38},
            race_mix={_R.WHITE: 0.62, _R.BLACK: 0.14, _R.HISPANIC: 0.10, _R.ASIAN: 0.09, _R.OTHER: 0.02,
                      _R.UNKNOWN: 0.03},
            suv_scale=1.05, intensity_preference=0.3,
            regimen_preference={"CARBOPLATIN-PACLITAXEL-BEVACIZUMAB": 0.6, "CARBOPLATIN-PLD": 0.3},
            missingness=SporadicMissingness(genomic_rate=0.06),
        ),
    ]
    config = CohortConfig(seed=seed, sites=sites)
    return config if total_patients is None else config.scaled(total_patients)
