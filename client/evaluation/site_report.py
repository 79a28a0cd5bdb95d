"""The per-site evaluation and its HTML report, written at the site only (it holds curves from local patients).

`evaluate_site` computes every figure for the federated model and for the baselines the clinic already uses,
on the same test patients, with subgroups; `write_site_report` renders it as one self-contained HTML file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from client.evaluation.baselines import fit_baselines
from client.evaluation.explanations import OUTPUT_UNITS
from client.governance.audit import AuditSummary
from shared import plots
from shared.atomic import write_atomically
from shared.html_report import PrivacySpent, RunInfo, render
from shared.metrics import (
    ENDPOINT_NAMES,
    Comparison,
    EvaluationSettings,
    OutcomePredictions,
    PredictionEvaluation,
    SubgroupEvaluation,
    compare_with_baseline,
    evaluate_predictions,
    evaluate_subgroups,
)

MODEL_NAME = "Federated model"
# with personalisation on (run-config site-personalisation) the report shows both models under these names
CONSORTIUM_NAME, PERSONALISED_NAME = "Consortium model", "Personalised at site"


class BaselineEvaluation(BaseModel):
    """A baseline's figures on the site's test patients and the model's difference from it."""

    name: str
    description: str
    evaluation: PredictionEvaluation
    comparisons: list[Comparison]


class SiteEvaluation(BaseModel):
    """Everything the site report shows; JSON-serialisable so a report can be re-rendered without the data."""

    site_id: str
    run: RunInfo
    privacy: PrivacySpent
    settings: EvaluationSettings
    n_train: int
    n_test: int
    model: PredictionEvaluation
    baselines: list[BaselineEvaluation]
    subgroups: list[SubgroupEvaluation]
    shap_importances: dict[str, dict[str, float]] = Field(
        description="output (response, pfs, os) → contract field → mean |SHAP| over the explained test patients")
    shap_patients: int = Field(default=0, description="test patients explained (SHAP); 0 when none")
    audit: AuditSummary | None = Field(default=None, description="the site's audit log, summarised when written")
    personalised: PredictionEvaluation | None = Field(
        default=None, description="the consortium model with its response head refitted on this site's training "
                                  "split (client/training/personalise.py); it stays at the site")


def evaluate_site(site_id: str, train_frame: pd.DataFrame, test_frame: pd.DataFrame,
                  predictions: OutcomePredictions, shap_importances: dict[str, dict[str, float]],
                  privacy: PrivacySpent, run: RunInfo, rng: np.random.Generator,
                  settings: EvaluationSettings | None = None, shap_patients: int = 0,
                  audit: AuditSummary | None = None, personalised: OutcomePredictions | None = None
                  ) -> SiteEvaluation:
    """Evaluate the model's test-split predictions against outcomes, baselines and subgroups.

    `train_frame`/`test_frame` are the site's contract tables (training split: baselines and the censoring
    distribution for IPCW); `predictions` cover every row of `test_frame`, in order; `personalised`: the site's
    personalised model's predictions for the same rows, evaluated beside the consortium model's.
    """
    settings = settings or EvaluationSettings()
    model = evaluate_predictions(test_frame, predictions, train_frame, settings, rng)
    baselines: list[BaselineEvaluation] = []
    for baseline in fit_baselines(train_frame, test_frame, predictions.time_grid_days, settings.min_cell_size):
        evaluation = evaluate_predictions(test_frame, baseline.predictions, train_frame, settings, rng)
        comparisons = compare_with_baseline(test_frame, predictions, baseline.predictions, model, evaluation,
                                            settings, rng)
        baselines.append(BaselineEvaluation(name=baseline.name, description=baseline.description,
                                            evaluation=evaluation, comparisons=comparisons))
    return SiteEvaluation(site_id=site_id, run=run, privacy=privacy, settings=settings, n_train=len(train_frame),
                          n_test=len(test_frame), model=model, baselines=baselines,
                          personalised=None if personalised is None else evaluate_predictions(
                              test_frame, personalised, train_frame, settings, rng),
                          subgroups=evaluate_subgroups(test_frame, predictions, settings, rng),
                          shap_importances={k: dict(v) for k, v in shap_importances.items()},
                          shap_patients=shap_patients, audit=audit)


def _figures(evaluation: SiteEvaluation) -> dict[str, str]:
    """Every plot of the report as an inline image."""
    everyone = dict(_predictors(evaluation))
    figures = {
        "roc": plots.roc_plot({f"{name} (AUC {e.response.auc.value:.2f})" if e.response.auc.available else name:
                               e.response.roc for name, e in everyone.items()}),
        "calibration": plots.calibration_plot({name: e.response.calibration for name, e in everyone.items()
                                               if name in (MODEL_NAME, CONSORTIUM_NAME, PERSONALISED_NAME,
                                                           "Clinical model")}),
        "decision_curve": plots.decision_curve_plot({name: e.response.decision_curve
                                                     for name, e in everyone.items()}),
        "shap": plots.shap_outputs_plot(evaluation.shap_importances, OUTPUT_UNITS),
    }
    if evaluation.privacy.rounds:
        figures["privacy"] = plots.privacy_spending_plot(evaluation.privacy.rounds, evaluation.privacy.budget_epsilon)
    for endpoint, result in evaluation.model.survival.items():
        figures[f"km_{endpoint}"] = plots.kaplan_meier_plot(
            result.kaplan_meier, f"{ENDPOINT_NAMES[endpoint]} by predicted risk tertile")
    subgroup_figures = (("response_auc", "Response AUC"), ("pfs_harrell_c", "PFS Harrell's C"),
                        ("os_harrell_c", "OS Harrell's C"))
    for field, label in subgroup_figures:
        rows = [(f"{s.group}: {s.level}", getattr(s, field)) for s in evaluation.subgroups]
        figures[f"forest_{field}"] = plots.forest_plot(rows, title=f"{label} by subgroup", xlabel=label)
    return figures


def _predictors(evaluation: SiteEvaluation) -> list[tuple[str, PredictionEvaluation]]:
    """The report's rows: the model (as "Consortium model" beside "Personalised at site" when both), baselines."""
    models = [(MODEL_NAME, evaluation.model)] if evaluation.personalised is None else [
        (CONSORTIUM_NAME, evaluation.model), (PERSONALISED_NAME, evaluation.personalised)]
    return models + [(b.name, b.evaluation) for b in evaluation.baselines]


def write_site_report(out_path: str | Path, site_evaluation: SiteEvaluation) -> Path:
    """Render the site's evaluation as one self-contained HTML file, written atomically; returns its path."""
    predictors = _predictors(site_evaluation)
    html = render("site_report.html.j2", site=site_evaluation, figures=_figures(site_evaluation),
                  predictors=predictors, endpoint_names=ENDPOINT_NAMES)
    return write_atomically(out_path, html)
