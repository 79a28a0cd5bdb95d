"""Figures by subgroup (age, sex, race/ethnicity, comorbidity, cancer type, modalities) and the headline figures a site reports."""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from shared.contract import MODALITY_FIELDS
from shared.metrics.estimates import suppress_small_cells
from shared.metrics.evaluation import responder_labels, survival_outcomes
from shared.metrics.response import response_auc, response_brier
from shared.metrics.results import ENDPOINTS, Estimate, EvaluationSettings, OutcomePredictions, PredictionEvaluation, SubgroupEvaluation
from shared.metrics.survival import harrell_c


def _value(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column].map(lambda v: getattr(v, "value", v))


def subgroup_masks(frame: pd.DataFrame) -> list[tuple[str, str, np.ndarray]]:
    """(group, level, rows) for the subgroups every site reports, from the contract's columns."""
    masks: list[tuple[str, str, np.ndarray]] = []
    age = pd.to_numeric(frame["age_years"], errors="coerce").to_numpy()
    masks += [("Age", "< 70", age < 70), ("Age", "≥ 70", age >= 70)]
    for column, group in (("sex", "Sex"), ("race_ethnicity", "Race/ethnicity"), ("cancer_type", "Cancer type")):
        if column not in frame.columns:  # a field this consortium's dictionary does not have
            continue
        values = _value(frame, column)
        for level in sorted(values.dropna().unique()):
            masks.append((group, str(level), (values == level).to_numpy()))
    if "charlson_index" in frame.columns:
        charlson = pd.to_numeric(frame["charlson_index"], errors="coerce").to_numpy()
        masks += [("Comorbidity (Charlson)", "0", charlson == 0),
                  ("Comorbidity (Charlson)", "1–2", (charlson >= 1) & (charlson <= 2)),
                  ("Comorbidity (Charlson)", "≥ 3", charlson >= 3)]
    for modality, fields in MODALITY_FIELDS.items():
        if modality == "clinical":
            continue
        present = frame[[f for f in fields if f in frame.columns]].notna().any(axis=1).to_numpy()
        masks += [(f"{modality.capitalize()} data", "missing", ~present),
                  (f"{modality.capitalize()} data", "present", present)]
    return masks


def evaluate_subgroups(test_frame: pd.DataFrame, predictions: OutcomePredictions, settings: EvaluationSettings,
                       rng: np.random.Generator) -> list[SubgroupEvaluation]:
    """Response AUC and Brier, PFS and OS Harrell's C within each subgroup; small subgroups suppressed whole."""
    known, responder = responder_labels(test_frame)
    outcomes = {endpoint: survival_outcomes(test_frame, endpoint) for endpoint in ENDPOINTS}
    results: list[SubgroupEvaluation] = []
    for group, level, rows in subgroup_masks(test_frame):
        size = int(rows.sum())
        if size < settings.min_cell_size:
            blank = suppress_small_cells(size, 0, settings.min_cell_size)
            assert blank is not None
            results.append(SubgroupEvaluation(group=group, level=level, n=None, response_auc=blank,
                                              response_brier=blank, pfs_harrell_c=blank, os_harrell_c=blank))
            continue
        in_response = rows & known
        p, y = predictions.response_prob[in_response], responder[in_response]
        concordance: dict[str, Estimate] = {}
        for endpoint, (followed, days, event) in outcomes.items():
            chosen = rows & followed
            concordance[endpoint] = harrell_c(predictions.survival(endpoint)[chosen], predictions.time_grid_days,
                                              days[chosen], event[chosen], settings, rng)
        results.append(SubgroupEvaluation(
            group=group, level=level, n=size, response_auc=response_auc(p, y, settings, rng),
            response_brier=response_brier(p, y, settings, rng), pfs_harrell_c=concordance["pfs"],
            os_harrell_c=concordance["os"]))
    return results


class FigureSpec(BaseModel):
    """How a shared figure is named, pooled across sites, and what value means 'no better than chance'."""

    model_config = ConfigDict(frozen=True)

    label: str
    scale: Literal["identity", "logit"]
    reference: float | None


SITE_FIGURES: dict[str, FigureSpec] = {
    "response_auc": FigureSpec(label="Response AUC", scale="logit", reference=0.5),
    "response_brier": FigureSpec(label="Response Brier score", scale="logit", reference=None),
    "response_calibration_slope": FigureSpec(label="Response calibration slope", scale="identity", reference=1.0),
    "pfs_harrell_c": FigureSpec(label="PFS Harrell's C", scale="logit", reference=0.5),
    "pfs_uno_c": FigureSpec(label="PFS Uno's C", scale="logit", reference=0.5),
    "os_harrell_c": FigureSpec(label="OS Harrell's C", scale="logit", reference=0.5),
    "os_uno_c": FigureSpec(label="OS Uno's C", scale="logit", reference=0.5),
}


def site_figures(evaluation: PredictionEvaluation) -> dict[str, Estimate]:
    """The headline figures a site shares with the consortium (already suppressed where cells are small)."""
    figures = {"response_auc": evaluation.response.auc, "response_brier": evaluation.response.brier,
               "response_calibration_slope": evaluation.response.calibration_slope}
    for endpoint, result in evaluation.survival.items():
        figures[f"{endpoint}_harrell_c"] = result.harrell_c
        figures[f"{endpoint}_uno_c"] = result.uno_c
    return figures
