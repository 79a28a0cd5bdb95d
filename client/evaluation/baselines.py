"""The predictions a clinic can already make, to show what the federated model adds at this site.

Each baseline is fitted on the site's training split and predicts its test split in the model's own output
interface (`OutcomePredictions`), so every metric applies to it identically:
- ECOG alone, stage alone: one clinical variable;
- a single biomarker per cancer type (breast HER2, NSCLC PD-L1, colorectal MSI-high, ovarian BRCA1/2, each
  falling back to the next marker recorded at the site);
- a classical clinical model: logistic regression for response, Cox proportional hazards (scikit-survival)
  for PFS and OS, on clinical variables plus the regimen given (no pathology, imaging or genomics).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from pydantic import BaseModel
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sksurv.linear_model import CoxPHSurvivalAnalysis
from sksurv.util import Surv

from shared.metrics import ENDPOINTS, MIN_CELL_SIZE, OutcomePredictions, responder_labels, survival_outcomes

STAGE_NUMBER = {"I": 1, "II": 2, "III": 3, "IV": 4}

# Biomarker per cancer type, in order of preference; the first one recorded for enough training patients is used.
BIOMARKER_CANDIDATES: dict[str, tuple[str, ...]] = {
    "breast": ("her2_positive", "er_positive", "ki67_percent"),
    "nsclc": ("pdl1_tps_percent", "egfr", "kras"),
    "colorectal": ("msi_high", "kras", "braf"),
    "ovarian": ("brca1_or_brca2", "tp53", "grade"),
}
BIOMARKER_NAMES: dict[str, str] = {
    "her2_positive": "HER2", "er_positive": "ER", "ki67_percent": "Ki-67", "pdl1_tps_percent": "PD-L1 TPS",
    "egfr": "EGFR", "kras": "KRAS", "msi_high": "MSI-high", "braf": "BRAF", "brca1_or_brca2": "BRCA1/2",
    "tp53": "TP53", "grade": "grade",
}
CLINICAL_NUMERIC = ("age_years", "ecog", "stage_number", "charlson_index", "prior_lines", "line_of_therapy")
CLINICAL_CATEGORICAL = ("sex", "cancer_type", "histology", "regimen")


class BaselinePredictions(BaseModel):
    """One baseline's predictions for the test split, and what it used."""

    name: str
    description: str
    predictions: OutcomePredictions


def _codes(frame: pd.DataFrame, column: str) -> pd.Series:
    """A field's codes; all missing where the consortium's dictionary has no such field."""
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype=object)
    return frame[column].map(lambda v: getattr(v, "value", v))


def _number(frame: pd.DataFrame, column: str) -> pd.Series:
    if column == "stage_number":
        return _codes(frame, "stage_group").map(STAGE_NUMBER).astype(float)
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype=float)
    return pd.to_numeric(frame[column], errors="coerce").astype(float)


def _marker(frame: pd.DataFrame, marker: str) -> pd.Series:
    """A biomarker as a number (flags 0/1, percentages / 100), NaN where not recorded."""
    if marker == "brca1_or_brca2":
        brca = frame[["brca1", "brca2"]].apply(lambda c: c.map(lambda v: np.nan if v is None else float(v)))
        return brca.max(axis=1, skipna=True)
    values = frame[marker].map(lambda v: np.nan if v is None else float(v)).astype(float)
    return values / 100 if marker.endswith("_percent") else values


def choose_biomarkers(train_frame: pd.DataFrame, min_cell_size: int = MIN_CELL_SIZE) -> dict[str, str | None]:
    """For each cancer type at the site, the first candidate marker recorded (and varying) in enough patients."""
    cancer = _codes(train_frame, "cancer_type")
    chosen: dict[str, str | None] = {}
    for cancer_type in sorted(cancer.dropna().unique()):
        rows = train_frame[(cancer == cancer_type).to_numpy()]
        chosen[cancer_type] = None
        for marker in BIOMARKER_CANDIDATES.get(cancer_type, ()):
            values = _marker(rows, marker).dropna()
            if len(values) >= min_cell_size and values.nunique() > 1:
                chosen[cancer_type] = marker
                break
    return chosen


def _biomarker_features(frame: pd.DataFrame, chosen: dict[str, str | None]) -> pd.DataFrame:
    """Per cancer type: its marker (0 where not that cancer or not recorded) and a not-recorded flag."""
    cancer = _codes(frame, "cancer_type")
    features = pd.DataFrame({"cancer_type": cancer.astype(str)}, index=frame.index)
    for cancer_type, marker in chosen.items():
        if marker is None:
            continue
        this_cancer = (cancer == cancer_type).astype(float)
        values = _marker(frame, marker)
        features[f"{cancer_type}:{marker}"] = values.fillna(0.0) * this_cancer
        features[f"{cancer_type}:{marker} not recorded"] = values.isna().astype(float) * this_cancer
    return features


