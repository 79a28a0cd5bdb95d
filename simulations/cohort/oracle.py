"""The oracle: predictions from the true model, and the best discrimination any model could reach.

The truth table (one row per patient x candidate regimen, see generator.py) holds every patient's
analytic response probabilities and survival parameters, computed from the complete, unmasked
characteristics. So the oracle is an upper bound: a site model sees only what the site records.
Experiments report the share of achievable discrimination, (model - 0.5) / (oracle - 0.5).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from sklearn.metrics import roc_auc_score
from sksurv.metrics import concordance_index_censored

from simulations.cohort.generator import parameters_from_truth
from simulations.cohort.outcomes import median_days, survival

DEFAULT_DAYS: tuple[int, ...] = (180, 365, 730)
DEFAULT_HORIZON_DAYS = 1826  # restricted mean survival horizon for the oracle's risk ranking (5 years)
_CHUNK = 20_000


def _select(truth: pd.DataFrame, regimen: str, patient_ids: Sequence[str] | None) -> pd.DataFrame:
    """One truth row per requested patient, in the order asked (all patients when ids are None)."""
    rows = truth[truth["given"].astype(bool)] if regimen == "given" else truth[truth["regimen"] == regimen]
    rows = rows.set_index("patient_id")
    if patient_ids is None:
        if regimen != "given":
            eligible = truth["patient_id"].unique()
            missing = np.setdiff1d(eligible, rows.index.to_numpy())
            if len(missing):
                raise ValueError(f"regimen {regimen!r} is not a candidate for {len(missing)} patient(s) "
                                 f"(e.g. {missing[0]!r}); pass the patient_ids of its cancer type")
        return rows
    ids = pd.Index([str(i) for i in patient_ids])
    unknown = ids.difference(rows.index)
    if len(unknown):
        what = "in the ground truth" if regimen == "given" else f"with candidate regimen {regimen!r}"
        raise ValueError(f"{len(unknown)} patient id(s) not found {what}, e.g. {unknown[0]!r}")
    return rows.loc[ids]


def survival_curves(truth: pd.DataFrame, days: Sequence[float], endpoint: str, regimen: str = "given",
                    patient_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """True S(t) (PFS or OS) of each patient under a regimen at the given days: patients x days."""
    rows = _select(truth, regimen, patient_ids)
    params = parameters_from_truth(rows)
    days_array = np.asarray(days, dtype=float)
    values = np.vstack([survival(params.rows(slice(i, i + _CHUNK)), days_array, endpoint)
                        for i in range(0, len(rows), _CHUNK)]) if len(rows) else np.empty((0, len(days_array)))
    return pd.DataFrame(values, index=rows.index, columns=[float(d) for d in days_array])


def restricted_mean_days(truth: pd.DataFrame, endpoint: str, horizon_days: float = DEFAULT_HORIZON_DAYS,
                         regimen: str = "given", patient_ids: Sequence[str] | None = None) -> pd.Series:
    """True restricted mean survival time up to the horizon (days): the oracle's ranking score."""
    grid = np.linspace(0.0, horizon_days, 97)
    curves = survival_curves(truth, grid, endpoint, regimen, patient_ids).to_numpy()
    area = np.sum((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(grid)[None, :], axis=1)
    return pd.Series(area, index=_select(truth, regimen, patient_ids).index, name=f"rmst_{endpoint}_days")


def oracle_predictions(truth: pd.DataFrame, regimen: str = "given", days: Sequence[float] = DEFAULT_DAYS,
                       patient_ids: Sequence[str] | None = None) -> pd.DataFrame:
    """True response probability, PFS/OS survival at `days` and medians, per patient (index patient_id).

    regimen: "given" (the regimen each patient actually received) or a regimen code, to read the
    counterfactual under that regimen (the patients must have that regimen among their candidates).
    """
    rows = _select(truth, regimen, patient_ids)
    params = parameters_from_truth(rows)
    result = pd.DataFrame({"regimen": rows["regimen"], "p_response": rows["p_response"].astype(float)},
                          index=rows.index)
    for endpoint in ("pfs", "os"):
        curves = survival_curves(truth, days, endpoint, regimen, patient_ids)
        for day, column in zip(days, curves.columns, strict=True):
            result[f"{endpoint}_survival_{int(day)}d"] = curves[column].to_numpy()
        result[f"median_{endpoint}_days"] = median_days(params, endpoint)
    return result


class OracleMetrics(BaseModel):
    """The best discrimination achievable on these patients, with the counts it rests on."""

    model_config = ConfigDict(frozen=True)

    n_patients: int
    n_response_evaluable: int
    n_responders: int
    response_auc: float
    n_pfs_events: int
    pfs_c_index: float
    n_os_events: int
    os_c_index: float


def oracle_metrics(truth: pd.DataFrame, patient_ids: Sequence[str] | None = None,
                   outcomes: pd.DataFrame | None = None,
                   horizon_days: float = DEFAULT_HORIZON_DAYS) -> OracleMetrics:
    """Oracle AUC (response) and Harrell C-index (PFS, OS) on these patients under the regimen given.

    Outcomes default to the observed ones stored in the truth (identical to the site's patients.csv);
    pass `outcomes` (patient_id, best_response, pfs_days, pfs_event, os_days, os_event) to score others.
    Survival ranking uses the true restricted mean survival time up to `horizon_days`.
    """
    rows = _select(truth, "given", patient_ids)
    observed = rows if outcomes is None else outcomes.set_index("patient_id").loc[rows.index]
    response = observed["best_response"].astype("string")
    evaluable = response.notna().to_numpy()
    responder = response.isin(["CR", "PR"]).to_numpy()[evaluable]
    probability = rows["p_response"].to_numpy(dtype=float)[evaluable]
    auc = float(roc_auc_score(responder, probability)) if 0 < responder.sum() < len(responder) else float("nan")

    figures: dict[str, float | int] = {}
    for endpoint in ("pfs", "os"):
        time = observed[f"{endpoint}_days"].to_numpy(dtype=float)
        event = observed[f"{endpoint}_event"].astype("boolean").to_numpy(dtype=bool, na_value=False)
        known = ~np.isnan(time)
        score = -restricted_mean_days(truth, endpoint, horizon_days, "given", list(rows.index)).to_numpy()
        figures[f"n_{endpoint}_events"] = int(event[known].sum())
        figures[f"{endpoint}_c_index"] = (float(concordance_index_censored(event[known], time[known], score[known])[0])
                                          if event[known].any() else float("nan"))
    return OracleMetrics(n_patients=len(rows), n_response_evaluable=int(evaluable.sum()),
                         n_responders=int(responder.sum()), response_auc=auc, **figures)


def share_of_achievable(model_value: float, oracle_value: float, chance: float = 0.5) -> float:
    """How much of the discrimination above chance that the oracle reaches a model reaches (1 = oracle)."""
    return (model_value - chance) / (oracle_value - chance)
