"""The tumour-board comparison: every candidate regimen for one patient, with its uncertainty, drivers and limits.

Runs at the site on the site's own patients; nothing here is sent anywhere.

Uncertainty: the spread of an ensemble of global models, by default the run's last rounds (a checkpoint, or
snapshot, ensemble), optionally plus the final models of other federations of the same consortium. Each member
is a complete federated model, so the range shows how much the prediction moves under DP noise and the
federation's optimisation, at no extra federation cost. The point estimate is the run's FINAL model (measured
more accurate than the ensemble mean) and the range the members' minimum and maximum, so the range always
contains the estimate; survival medians come from the final curve and the members' medians.

MEASURED on the default cohort's test patients against the simulated truth
(simulations/tumour_board_calibration.py): the range is far narrower than the model's real error (the true
response probability fell inside the 6-round range 15% of the time) and barely tracks it, so it is labelled a
model-spread range, never a confidence interval (see MODEL_SPREAD_NOTE).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel, Field

from client.data.loader import validated_contract_frame
from client.evaluation.explanations import explain
from client.tumour_board.evidence import OutOfDistribution, SubgroupFigure, out_of_distribution, subgroup_performance
from client.tumour_board.run_bundle import RunBundle
from shared.contract import CONTRACT_COLUMNS, OUTCOMES, DataContractError, Violation
from shared.encoding import encode_cohort
from shared.harmonisation import FLAG_FEATURES
from shared.model import predict
from shared.site_config import ColumnMapping
from shared.vocabulary import REGIMEN_BY_CODE, REGIMEN_CODES, CancerType, regimens_for

ASSOCIATIONAL_NOTICE = (
    "Associational, not causal: the model learned from observational practice at the consortium's sites, not "
    "from randomised comparisons. A difference between regimens may reflect who was given each regimen (for "
    "example fitter patients getting more intensive treatment) rather than what the regimen does. Use it "
    "beside, never instead of, trial evidence and clinical judgement.")
ADJUSTMENT_NOTE = (
    " This run weighted each patient's training loss by the inverse probability of the regimen given "
    "(propensity-weighting): that adjusts for the recorded features only; what drove the choice but is not in the "
    "record (e.g. biomarkers at a site without a genomic panel) stays unadjusted, so the comparison remains "
    "associational.")
MODEL_SPREAD_NOTE = (
    "Ranges are the spread of the ensemble's global models (last rounds of the federation): they show how "
    "stable the prediction is, NOT a confidence interval. On the simulated default cohort the true response "
    "probability lay inside a 6-model range for only 15% of test patient × regimen pairs (see the model card).")
OUTPUT_LABELS = {"response": "response probability", "pfs": "expected PFS days (to horizon)",
                 "os": "expected OS days (to horizon)"}


class PatientInputError(ValueError):
    """Patient input the comparison cannot use, with what is wrong and what to do."""


class Interval(BaseModel):
    """The final model's value and the range of the ensemble members (which include the final model)."""

    value: float
    lower: float
    upper: float


class Median(BaseModel):
    """Median survival in days; None = not reached within the horizon (S(t) stays above 0.5)."""

    value: float | None
    lower: float | None
    upper: float | None


class SurvivalPrediction(BaseModel):
    survival: list[float] = Field(description="final model's S(t) at time_grid_days")
    lower: list[float]
    upper: list[float]
    median_days: Median


class Driver(BaseModel):
    field: str
    patient_value: str
    shap: float = Field(description="signed contribution to the output (its units) against the site background")


class RegimenPrediction(BaseModel):
    regimen: str
    name: str
    drugs: list[str]
    given_in_record: bool = Field(description="the regimen recorded in the patient's row, if any")
    response_probability: Interval
    pfs: SurvivalPrediction
    os: SurvivalPrediction
    drivers: dict[str, list[Driver]] = Field(description="output → top SHAP drivers, largest |SHAP| first")


