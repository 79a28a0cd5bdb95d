"""The consortium report of an evaluation-only run: the registered model at its training sites and elsewhere.

Internal figures (training sites, their test splits) and external ones (sites that never saw the model, all
their patients) are shown site by site and pooled separately (DerSimonian–Laird, as the federation's report),
so the drop from internal to external performance is read off one table and one forest plot per figure.
"""

from __future__ import annotations

from pathlib import Path

from server.consortium_summary import estimates
from shared import plots
from shared.atomic import write_atomically
from shared.html_report import render
from shared.messages import COUNT_KEY, FIGURE_ESTIMATES
from shared.metrics import SITE_FIGURES, Estimate, MetaAnalysis, pool_site_estimates

GROUPS = ("internal", "external")


def _site_estimates(figures: dict[str, dict[str, float]]) -> dict[str, dict[str, Estimate]]:
    result = {}
    for site, shared in sorted(figures.items()):
        n = int(shared[COUNT_KEY]) if shared.get(COUNT_KEY) else None
        result[site] = {name: estimate.model_copy(update={"n": n}) for name, estimate in estimates(shared).items()}
    return result


def evaluation_summary(results: dict) -> dict:
    """Per figure: each site's estimate by group, and each group's random-effects summary (None below 2 sites)."""
    by_group = {group: _site_estimates(results[group]) for group in GROUPS}
    figures = []
    for name in FIGURE_ESTIMATES.values():
        spec = SITE_FIGURES[name]
        rows = {group: [(site, f[name]) for site, f in by_group[group].items() if name in f] for group in GROUPS}
        pooled: dict[str, MetaAnalysis | None] = {
            group: pool_site_estimates([e for _, e in rows[group]], spec.scale) for group in GROUPS}
        figures.append({"name": name, "label": spec.label, "rows": rows, "pooled": pooled})
    return {"figures": figures, "sites": by_group}


def write_evaluation_report(out_path: Path, results: dict) -> Path:
    summary = evaluation_summary(results)
    plots_by_figure = {}
    for figure in summary["figures"]:
        rows = [(f"{site} (internal)", e) for site, e in figure["rows"]["internal"]]
        rows += [(f"{site} (external)", e) for site, e in figure["rows"]["external"]]
        plots_by_figure[figure["name"]] = plots.forest_plot(
            rows, title=f"{figure['label']}: training sites vs external sites", xlabel=figure["label"],
            reference=SITE_FIGURES[figure["name"]].reference, summary=figure["pooled"]["external"],
            summary_label="External sites, random-effects summary")
    html = render("evaluation_report.html.j2", results=results, summary=summary, plots=plots_by_figure,
                  count_key=COUNT_KEY)
    return write_atomically(out_path, html)
