"""Figures for the site and consortium reports, returned as inline PNG data URIs (no files, no external assets).

matplotlib's object API (Figure + Agg canvas) rather than pyplot, so no global figure state is kept between
calls. Inputs are the result models of `shared.metrics`; a suppressed figure is drawn as a labelled gap.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib import colormaps
from matplotlib.figure import Figure

from shared.html_report import PrivacyRound
from shared.metrics import CalibrationCurve, Curve, DecisionCurve, Estimate, KaplanMeierByRisk, MetaAnalysis

MODEL_COLOUR = "#1f4e79"
COLOURS = ("#1f4e79", "#c55a11", "#548235", "#7f6000", "#7030a0", "#2e75b6", "#a5a5a5")
RISK_COLOURS = ("#548235", "#bf9000", "#c00000")


def _new_figure(width: float = 6.4, height: float = 4.4) -> Figure:
    figure = Figure(figsize=(width, height), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def figure_to_data_uri(figure: Figure) -> str:
    """PNG bytes of a figure as a data: URI for an <img src>."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _empty(axes, message: str) -> None:  # noqa: ANN001 - matplotlib Axes
    axes.text(0.5, 0.5, message, ha="center", va="center", transform=axes.transAxes, color="#595959")
    axes.set_xticks([])
    axes.set_yticks([])


CurveT = TypeVar("CurveT")


def _draw_each(curves: dict[str, CurveT | None], draw: Callable[[str, CurveT, str, bool], object]) -> int:
    """Call `draw(label, curve, colour, first)` for every curve not suppressed (None), in the palette's order
    (the first is the model's, drawn heavier); returns how many were drawn."""
    drawn = 0
    for index, (label, curve) in enumerate(curves.items()):
        if curve is not None:
            draw(label, curve, COLOURS[index % len(COLOURS)], index == 0)
            drawn += 1
    return drawn


def _against_the_diagonal(curves: dict[str, CurveT | None], draw: Callable[[object, str, CurveT, str, bool], object],
                          diagonal: str, xlabel: str, ylabel: str, ylim: tuple[float, float], title: str,
                          legend: str) -> str:
    """Curves in the unit square against its diagonal (no discrimination, perfect calibration), a labelled gap
    when every curve is suppressed. `draw(axes, label, curve, colour, first)` draws one curve."""
    figure = _new_figure(5.6, 4.8)
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="#a5a5a5", linestyle=":", linewidth=1, label=diagonal)
    if _draw_each(curves, lambda *curve: draw(axes, *curve)) == 0:
        _empty(axes, "Suppressed: too few patients or responders")
    axes.set(xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=ylim, title=title)
    axes.legend(loc=legend, fontsize=8)
    return figure_to_data_uri(figure)


def roc_plot(curves: dict[str, Curve | None], title: str = "Response: ROC curve") -> str:
    """ROC curves of the model and the baselines on the same patients; AUC in the legend label if given."""
    return _against_the_diagonal(
        curves, lambda axes, label, curve, colour, first: axes.step(
            curve.x, curve.y, where="post", color=colour, linewidth=2.2 if first else 1.3, label=label),
        "No discrimination", "1 − specificity (false-positive rate)", "Sensitivity (true-positive rate)",
        (0, 1.01), title, "lower right")


def calibration_plot(curves: dict[str, CalibrationCurve | None],
                     title: str = "Response: calibration") -> str:
    """Observed response rate against mean predicted probability per bin; the diagonal is perfect calibration."""
    return _against_the_diagonal(
        curves, lambda axes, label, curve, colour, first: axes.plot(
            curve.predicted, curve.observed, marker="o", color=colour, linewidth=2 if first else 1.2,
            label=f"{label} ({curve.bins} bins)"),
        "Perfect calibration", "Predicted probability of response", "Observed response rate", (0, 1), title,
        "upper left")


def decision_curve_plot(curves: dict[str, DecisionCurve | None],
                        title: str = "Response: decision curve") -> str:
    """Net benefit of acting on each prediction across threshold probabilities, against treat-all and treat-none."""
    figure = _new_figure(6.4, 4.6)
    axes = figure.add_subplot()
    shown = [c for c in curves.values() if c is not None]
    if not shown:
        _empty(axes, "Suppressed: too few patients or responders")
        return figure_to_data_uri(figure)
    reference = shown[0]
    axes.plot(reference.thresholds, reference.treat_all, color="#7f7f7f", linewidth=1, label="Treat all")
    axes.axhline(0, color="#262626", linewidth=1, label="Treat none")
    _draw_each(curves, lambda label, curve, colour, first: axes.plot(
        curve.thresholds, curve.net_benefit, color=colour, linewidth=2.2 if first else 1.2, label=label))
    top = max(max(max(c.net_benefit) for c in shown), max(reference.treat_all))
    axes.set(xlabel="Threshold probability of response", ylabel="Net benefit", title=title,
             ylim=(-0.05, top + 0.05), xlim=(min(reference.thresholds), max(reference.thresholds)))
    axes.legend(fontsize=8)
    return figure_to_data_uri(figure)