class PatientComparison(BaseModel):
    patient_id: str
    cancer_type: str
    notice: str = ASSOCIATIONAL_NOTICE
    range_note: str = MODEL_SPREAD_NOTE
    run: str
    ensemble: list[str] = Field(description="the global models whose spread gives the intervals")
    time_grid_days: list[float]
    horizon_days: int
    regimens: list[RegimenPrediction]
    out_of_distribution: list[OutOfDistribution]
    subgroup_performance: list[SubgroupFigure]


# ----------------------------------------------------------------------------------------------------------
# Patient input
# ----------------------------------------------------------------------------------------------------------

def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


REGIMEN_FILLED = "regimen_filled"  # frame.attrs key: patient ids whose regimen the input left empty


def _fill_regimen(raw: pd.DataFrame) -> tuple[pd.DataFrame, set[str]]:
    """A prospective patient has no regimen yet: every candidate is compared, so the first one stands in.

    A regimen that IS given is kept and validated like any other field (an unknown code is an error).
    """
    raw = raw.copy()
    if "regimen" not in raw.columns:
        raw["regimen"] = ""
    filled: set[str] = set()
    for index, row in raw.iterrows():
        if str(row["regimen"]).strip() == "":
            filled.add(str(row.get("patient_id", "")).strip())
            try:
                stand_in = regimens_for(CancerType(str(row.get("cancer_type", "")).strip()))[0].code
            except (ValueError, IndexError):
                stand_in = REGIMEN_CODES[0]  # the contract check names the cancer type, not the absent regimen
            raw.at[index, "regimen"] = stand_in
    return raw, filled


def _validated(raw: pd.DataFrame, source: str) -> pd.DataFrame:
    filled_raw, filled = _fill_regimen(raw)
    frame = validated_contract_frame(filled_raw, ColumnMapping(), source).reset_index(drop=True)
    frame.attrs[REGIMEN_FILLED] = filled
    return frame


def patients_from_records(records: list[Mapping[str, Any]], source: str) -> pd.DataFrame:
    """Contract-valid patients from JSON objects; DataContractError names each bad field and rule."""
    if not records:
        raise DataContractError([Violation(source=source, row=None, column=None, rule="no patient in the input")])
    for number, record in enumerate(records, start=1):
        if not isinstance(record, Mapping):
            raise DataContractError([Violation(source=source, row=number, column=None,
                                               rule="a patient must be a JSON object of contract fields")])
    columns = list(dict.fromkeys(c for r in records for c in r))
    raw = pd.DataFrame([{c: _cell_text(r.get(c)) for c in columns} for r in records], columns=columns, dtype=str)
    return _validated(raw, source)


def read_patients(path: str | Path) -> pd.DataFrame:
    """One patient (a JSON object), several (a JSON list), or a CSV of contract rows; all validated."""
    from client.data.loader import read_csv_cells  # the CSV reader's encoding and header checks

    path = Path(path).expanduser()
    if not path.is_file():
        raise PatientInputError(f"{path}: no such file; pass a patient JSON file or a CSV of contract rows")
    if path.suffix.lower() == ".json":
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise PatientInputError(f"{path}: not valid JSON ({error}); give one object of contract fields, "
                                    f"e.g. {{\"patient_id\": \"p1\", \"age_years\": 64, ...}}") from None
        return patients_from_records(loaded if isinstance(loaded, list) else [loaded], str(path))
    raw = read_csv_cells(path)
    return _validated(raw, str(path))


# ----------------------------------------------------------------------------------------------------------
# Predictions
# ----------------------------------------------------------------------------------------------------------

