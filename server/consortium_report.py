"""The consortium report: how the federated model does at every site, how much sites differ, what privacy cost.

Built only from what sites share (aggregate figures already suppressed under the minimum cell size, and their
privacy budgets); sites' figures are pooled with a DerSimonian–Laird random-effects model.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from shared import plots
from shared.html_report import PrivacySpent, RunInfo, render, write_atomically
from shared.metrics import SITE_FIGURES, Estimate, MetaAnalysis, pool_site_estimates


def _known_figures(figures: dict[str, Estimate], where: str) -> None:
    unknown = sorted(set(figures) - set(SITE_FIGURES))
    if unknown:
        raise ValueError(f"{where}: unknown figure(s) {', '.join(unknown)}; use keys of shared.metrics.SITE_FIGURES "
                         f"({', '.join(SITE_FIGURES)})")


class SiteSummary(BaseModel):
    """What one site shares: its headline figures for the federated model and its privacy budget."""

    site_id: str
    n_patients: int | None = Field(default=None, description="test patients evaluated (None if suppressed)")
    privacy: PrivacySpent
    figures: dict[str, Estimate] = Field(description="keys of SITE_FIGURES, e.g. from shared.metrics.site_figures")

    @model_validator(mode="after")
    def _figures_known(self) -> SiteSummary:
        _known_figures(self.figures, f"site {self.site_id}")
        return self


class CrossSiteMatrix(BaseModel):
    """One figure for each model (row: trained at a site alone, or federated) evaluated at each site (column)."""

    figure: str
    models: list[str]
    sites: list[str]
    values: list[list[Estimate | None]]

    @model_validator(mode="after")
    def _shape(self) -> CrossSiteMatrix:
        _known_figures({self.figure: Estimate(value=None)}, "cross-site matrix")
        if len(self.values) != len(self.models) or any(len(row) != len(self.sites) for row in self.values):
            raise ValueError(f"cross-site matrix for {self.figure}: values must be {len(self.models)} rows (models) "
                             f"× {len(self.sites)} columns (sites)")
        return self


class LeaveOneSiteOut(BaseModel):
    """A model trained without one site, evaluated at that site: external validation."""

    held_out_site: str
    figures: dict[str, Estimate]

    @model_validator(mode="after")
    def _figures_known(self) -> LeaveOneSiteOut:
        _known_figures(self.figures, f"leave-one-site-out {self.held_out_site}")
        return self


class ConsortiumSummary(BaseModel):
    """Everything the consortium report shows; filled by the server's federated validation."""

    consortium_name: str = "OncoFed consortium"
    run: RunInfo
    confidence: float = Field(default=0.95, gt=0, lt=1, description="level of every interval, pooled ones too")
    sites: list[SiteSummary]
    cross_site: list[CrossSiteMatrix] = Field(default_factory=list)
    leave_one_site_out: list[LeaveOneSiteOut] = Field(default_factory=list)

    @model_validator(mode="after")
    def _distinct_sites(self) -> ConsortiumSummary:
        ids = [s.site_id for s in self.sites]
        if len(set(ids)) != len(ids):
            raise ValueError(f"site ids must be distinct; got {ids}")
        return self


class PooledFigure(BaseModel):
    key: str
    label: str
    sites_reporting: int
    summary: MetaAnalysis | None


def pool_figures(sites: list[SiteSummary] | list[LeaveOneSiteOut], confidence: float) -> list[PooledFigure]:
    """Random-effects summary of each figure across the sites that report it."""
    pooled: list[PooledFigure] = []
    for key, spec in SITE_FIGURES.items():
        estimates = [s.figures[key] for s in sites if key in s.figures]
        if not estimates:
            continue
        pooled.append(PooledFigure(key=key, label=spec.label,
                                   sites_reporting=sum(e.available for e in estimates),
                                   summary=pool_site_estimates(estimates, spec.scale, confidence)))
    return pooled


def _figures(summary: ConsortiumSummary, pooled: list[PooledFigure]) -> dict[str, str]:
    figures: dict[str, str] = {}
    for item in pooled:
        spec = SITE_FIGURES[item.key]
        rows = [(s.site_id, s.figures.get(item.key, Estimate(value=None))) for s in summary.sites]
        figures[f"forest_{item.key}"] = plots.site_forest_plot(
            [r[0] for r in rows], [r[1] for r in rows], item.summary, title=f"{spec.label} by site",
            xlabel=spec.label, reference=spec.reference)
    for index, matrix in enumerate(summary.cross_site):
        label = SITE_FIGURES[matrix.figure].label
        values = [[e.value if e is not None and e.available else None for e in row] for row in matrix.values]
        figures[f"heatmap_{index}"] = plots.heatmap_plot(values, matrix.models, matrix.sites,
                                                         title=f"Cross-site {label}", value_label=label)
    return figures


def write_consortium_report(out_path: str | Path, consortium_summary: ConsortiumSummary) -> Path:
    """Render the consortium report as one self-contained HTML file, written atomically; returns its path."""
    pooled = pool_figures(consortium_summary.sites, consortium_summary.confidence)
    external = pool_figures(consortium_summary.leave_one_site_out, consortium_summary.confidence)
    loso_keys = [k for k in SITE_FIGURES if any(k in row.figures for row in consortium_summary.leave_one_site_out)]
    html = render("consortium_report.html.j2", summary=consortium_summary, pooled=pooled, external=external,
                  loso_keys=loso_keys, figure_specs=SITE_FIGURES,
                  figures=_figures(consortium_summary, pooled))
    return write_atomically(out_path, html)