def kaplan_meier_plot(km: KaplanMeierByRisk | None, title: str) -> str:
    """Observed survival (Kaplan–Meier, 95% band) in tertiles of predicted risk; separation = useful ranking."""
    figure = _new_figure(6.4, 4.6)
    axes = figure.add_subplot()
    if km is None or not any(g.curve for g in km.groups):
        _empty(axes, "Suppressed: too few patients or events")
        axes.set_title(title)
        return figure_to_data_uri(figure)
    for group, colour in zip(km.groups, RISK_COLOURS, strict=False):
        if group.curve is None:
            axes.plot([], [], color=colour, label=f"{group.label}: suppressed")
            continue
        axes.step(group.curve.x, group.curve.y, where="post", color=colour, linewidth=2,
                  label=f"{group.label} (n={group.n}, events={group.events})")
        if group.lower and group.upper:
            axes.fill_between(group.curve.x, group.lower, group.upper, step="post", color=colour, alpha=0.15)
    subtitle = f"log-rank p = {km.logrank_p:.2g}" if km.logrank_p is not None else (km.note or "")
    axes.set(xlabel="Days since start of regimen", ylabel="Proportion event-free", ylim=(0, 1.02),
             title=f"{title}\n{subtitle}")
    axes.legend(fontsize=8, loc="upper right")
    return figure_to_data_uri(figure)


def forest_plot(rows: Sequence[tuple[str, Estimate]], title: str, xlabel: str, reference: float | None = 0.5,
                summary: MetaAnalysis | None = None, summary_label: str = "Random-effects summary") -> str:
    """Point and interval per row (subgroup or site), suppressed rows named as such, optional pooled diamond."""
    count = len(rows) + (2 if summary else 0)
    figure = _new_figure(6.8, max(2.2, 0.32 * count + 1.2))
    axes = figure.add_subplot()
    labels: list[str] = []
    for position, (label, estimate) in enumerate(rows):
        y = count - 1 - position
        if estimate.available:
            low = estimate.lower if estimate.lower is not None else estimate.value
            high = estimate.upper if estimate.upper is not None else estimate.value
            axes.plot([low, high], [y, y], color=MODEL_COLOUR, linewidth=1.4)
            size = 4 + 6 * min(1.0, (estimate.n or 10) / 300)
            axes.plot(estimate.value, y, marker="s", markersize=size, color=MODEL_COLOUR)
            labels.append(f"{label}  (n={estimate.n})" if estimate.n is not None else label)
        else:
            labels.append(f"{label}  (suppressed)" if estimate.suppressed else f"{label}  (not available)")
    if summary:
        y = 0
        axes.fill([summary.lower, summary.pooled, summary.upper, summary.pooled], [y, y + 0.3, y, y - 0.3],
                  color="#c00000")
        axes.axvline(summary.pooled, color="#c00000", linewidth=0.8, linestyle="--")
        labels += ["", f"{summary_label}  (I² = {summary.i2_percent:.0f}%)"]
    if reference is not None:
        axes.axvline(reference, color="#7f7f7f", linewidth=0.8, linestyle=":")
    axes.set_yticks(range(count - 1, -1, -1), labels, fontsize=8)
    axes.set_ylim(-0.8, count - 0.2)
    axes.set(xlabel=xlabel, title=title)
    return figure_to_data_uri(figure)


def shap_importance_plot(importances: dict[str, float], top: int = 20,
                         title: str = "What drives the predictions (mean |SHAP|)") -> str:
    """Bar chart of mean absolute SHAP value per feature, largest first, capped at `top` features."""
    ranked = sorted(importances.items(), key=lambda item: item[1], reverse=True)[:top]
    figure = _new_figure(6.4, max(2.4, 0.28 * len(ranked) + 1.0))
    axes = figure.add_subplot()
    if not ranked:
        _empty(axes, "No explanations supplied")
        axes.set_title(title)
        return figure_to_data_uri(figure)
    names = [name for name, _ in ranked][::-1]
    values = [value for _, value in ranked][::-1]
    axes.barh(names, values, color=MODEL_COLOUR)
    axes.tick_params(axis="y", labelsize=8)
    axes.set(xlabel="Mean |SHAP value| (average impact on the prediction)", title=title)
    return figure_to_data_uri(figure)


