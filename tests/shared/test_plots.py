"""Every figure renders to an inline PNG that decodes, including when its inputs are suppressed."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from shared import plots
from shared.metrics import (
    CalibrationCurve,
    Curve,
    DecisionCurve,
    Estimate,
    KaplanMeierByRisk,
    KaplanMeierGroup,
    random_effects_meta_analysis,
)


def _decode(uri: str) -> Image.Image:
    assert uri.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
    image.load()
    assert image.width > 100 and image.height > 100
    return image


def _estimate(value: float) -> Estimate:
    return Estimate(value=value, lower=value - 0.05, upper=value + 0.05, n=120, events=40)


SUPPRESSED = Estimate(value=None, suppressed=True, note="fewer than 10 patients")


@pytest.mark.parametrize("uri", [
    plots.roc_plot({"Model": Curve(x=[0, 0.2, 1], y=[0, 0.7, 1]), "Baseline": None}),
    plots.roc_plot({"Model": None}),
    plots.calibration_plot({"Model": CalibrationCurve(predicted=[0.2, 0.5, 0.8], observed=[0.25, 0.45, 0.8], bins=3)}),
    plots.decision_curve_plot({"Model": DecisionCurve(thresholds=[0.1, 0.5], net_benefit=[0.3, 0.1],
                                                      treat_all=[0.33, 0.0])}),
    plots.decision_curve_plot({"Model": None}),
    plots.kaplan_meier_plot(KaplanMeierByRisk(groups=[
        KaplanMeierGroup(label="Low", n=40, events=12, curve=Curve(x=[0, 100, 400], y=[1, 0.9, 0.7]),
                         lower=[1, 0.8, 0.6], upper=[1, 0.95, 0.8]),
        KaplanMeierGroup(label="High", n=None, events=None, curve=None)], logrank_p=None, note="suppressed"),
        "OS"),
    plots.kaplan_meier_plot(None, "PFS"),
    plots.forest_plot([("Age < 70", _estimate(0.7)), ("Age ≥ 70", SUPPRESSED)], "AUC by subgroup", "AUC"),
    plots.shap_importance_plot({"ECOG": 0.3, "stage": 0.2, "HER2": 0.1}),
    plots.shap_importance_plot({}),
    plots.heatmap_plot([[0.7, None], [0.65, 0.72]], ["Site A only", "Federated"], ["A", "B"], "AUC", "AUC"),
    plots.heatmap_plot([[None]], ["Federated"], ["A"], "AUC", "AUC"),
])
def test_plots_render_inline_png(uri: str) -> None:
    _decode(uri)


def test_site_forest_plot_draws_the_random_effects_summary() -> None:
    values = [0.68, 0.72, 0.61]
    summary = random_effects_meta_analysis(values, [0.03, 0.04, 0.05])
    uri = plots.site_forest_plot(["A", "B", "C"], [_estimate(v) for v in values], summary, "AUC by site", "AUC")
    pixels = np.asarray(_decode(uri).convert("RGB"))
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 40) & (pixels[..., 2] < 40)
    assert red.sum() > 50  # the summary diamond
