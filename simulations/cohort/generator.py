"""Generate the consortium: patients, regimens, outcomes, then what each site's records actually hold.

Per site, in order: complete characteristics (population.py) -> regimen (practice.py) -> analytic truth
under every candidate regimen (outcomes.py) -> sampled outcomes under the regimen given -> study calendar
(administrative censoring, loss to follow-up) -> the site's record: equipment gaps, sporadic gaps,
scanner factor on SUVmax, response not evaluable. Each site draws from its own seed stream
(consortium seed + site id), so adding a site leaves the others' data unchanged.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from shared.contract import CONTRACT_COLUMNS, GENOMIC, IMAGING, OUTCOMES, PATHOLOGY
from shared.vocabulary import regimens_for
from simulations.cohort.config import CohortConfig, SiteProfile
from simulations.cohort.outcomes import (CATEGORIES, SurvivalParameters, median_days, regimen_truth,
                                          sample_outcomes)
from simulations.cohort.population import draw_patients
from simulations.cohort.practice import assign_regimens, rows_by_cancer

BOOLEAN_COLUMNS: tuple[str, ...] = ("er_positive", "pr_positive", "her2_positive", "msi_high", "pfs_event",
                                    "os_event", "tp53", "kras", "egfr", "alk", "braf", "brca1", "brca2", "pik3ca")
INTEGER_COLUMNS: tuple[str, ...] = ("age_years", "ecog", "charlson_index", "prior_lines", "grade",
                                    "lesion_count", "line_of_therapy", "pfs_days", "os_days")
TEXT_COLUMNS: tuple[str, ...] = ("patient_id", "sex", "race_ethnicity", "stage_group", "cancer_type", "histology",
                                 "regimen", "best_response")
# Truth columns holding SurvivalParameters: (n, 4) arrays become one column per best-response category.
TRUTH_ARRAY_COLUMNS: dict[str, str] = {
    "category_probability": "p", "log_progression_rate": "log_progression_rate",
    "log_death_before_progression_rate": "log_death_before_progression_rate",
    "log_death_after_progression_rate": "log_death_after_progression_rate"}
TRUTH_VECTOR_COLUMNS: tuple[str, ...] = ("shape", "frailty_variance")


def truth_columns(field: str) -> list[str]:
    """The truth-table columns of one SurvivalParameters array field (one per CR/PR/SD/PD)."""
    return [f"{TRUTH_ARRAY_COLUMNS[field]}_{k.lower()}" for k in CATEGORIES]


def parameters_from_truth(rows: pd.DataFrame) -> SurvivalParameters:
    """SurvivalParameters back from truth-table rows (as written to regimen_truth.csv)."""
    arrays = {field: rows[truth_columns(field)].to_numpy(dtype=float) for field in TRUTH_ARRAY_COLUMNS}
    vectors = {field: rows[f"weibull_{field}" if field == "shape" else field].to_numpy(dtype=float)
               for field in TRUTH_VECTOR_COLUMNS}
    return SurvivalParameters(**arrays, **vectors)


@dataclass(frozen=True)
class SiteCohort:
    """One generated site: what its records hold, the complete values behind them, and the truth."""

    profile: SiteProfile
    patients: pd.DataFrame  # contract columns exactly, as the site holds them
    complete_patients: pd.DataFrame  # same rows before missingness and scanner factor (ground truth)
    truth: pd.DataFrame  # one row per patient x candidate regimen (ground truth)

    @property
    def site_id(self) -> str:
        return self.profile.site_id


@dataclass(frozen=True)
class Consortium:
    """The generated consortium; `truth` and `patients` concatenate the sites (patient ids are unique)."""

    config: CohortConfig
    sites: tuple[SiteCohort, ...]

    def site(self, site_id: str) -> SiteCohort:
        for cohort in self.sites:
            if cohort.site_id == site_id:
                return cohort
        raise KeyError(f"no site {site_id!r}; sites: {[c.site_id for c in self.sites]}")

    @property
    def patients(self) -> pd.DataFrame:
        return pd.concat([c.patients.assign(site_id=c.site_id) for c in self.sites], ignore_index=True)

    @property
    def complete_patients(self) -> pd.DataFrame:
        return pd.concat([c.complete_patients.assign(site_id=c.site_id) for c in self.sites], ignore_index=True)

    @property
    def truth(self) -> pd.DataFrame:
        return pd.concat([c.truth for c in self.sites], ignore_index=True)


def site_rng(seed: int, site_id: str) -> np.random.Generator:
    """The site's own random stream: depends on the consortium seed and the site id only."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(site_id.encode())]))


def generate_consortium(config: CohortConfig) -> Consortium:
    """Generate every site of the configuration (deterministic in `config.seed`)."""
    return Consortium(config=config, sites=tuple(generate_site(config, site) for site in config.sites))