def median_days(survival: np.ndarray, time_grid_days: np.ndarray) -> float | None:
    """First time S(t) reaches 0.5, linear between grid points (S(0) = 1); None if it stays above 0.5."""
    times = np.concatenate([[0.0], time_grid_days])
    curve = np.concatenate([[1.0], survival])
    below = np.nonzero(curve <= 0.5)[0]
    if len(below) == 0:
        return None
    k = int(below[0])
    t0, t1, s0, s1 = times[k - 1], times[k], curve[k - 1], curve[k]
    return float(t1 if s0 == s1 else t0 + (s0 - 0.5) / (s0 - s1) * (t1 - t0))


def _survival_prediction(curves: np.ndarray, time_grid_days: np.ndarray) -> SurvivalPrediction:
    """curves (members, K), final model last → its curve, the members' envelope, its median and theirs."""
    point = curves[-1]
    medians = [median_days(c, time_grid_days) for c in curves]
    finite = [m for m in medians if m is not None]
    lower = min(finite) if finite else None
    upper = max(finite) if len(finite) == len(medians) else None  # a member not reaching 0.5: unbounded above
    return SurvivalPrediction(survival=point.tolist(), lower=curves.min(axis=0).tolist(),
                              upper=curves.max(axis=0).tolist(),
                              median_days=Median(value=median_days(point, time_grid_days), lower=lower, upper=upper))


def _patient_value(patient: pd.Series, field: str, regimen: str) -> str:
    if field == "regimen":
        return regimen
    value = patient.get(field)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "missing"
    if field in FLAG_FEATURES:
        return "true" if float(value) > 0 else "false"
    return f"{value:g}" if isinstance(value, float) else str(value)


def candidate_rows(patient: pd.Series) -> pd.DataFrame:
    """The patient once per candidate regimen of its cancer type (outcomes dropped: they are not inputs)."""
    regimens = regimens_for(CancerType(patient["cancer_type"]))
    rows = pd.DataFrame([patient.to_dict()] * len(regimens), columns=list(CONTRACT_COLUMNS))
    rows["regimen"] = [r.code for r in regimens]
    for column in OUTCOMES:
        rows[column] = None
    return rows


def compare_patient(bundle: RunBundle, patient: pd.Series, background: pd.DataFrame, *, site_id: str | None = None,
                    site_report: dict | None = None, regimen_recorded: bool = True, top_k: int = 5,
                    shap_samples: int = 100, seed: int = 0) -> PatientComparison:
    """Every candidate regimen for one validated patient row (see read_patients).

    `regimen_recorded`: the row's regimen was in the input (a treated patient), not a stand-in.
    """
    rows = candidate_rows(patient)
    inputs = encode_cohort(rows, bundle.stats, bundle.grid).inputs()
    member_outputs = [predict(member.model, inputs) for member in bundle.members]
    response = np.stack([m.response_prob for m in member_outputs])  # (members, regimens)
    pfs = np.stack([m.pfs_survival for m in member_outputs])  # (members, regimens, K)
    os_ = np.stack([m.os_survival for m in member_outputs])
    grid_days = bundle.grid.time_grid_days
    background_inputs = encode_cohort(background, bundle.stats, bundle.grid).inputs()
    explanation = explain(bundle.final_model, bundle.grid, background_inputs, inputs, samples=shap_samples, seed=seed)
    regimens = []
    for index, code in enumerate(rows["regimen"]):
        regimen = REGIMEN_BY_CODE[code]
        drivers = {output: [Driver(field=field, patient_value=_patient_value(patient, field, code), shap=value)
                            for field, value in explanation.top_drivers(index, output, top_k)]
                   for output in ("response", "pfs", "os")}
        regimens.append(RegimenPrediction(
            regimen=code, name=regimen.name, drugs=list(regimen.drugs),
            given_in_record=regimen_recorded and code == patient.get("regimen"),
            response_probability=Interval(value=float(response[-1, index]),
                                          lower=float(response[:, index].min()),
                                          upper=float(response[:, index].max())),
            pfs=_survival_prediction(pfs[:, index], grid_days), os=_survival_prediction(os_[:, index], grid_days),
            drivers=drivers))
    return PatientComparison(
        patient_id=str(patient["patient_id"]), cancer_type=str(patient["cancer_type"]), run=bundle.run_dir.name,
        notice=ASSOCIATIONAL_NOTICE + (ADJUSTMENT_NOTE if bundle.config.propensity_weighting else ""),
        ensemble=[m.source for m in bundle.members], time_grid_days=grid_days.tolist(),
        horizon_days=bundle.config.survival_horizon_days, regimens=regimens,
        out_of_distribution=out_of_distribution(patient, bundle, background),
        subgroup_performance=subgroup_performance(patient, bundle, site_id, site_report))