def _clinical_features(frame: pd.DataFrame) -> pd.DataFrame:
    features = pd.DataFrame({c: _number(frame, c) for c in CLINICAL_NUMERIC}, index=frame.index)
    for column in CLINICAL_CATEGORICAL:
        features[column] = _codes(frame, column).astype(str)
    return features


def _preprocessor(features: pd.DataFrame) -> ColumnTransformer:
    categorical = [c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])]
    numeric = [c for c in features.columns if c not in categorical]
    # clinical fields other than age and cancer type are optional in the data dictionary: a missing number is
    # set to the training mean (0 once scaled) with a missing flag; complete data pass through unchanged
    numbers = make_pipeline(StandardScaler(), SimpleImputer(strategy="constant", fill_value=0.0, add_indicator=True,
                                                            keep_empty_features=True))
    return ColumnTransformer([("numbers", numbers, numeric),
                              ("categories", OneHotEncoder(handle_unknown="ignore", sparse_output=False),
                               categorical)])


def _step_at(times: np.ndarray, curves: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Step survival curves given at `times` read at grid days (1 before the first, last value after the last)."""
    index = np.searchsorted(times, grid, side="right") - 1
    at_grid = curves[:, np.clip(index, 0, None)]
    at_grid[:, index < 0] = 1.0
    return at_grid


def _fit_predict(features: Callable[[pd.DataFrame], pd.DataFrame], train_frame: pd.DataFrame,
                 test_frame: pd.DataFrame, time_grid_days: np.ndarray) -> OutcomePredictions:
    """Logistic regression for response and Cox PH for PFS/OS on the same features, fitted on training rows."""
    train_x, test_x = features(train_frame), features(test_frame)
    known, responder = responder_labels(train_frame)
    # an endpoint the dictionary does not model has no known outcome for any patient, so no figure is ever
    # computed from its predictions: they are left at "no information" (probability 0.5, survival 1)
    response_prob = np.full(len(test_x), 0.5)
    if known.any():
        if len(np.unique(responder[known])) < 2:
            raise ValueError("the training split needs both responders and non-responders to fit a baseline")
        response_model: Pipeline = make_pipeline(_preprocessor(train_x), LogisticRegression(max_iter=2000))
        response_model.fit(train_x[known], responder[known])
        response_prob = response_model.predict_proba(test_x)[:, 1]
    curves: dict[str, np.ndarray] = {}
    for endpoint in ENDPOINTS:
        rows, days, event = survival_outcomes(train_frame, endpoint)
        if not rows.any():  # an endpoint the dictionary does not model
            curves[endpoint] = np.ones((len(test_x), len(time_grid_days)))
            continue
        if event[rows].sum() == 0:
            raise ValueError(f"the training split has no {endpoint.upper()} events to fit a Cox baseline")
        cox: Pipeline = make_pipeline(_preprocessor(train_x), CoxPHSurvivalAnalysis(alpha=0.1, ties="efron"))
        cox.fit(train_x[rows], Surv.from_arrays(event=event[rows], time=days[rows]))
        survival = cox.predict_survival_function(test_x, return_array=True)
        curves[endpoint] = _step_at(cox[-1].unique_times_, survival, time_grid_days)
    return OutcomePredictions(response_prob=response_prob, pfs_survival=curves["pfs"], os_survival=curves["os"], time_grid_days=time_grid_days)


def fit_baselines(train_frame: pd.DataFrame, test_frame: pd.DataFrame, time_grid_days: np.ndarray,
                  min_cell_size: int = MIN_CELL_SIZE) -> list[BaselinePredictions]:
    """Fit every baseline on the training split and predict every row of the test split, in order."""
    grid = np.asarray(time_grid_days, dtype=float)
    chosen = choose_biomarkers(train_frame, min_cell_size)
    used = "; ".join(f"{cancer}: {BIOMARKER_NAMES[m] if m else 'none recorded'}" for cancer, m in chosen.items())
    plans: list[tuple[str, str, Callable[[pd.DataFrame], pd.DataFrame]]] = [
        ("ECOG alone", "ECOG performance status as the only predictor",
         lambda f: pd.DataFrame({"ecog": _number(f, "ecog")}, index=f.index)),
        ("Stage alone", "AJCC stage group (I–IV) as the only predictor",
         lambda f: pd.DataFrame({"stage_number": _number(f, "stage_number")}, index=f.index)),
        ("Single biomarker", f"one biomarker per cancer type ({used}), with cancer type",
         lambda f: _biomarker_features(f, chosen)),
        ("Clinical model", "logistic regression (response) and Cox proportional hazards (PFS, OS) on age, sex, "
                           "ECOG, stage, cancer type, histology, Charlson index, prior lines, line of therapy and "
                           "regimen",
         _clinical_features),
    ]
    recorded = {"ECOG alone": "ecog", "Stage alone": "stage_group"}  # single-field baselines need their field
    return [BaselinePredictions(name=name, description=description,
                                predictions=_fit_predict(features, train_frame, test_frame, grid))
            for name, description, features in plans if recorded.get(name, "age_years") in train_frame.columns]