def generate_site(config: CohortConfig, site: SiteProfile) -> SiteCohort:
    """One site's patients, complete values and ground truth."""
    rng = site_rng(config.seed, site.site_id)
    n = site.n_patients
    complete = draw_patients(site, n, rng)
    complete.insert(0, "patient_id", [f"{site.site_id}-{i:05d}" for i in range(1, n + 1)])
    complete["regimen"] = assign_regimens(complete, site, rng)
    complete["line_of_therapy"] = complete["prior_lines"] + 1

    truth_parts: list[pd.DataFrame] = []
    given_parts: list[tuple[np.ndarray, SurvivalParameters]] = []
    for cancer, rows, subset in rows_by_cancer(complete):
        for regimen in regimens_for(cancer):
            params = regimen_truth(subset, regimen.code, config.outcome_model)
            part = _truth_table(subset, regimen.code, params)
            part.insert(1, "site_id", site.site_id)
            truth_parts.append(part)
            given = part["given"].to_numpy()
            given_parts.append((rows[given], params.rows(given)))

    order = np.concatenate([rows for rows, _ in given_parts])
    stacked = SurvivalParameters(*(np.concatenate([getattr(p, f) for _, p in given_parts])
                                   for f in ("category_probability", "log_progression_rate",
                                             "log_death_before_progression_rate",
                                             "log_death_after_progression_rate", "shape", "frailty_variance")))
    outcomes = sample_outcomes(stacked.rows(np.argsort(order)), rng)
    entry = rng.uniform(0, config.accrual_days, n)
    administrative = config.accrual_days + config.minimum_followup_days - entry
    lost = (rng.exponential(365.25 / config.loss_to_followup_per_year, n)
            if config.loss_to_followup_per_year > 0 else np.full(n, np.inf))
    censor = np.minimum(administrative, lost)
    complete["best_response"] = outcomes.best_response
    complete["pfs_days"] = np.maximum(1, np.ceil(np.minimum(outcomes.progression_free_days, censor))).astype(int)
    complete["pfs_event"] = outcomes.progression_free_days <= censor
    complete["os_days"] = np.maximum(1, np.ceil(np.minimum(outcomes.death_days, censor))).astype(int)
    complete["os_event"] = outcomes.death_days <= censor
    complete = _contract_types(complete[list(CONTRACT_COLUMNS)])

    observed = _site_record(complete, site, rng)

    truth = pd.concat(truth_parts, ignore_index=True)
    truth["_row"] = truth["patient_id"].map({pid: i for i, pid in enumerate(complete["patient_id"])})
    truth = truth.sort_values(["_row", "regimen"], kind="stable").reset_index(drop=True)
    given = truth["given"].to_numpy()
    given_row = truth.loc[given, "_row"].to_numpy()
    truth["true_best_response"] = pd.Series(pd.NA, index=truth.index, dtype="string")
    truth.loc[given, "true_best_response"] = outcomes.best_response[given_row]
    truth["uncensored_pfs_days"] = np.nan
    truth.loc[given, "uncensored_pfs_days"] = np.round(outcomes.progression_free_days[given_row], 1)
    truth["uncensored_os_days"] = np.nan
    truth.loc[given, "uncensored_os_days"] = np.round(outcomes.death_days[given_row], 1)
    for column in OUTCOMES:
        values = observed[column].iloc[given_row].to_numpy()
        truth[column] = pd.Series(pd.NA, index=truth.index, dtype=observed[column].dtype)
        truth.loc[given, column] = values
    truth = truth.drop(columns="_row")
    return SiteCohort(profile=site, patients=observed, complete_patients=complete, truth=truth)


def _truth_table(patients: pd.DataFrame, regimen_code: str, params: SurvivalParameters) -> pd.DataFrame:
    """Truth rows of these patients (one cancer type) under one regimen."""
    table: dict[str, object] = {
        "patient_id": patients["patient_id"].to_numpy(),
        "cancer_type": patients["cancer_type"].to_numpy(),
        "regimen": regimen_code,
        "given": patients["regimen"].to_numpy() == regimen_code,
        "p_response": params.response_probability,
    }
    for field in TRUTH_ARRAY_COLUMNS:
        for column, values in zip(truth_columns(field), getattr(params, field).T, strict=True):
            table[column] = values
    table["weibull_shape"] = params.shape
    table["frailty_variance"] = params.frailty_variance
    for endpoint in ("pfs", "os"):
        table[f"median_{endpoint}_days"] = median_days(params, endpoint)
    return pd.DataFrame(table)


def _site_record(complete: pd.DataFrame, site: SiteProfile, rng: np.random.Generator) -> pd.DataFrame:
    """What the site's records hold: equipment gaps, sporadic gaps, scanner factor, unevaluable responses."""
    record = complete.copy()
    n = len(record)
    gaps = site.missingness
    record["suv_max"] = (record["suv_max"] * site.suv_scale).clip(upper=100.0).round(1)
    if not site.has_imaging:
        record[list(IMAGING)] = pd.NA
    elif not site.has_pet_ct:
        record[["suv_max", "mtv_ml"]] = pd.NA
    if not site.has_genomic_panel:
        record[list(GENOMIC)] = pd.NA
    for fields, rate in ((PATHOLOGY, gaps.pathology_rate), (IMAGING, gaps.imaging_rate),
                         (GENOMIC, gaps.genomic_rate)):
        record.loc[rng.random(n) < rate, list(fields)] = pd.NA
    for column in (*PATHOLOGY, *IMAGING, *GENOMIC):
        record.loc[rng.random(n) < gaps.field_rate, column] = pd.NA
    record.loc[rng.random(n) < gaps.response_not_evaluable_rate, "best_response"] = pd.NA
    return _contract_types(record)


def _contract_types(frame: pd.DataFrame) -> pd.DataFrame:
    """Nullable integer/boolean/float dtypes so the CSV reads back as the contract expects."""
    frame = frame.copy()
    for column in CONTRACT_COLUMNS:
        if column in TEXT_COLUMNS:
            frame[column] = frame[column].astype("string")
            continue
        values = frame[column].to_numpy(dtype=float, na_value=np.nan)
        missing = np.isnan(values)
        if column in BOOLEAN_COLUMNS:
            frame[column] = pd.arrays.BooleanArray(values == 1, missing)
        elif column in INTEGER_COLUMNS:
            frame[column] = pd.arrays.IntegerArray(np.round(np.nan_to_num(values)).astype("int64"), missing)
        else:
            frame[column] = pd.arrays.FloatingArray(np.nan_to_num(values), missing)
    return frame[list(CONTRACT_COLUMNS)]