def ensemble_predictions(bundle: RunBundle, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Members' response probabilities and PFS/OS curves for contract rows as given (for calibration studies)."""
    inputs = encode_cohort(frame, bundle.stats, bundle.grid).inputs()
    with torch.no_grad():
        outputs = [predict(member.model, inputs) for member in bundle.members]
    return {"response": np.stack([o.response_prob for o in outputs]),
            "pfs": np.stack([o.pfs_survival for o in outputs]), "os": np.stack([o.os_survival for o in outputs])}


# ----------------------------------------------------------------------------------------------------------
# The site around the comparison: SHAP background and its own validation report
# ----------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BoardSite:
    site_id: str
    background: pd.DataFrame  # a sample of the site's training patients (SHAP background, modality patterns)
    report: dict | None  # the site's report.json (SiteEvaluation) when the site wrote one


def open_board_site(bundle: RunBundle, site: str | None = None, site_config: str | Path | None = None,
                    background_size: int = 200) -> BoardSite:
    """The site's training split (same deterministic split as in training) and its validation report."""
    from client.data.loader import load_contract_csv
    from client.data.site import assign_splits, site_from_config
    from shared.config import cohort_directory

    config = bundle.config
    if site_config is not None:
        opened = site_from_config(Path(site_config).expanduser(), config)
        site_id, patients, split, state_dir = opened.site_id, opened.patients, opened.split, opened.state_dir
    elif site is not None:
        folder = cohort_directory(config) / site
        if (folder / "site.toml").is_file():
            opened = site_from_config(folder / "site.toml", config)
            site_id, patients, split, state_dir = opened.site_id, opened.patients, opened.split, opened.state_dir
        elif (folder / "patients.csv").is_file():
            patients = load_contract_csv(folder / "patients.csv")
            split = assign_splits(patients["patient_id"], config.seed, config.validation_fraction,
                                  config.test_fraction)
            site_id, state_dir = site, bundle.run_dir / "sites" / site
        else:
            known = sorted(p.parent.name for p in cohort_directory(config).glob("*/patients.csv"))
            raise PatientInputError(f"no simulated site {site!r} in {cohort_directory(config)}; known sites: "
                                    f"{', '.join(known) or 'none'}")
    else:
        raise PatientInputError("name the site: --site NAME (a simulated site) or --site-config PATH (a deployed "
                                "site); the drivers are explained against the site's own training patients")
    train = patients.loc[split == "train"].reset_index(drop=True)
    if len(train) > background_size:
        train = train.sample(n=background_size, random_state=config.seed).reset_index(drop=True)
    report_path = Path(state_dir) / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.is_file() else None
    return BoardSite(site_id=site_id, background=train, report=report)


def compare_frame(bundle: RunBundle, site: BoardSite, patients: pd.DataFrame, top_k: int = 5,
                  shap_samples: int = 100) -> list[PatientComparison]:
    """compare_patient for every row of a validated frame (read_patients)."""
    filled = patients.attrs.get(REGIMEN_FILLED, set())
    return [compare_patient(bundle, row, site.background, site_id=site.site_id, site_report=site.report,
                            regimen_recorded=str(row["patient_id"]) not in filled, top_k=top_k,
                            shap_samples=shap_samples, seed=bundle.config.seed)
            for _, row in patients.iterrows()]