def shap_outputs_plot(importances: dict[str, dict[str, float]], units: dict[str, str], top: int = 12,
                      title: str = "What drives the predictions (mean |SHAP|)") -> str:
    """One bar chart per output (response, PFS, OS), side by side: each output has its own unit."""
    outputs = list(importances) or ["(none)"]
    figure = _new_figure(4.2 * len(outputs), max(3.0, 0.3 * top + 1.2))
    for index, output in enumerate(outputs):
        axes = figure.add_subplot(1, len(outputs), index + 1)
        ranked = sorted(importances.get(output, {}).items(), key=lambda item: item[1], reverse=True)[:top]
        if not ranked:
            _empty(axes, "No explanations computed")
            continue
        axes.barh([n for n, _ in ranked][::-1], [v for _, v in ranked][::-1], color=COLOURS[index % len(COLOURS)])
        axes.tick_params(axis="y", labelsize=8)
        axes.set(title=output.upper() if output in ("pfs", "os") else output.capitalize(),
                 xlabel=f"mean |SHAP| ({units.get(output, 'model output')})")
    figure.suptitle(title)
    return figure_to_data_uri(figure)


def heatmap_plot(values: Sequence[Sequence[float | None]], row_labels: Sequence[str],
                 column_labels: Sequence[str], title: str, value_label: str) -> str:
    """Matrix of a figure (e.g. AUC of the model trained at a row site, evaluated at a column site); gaps 'n/a'."""
    matrix = np.array([[np.nan if v is None else v for v in row] for row in values], dtype=float)
    figure = _new_figure(max(4.8, 0.9 * len(column_labels) + 2.5), max(3.2, 0.6 * len(row_labels) + 1.8))
    axes = figure.add_subplot()
    colour_map = colormaps["Blues"].with_extremes(bad="#ffffff")
    finite = matrix[np.isfinite(matrix)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = axes.imshow(np.ma.masked_invalid(matrix), cmap=colour_map, vmin=low, vmax=max(high, low + 1e-6),
                        aspect="auto")
    for (i, j), value in np.ndenumerate(matrix):
        text = "n/a" if np.isnan(value) else f"{value:.2f}"
        shade = "white" if np.isfinite(value) and value > (low + high) / 2 else "black"
        axes.text(j, i, text, ha="center", va="center", fontsize=9, color=shade)
    axes.set_xticks(range(len(column_labels)), column_labels, rotation=30, ha="right", fontsize=8)
    axes.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    axes.set(xlabel="Evaluated at site", ylabel="Model", title=title)
    figure.colorbar(image, ax=axes, label=value_label, shrink=0.8)
    return figure_to_data_uri(figure)


def site_forest_plot(site_ids: Sequence[str], estimates: Sequence[Estimate], summary: MetaAnalysis | None,
                     title: str, xlabel: str, reference: float | None = 0.5) -> str:
    """Per-site figures with the random-effects summary diamond underneath."""
    return forest_plot(list(zip(site_ids, estimates, strict=True)), title=title, xlabel=xlabel,
                       reference=reference, summary=summary)


def privacy_spending_plot(rounds: Sequence[PrivacyRound], budget_epsilon: float | None,
                          title: str = "Privacy spent: cumulative ε by training round") -> str:
    """Cumulative ε after each round (every run the site took part in) against the site's budget line."""
    figure = _new_figure(6.4, 4.2)
    axes = figure.add_subplot()
    if not rounds:
        _empty(axes, "No differentially private training recorded")
        axes.set_title(title)
        return figure_to_data_uri(figure)
    positions = np.arange(1, len(rounds) + 1)
    axes.plot(positions, [r.epsilon_cumulative for r in rounds], marker="o", color=MODEL_COLOUR, linewidth=2,
              label="cumulative ε")
    axes.bar(positions, [r.epsilon_round for r in rounds], color="#9dc3e6", width=0.5, label="ε of the round alone")
    if budget_epsilon is not None:
        axes.axhline(budget_epsilon, color="#c00000", linestyle="--", linewidth=1.2,
                     label=f"budget ε = {budget_epsilon:g}")
    runs = list(dict.fromkeys(r.run_id for r in rounds))
    labels = [f"{r.server_round}" if len(runs) == 1 else f"{runs.index(r.run_id) + 1}:{r.server_round}" for r in rounds]
    axes.set_xticks(positions, labels, fontsize=8)
    axes.set(xlabel="Round" if len(runs) == 1 else "Run:round (runs in the order the site took part)",
             ylabel="ε", ylim=(0, 1.1 * max([r.epsilon_cumulative for r in rounds] + [budget_epsilon or 0])),
             title=title)
    axes.legend(fontsize=8, loc="upper left")
    return figure_to_data_uri(figure)
