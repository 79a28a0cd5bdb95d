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

from client.explanations import explain
from client.run_bundle import RunBundle
from client.site_data import validated_contract_frame
from shared.contract import CONTRACT_COLUMNS, MODALITIES, OUTCOMES, DataContractError, Violation
from shared.encoding import encode_cohort, modality_presence
from shared.harmonisation import (
    CATEGORICAL_FEATURES,
    FLAG_FEATURES,
    HISTOGRAM_EDGES,
    NUMERIC_FEATURES,
    NUMERIC_TRANSFORMS,
    SUPPRESSED,
)
from shared.messages import subgroup_key
from shared.metrics import subgroup_masks
from shared.model import predict
from shared.site_config import ColumnMapping
from shared.vocabulary import REGIMEN_BY_CODE, REGIMEN_CODES, CancerType, regimens_for

ASSOCIATIONAL_NOTICE = (
    "Associational, not causal: the model learned from observational practice at the consortium's sites, not "
    "from randomised comparisons. A difference between regimens may reflect who was given each regimen (for "
    "example fitter patients getting more intensive treatment) rather than what the regimen does. Use it "
    "beside, never instead of, trial evidence and clinical judgement.")
MODEL_SPREAD_NOTE = (
    "Ranges are the spread of the ensemble's global models (last rounds of the federation): they show how "
    "stable the prediction is, NOT a confidence interval. On the simulated default cohort the true response "
    "probability lay inside a 6-model range for only 15% of test patient × regimen pairs (see the model card).")
Z_LIMIT = 4.0
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


class OutOfDistribution(BaseModel):
    """An input the training data did not cover well; predictions for it are extrapolations."""

    field: str
    value: str
    kind: str  # "beyond-range", "extreme-z", "unseen-code", "rare-code", "unseen-modality-pattern"
    detail: str


class SubgroupFigure(BaseModel):
    """The patient's subgroup and how the model did on it in a validation report (None = not reported)."""

    source: str
    group: str
    level: str
    n: int | None
    response_auc: str
    pfs_cindex: str
    os_cindex: str


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
    from client.site_data import read_csv_cells  # the CSV reader's encoding and header checks

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
# Out-of-distribution flags
# ----------------------------------------------------------------------------------------------------------

def _occupied_range(counts: list[float], edges: tuple[float, ...]) -> tuple[float, float] | None:
    """Lowest and highest edge of the pooled histogram's non-empty bins (coarsened bins make it approximate)."""
    occupied = [i for i, c in enumerate(counts) if c > 0]
    if not occupied:
        return None
    return edges[occupied[0]], edges[occupied[-1] + 1]


def out_of_distribution(patient: pd.Series, bundle: RunBundle, site_training: pd.DataFrame | None,
                        ) -> list[OutOfDistribution]:
    """Fields of one patient far from the consortium's pooled training statistics, and how far."""
    stats = bundle.stats
    flags: list[OutOfDistribution] = []
    for feature in NUMERIC_FEATURES:
        value = patient.get(feature)
        if value is None or pd.isna(value):
            continue
        value = float(value)
        if stats.count.get(feature, 0) == 0:
            flags.append(OutOfDistribution(field=feature, value=f"{value:g}", kind="unseen-code",
                                           detail="no site shared this field in training; the model never "
                                                  "learned from it"))
            continue
        z = (float(NUMERIC_TRANSFORMS[feature](np.array([value]))[0]) - stats.mean[feature]) / max(
            stats.std[feature], 1e-6)
        span = _occupied_range(stats.histogram[feature], HISTOGRAM_EDGES[feature])
        scale = f" ({stats.transform[feature]} scale)" if stats.transform[feature] != "identity" else ""
        if span is not None and not span[0] <= value <= span[1]:
            side = "below" if value < span[0] else "above"
            distance = span[0] - value if value < span[0] else value - span[1]
            flags.append(OutOfDistribution(
                field=feature, value=f"{value:g}", kind="beyond-range",
                detail=f"{distance:g} {side} the pooled training range {span[0]:g}–{span[1]:g}; z = {z:+.1f}"
                       f"{scale}"))
        elif abs(z) > Z_LIMIT:
            flags.append(OutOfDistribution(field=feature, value=f"{value:g}", kind="extreme-z",
                                           detail=f"z = {z:+.1f}{scale} from the pooled training mean "
                                                  f"(flagged beyond ±{Z_LIMIT:g})"))
    for feature in CATEGORICAL_FEATURES:
        if feature == "regimen":
            continue  # every candidate regimen is compared; regimen coverage is shown per regimen
        value = patient.get(feature)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        code = ("true" if float(value) > 0 else "false") if feature in FLAG_FEATURES else str(value)
        counts = stats.category_counts.get(feature, {})
        if counts.get(code, 0) > 0:
            continue
        if counts.get(SUPPRESSED, 0) > 0:
            flags.append(OutOfDistribution(field=feature, value=code, kind="rare-code",
                                           detail="seen in training only at sites where it was too rare to "
                                                  "report (below the minimum cell size)"))
        else:
            flags.append(OutOfDistribution(field=feature, value=code, kind="unseen-code",
                                           detail="this code never occurred in the consortium's training data"))
    if site_training is not None and len(site_training):
        pattern = modality_presence(patient.to_frame().T)[0]
        seen = modality_presence(site_training)
        if not (seen == pattern).all(axis=1).any():
            present = [m for m, p in zip(MODALITIES, pattern, strict=True) if p > 0]
            flags.append(OutOfDistribution(field="modalities", value="+".join(present), kind="unseen-modality-pattern",
                                           detail="no training patient at this site had exactly these modalities"))
    return flags


