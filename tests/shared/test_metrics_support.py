"""A small synthetic site (contract-shaped tables and model-like predictions) shared by the evaluation tests.

Outcomes follow a known latent prognosis so that a prediction built from it discriminates (AUC, C > 0.5)
and one built from noise does not. Kept here rather than importing the cohort generator so the evaluation
tests do not depend on the simulation code.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import special

from shared.contract import CONTRACT_COLUMNS
from shared.metrics import OutcomePredictions
from shared.vocabulary import HISTOLOGIES, CancerType, regimens_for

TIME_GRID_DAYS = np.arange(90.0, 1826.0, 90.0)


def make_site_table(rng: np.random.Generator, n: int, follow_up_days: float = 1800.0) -> pd.DataFrame:
    """n patients of a mixed breast/NSCLC/colorectal/ovarian clinic with a hidden prognosis column `_prognosis`."""
    cancer = rng.choice([c.value for c in CancerType], size=n, p=[0.35, 0.3, 0.2, 0.15])
    age = np.clip(rng.normal(63, 11, n), 25, 95).round()
    ecog = rng.choice([0, 1, 2, 3], size=n, p=[0.35, 0.4, 0.18, 0.07])
    stage = rng.choice(["I", "II", "III", "IV"], size=n, p=[0.1, 0.25, 0.3, 0.35])
    stage_number = pd.Series(stage).map({"I": 1, "II": 2, "III": 3, "IV": 4}).to_numpy()
    charlson = rng.poisson(1.2, n)
    her2 = rng.random(n) < 0.25
    pdl1 = rng.uniform(0, 100, n).round()
    msi = rng.random(n) < 0.15
    brca = rng.random(n) < 0.2
    marker = np.select([cancer == "breast", cancer == "nsclc", cancer == "colorectal"],
                       [her2.astype(float), pdl1 / 100, msi.astype(float)], brca.astype(float))
    prognosis = (0.5 * ecog + 0.45 * (stage_number - 2.5) + 0.02 * (age - 63) - 0.8 * marker
                 + rng.normal(0, 0.6, n))
    respond = rng.random(n) < special.expit(-0.2 - 1.1 * prognosis)
    best_response = np.where(respond, rng.choice(["CR", "PR"], size=n, p=[0.3, 0.7]),
                             rng.choice(["SD", "PD"], size=n))
    best_response = np.where(rng.random(n) < 0.05, None, best_response).astype(object)
    os_days = rng.exponential(900 * np.exp(-0.8 * prognosis))
    pfs_days = np.minimum(rng.exponential(420 * np.exp(-0.8 * prognosis)), os_days)
    censor = rng.uniform(200, follow_up_days, n)
    table = pd.DataFrame({
        "patient_id": [f"P{i:05d}" for i in range(n)],
        "age_years": age, "sex": np.where(cancer == "breast", "female", rng.choice(["female", "male"], n)),
        "race_ethnicity": rng.choice(["white", "black", "hispanic", "asian", "other", "unknown"], n,
                                     p=[0.55, 0.17, 0.13, 0.08, 0.04, 0.03]),
        "ecog": ecog, "stage_group": stage, "cancer_type": cancer,
        "histology": [HISTOLOGIES[CancerType(c)][0] for c in cancer],
        "charlson_index": charlson, "prior_lines": rng.choice([0, 1, 2], n, p=[0.6, 0.3, 0.1]),
        "grade": rng.choice([1, 2, 3], n).astype(float),
        "er_positive": np.where(cancer == "breast", rng.random(n) < 0.7, None),
        "her2_positive": np.where(cancer == "breast", her2, None),
        "ki67_percent": np.where(cancer == "breast", rng.uniform(5, 60, n).round(), None),
        "msi_high": np.where(cancer == "colorectal", msi, None),
        "pdl1_tps_percent": np.where(cancer == "nsclc", pdl1, None),
        "tumour_size_mm": rng.uniform(8, 90, n).round(), "suv_max": rng.uniform(2, 20, n).round(1),
        "lesion_count": rng.poisson(2, n),
        "tp53": rng.random(n) < 0.4, "kras": rng.random(n) < 0.2,
        "brca1": np.where(cancer == "ovarian", brca, rng.random(n) < 0.03),
        "tmb_mut_per_mb": rng.gamma(2, 3, n).round(1),
        "regimen": [rng.choice([r.code for r in regimens_for(CancerType(c))]) for c in cancer],
        "line_of_therapy": rng.choice([1, 2], n, p=[0.8, 0.2]),
        "best_response": best_response,
        "pfs_days": np.minimum(pfs_days, censor).round(), "pfs_event": pfs_days <= censor,
        "os_days": np.minimum(os_days, censor).round(), "os_event": os_days <= censor,
    })
    modality_columns = ["tumour_size_mm", "suv_max", "lesion_count", "tp53", "kras", "brca1", "tmb_mut_per_mb"]
    table[modality_columns] = table[modality_columns].astype(object)
    no_imaging = rng.random(n) < 0.25
    table.loc[no_imaging, ["tumour_size_mm", "suv_max", "lesion_count"]] = None
    no_genomic = rng.random(n) < 0.3
    table.loc[no_genomic, ["tp53", "kras", "brca1", "tmb_mut_per_mb"]] = None
    table = table.reindex(columns=list(CONTRACT_COLUMNS))
    table["_prognosis"] = prognosis
    return table


def predictions_from_prognosis(table: pd.DataFrame, rng: np.random.Generator, noise: float = 0.5,
                               informative: bool = True) -> OutcomePredictions:
    """Model-like predictions: the hidden prognosis plus noise (or pure noise when not informative)."""
    n = len(table)
    signal = table["_prognosis"].to_numpy() if informative else np.zeros(n)
    score = signal + rng.normal(0, noise, n)
    response_prob = special.expit(-0.2 - 1.1 * score)
    pfs = np.exp(-np.outer(np.exp(0.8 * score), TIME_GRID_DAYS) / 420)
    os_curve = np.exp(-np.outer(np.exp(0.8 * score), TIME_GRID_DAYS) / 900)
    return OutcomePredictions(response_prob=response_prob, pfs_survival=pfs, os_survival=os_curve,
                              time_grid_days=TIME_GRID_DAYS)


def contract_only(table: pd.DataFrame) -> pd.DataFrame:
    """The table without the hidden prognosis, as a site would hold it."""
    return table.drop(columns=["_prognosis"])