# ----------------------------------------------------------------------------------------------------------
# Subgroup performance
# ----------------------------------------------------------------------------------------------------------

def _format_estimate(value: float | None, lower: float | None, upper: float | None) -> str:
    if value is None:
        return "not reported"
    if lower is None or upper is None:
        return f"{value:.2f}"
    return f"{value:.2f} ({lower:.2f}–{upper:.2f})"


def _from_report(report: dict, wanted: set[tuple[str, str]]) -> list[SubgroupFigure]:
    rows = []
    for subgroup in report.get("subgroups", []):
        if (subgroup["group"], subgroup["level"]) not in wanted:
            continue
        shown = {name: _format_estimate(subgroup[name]["value"], subgroup[name].get("lower"),
                                        subgroup[name].get("upper"))
                 for name in ("response_auc", "pfs_harrell_c", "os_harrell_c")}
        rows.append(SubgroupFigure(source=f"site report ({report.get('site_id', 'this site')}, test patients)",
                                   group=subgroup["group"], level=subgroup["level"], n=subgroup.get("n"),
                                   response_auc=shown["response_auc"], pfs_cindex=shown["pfs_harrell_c"],
                                   os_cindex=shown["os_harrell_c"]))
    return rows


def _from_metrics(figures: dict[str, float], site: str, group: str, level: str) -> SubgroupFigure:
    """The subgroup's figures as the site sent them (keys from shared.messages, the one message schema)."""

    def figure(name: str) -> str:
        return _format_estimate(figures.get(subgroup_key(group, level, name)),
                                figures.get(subgroup_key(group, level, f"{name}-lower")),
                                figures.get(subgroup_key(group, level, f"{name}-upper")))

    n = figures.get(subgroup_key(group, level, "n"))
    return SubgroupFigure(source=f"federated validation ({site})", group=group, level=level,
                          n=int(n) if n is not None else None, response_auc=figure("response-auc"),
                          pfs_cindex=figure("pfs-cindex"), os_cindex=figure("os-cindex"))


def subgroup_performance(patient: pd.Series, bundle: RunBundle, site_id: str | None,
                         site_report: dict | None) -> list[SubgroupFigure]:
    """The patient's subgroups, with the figures of the site's own report and of the federated validation."""
    frame = patient.to_frame().T.reset_index(drop=True)
    memberships = [(group, level) for group, level, rows in subgroup_masks(frame) if bool(rows[0])]
    rows: list[SubgroupFigure] = []
    if site_report is not None:
        rows += _from_report(site_report, set(memberships))
    reported = {(r.group, r.level) for r in rows}
    test = bundle.metrics.get("test", {})
    for site in ([site_id] if site_id in test else sorted(test)):
        for group, level in memberships:
            row = _from_metrics(test[site], site, group, level)
            if row.n is not None or (group, level) not in reported:
                rows.append(row)
    if not rows:
        rows = [SubgroupFigure(source="no validation report found", group=g, level=lv, n=None,
                               response_auc="not reported", pfs_cindex="not reported", os_cindex="not reported")
                for g, lv in memberships]
    return rows


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
    from client.site import assign_splits, site_from_config
    from client.site_data import load_contract_csv
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
