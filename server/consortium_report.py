"""The consortium report: how the federated model does at every site, how much sites differ, what privacy cost.

Built only from what sites share (aggregate figures already suppressed under the minimum cell size, and their
privacy budgets); sites' figures are pooled with a DerSimonian–Laird random-effects model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, model_validator

from shared import plots
from shared.atomic import write_atomically
from shared.html_report import PrivacySpent, RunInfo, render
from shared.messages import SHAP_OUTPUT_UNITS
from shared.metrics import SITE_FIGURES, Estimate, MetaAnalysis, pool_site_estimates
from shared.site_config import distinct_site_ids


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
    trained_on: list[str] = Field(default_factory=list, description="sites whose updates entered this model")
    rounds: int | None = None
    in_distribution: dict[str, Estimate] = Field(default_factory=dict, description="the same model at the sites "
                                                 "that trained it (mean of their figures), for contrast")

    @model_validator(mode="after")
    def _figures_known(self) -> LeaveOneSiteOut:
        _known_figures(self.figures, f"leave-one-site-out {self.held_out_site}")
        return self


class SubgroupSummary(BaseModel):
    """One subgroup figure at every site that shared it (sites suppress subgroups under the minimum cell size)."""

    group: str = Field(description="slug as sent by the sites, e.g. age, race-ethnicity")
    level: str = Field(description="slug, e.g. ge70, black")
    figure: str
    sites: dict[str, Estimate]

    @model_validator(mode="after")
    def _figure_known(self) -> SubgroupSummary:
        _known_figures({self.figure: Estimate(value=None)}, f"subgroup {self.group}:{self.level}")
        return self


class ReferenceRow(BaseModel):
    """A reference model's figures at each site (local-only, pooled centralised, oracle), beside the federated."""

    label: str
    description: str
    sites: dict[str, dict[str, Estimate]] = Field(description="site → keys of SITE_FIGURES")

    @model_validator(mode="after")
    def _figures_known(self) -> ReferenceRow:
        for site, figures in self.sites.items():
            _known_figures(figures, f"reference {self.label} at {site}")
        return self


class GlobalImportance(BaseModel):
    """Mean |SHAP| per field pooled over sites, weighted by the patients each site explained."""

    patients: dict[str, int]
    importance: dict[str, dict[str, float]] = Field(description="output → contract field → pooled mean |SHAP|")


class SiteAbsence(BaseModel):
    """A site that sat out an exchange, and the reason it gave (or the coordinator saw)."""

    exchange: str
    site_id: str
    reason: str


class BudgetSplit(BaseModel):
    """How the consortium split each site's ε between the model it deploys and the validation phases."""

    dp: bool = True
    target_epsilon: float
    validation_epsilon_share: float = Field(ge=0, lt=1)
    validation_epsilon: float
    federated_epsilon: dict[str, float] = Field(default_factory=dict, description="each site's federated-model "
                                                "budget: the rest of its ε under RDP composition")
    federated_rounds: int
    validation_rounds: int


class ConsortiumSummary(BaseModel):
    """Everything the consortium report shows; filled by the server's federated validation."""

    consortium_name: str = "OncoFed consortium"
    run: RunInfo
    confidence: float = Field(default=0.95, gt=0, lt=1, description="level of every interval, pooled ones too")
    sites: Annotated[list[SiteSummary], AfterValidator(distinct_site_ids)]
    cross_site: list[CrossSiteMatrix] = Field(default_factory=list)
    leave_one_site_out: list[LeaveOneSiteOut] = Field(default_factory=list)
    subgroups: list[SubgroupSummary] = Field(default_factory=list)
    references: list[ReferenceRow] = Field(default_factory=list)
    importance: GlobalImportance | None = None
    absences: list[SiteAbsence] = Field(default_factory=list)
    planned_training_rounds: int | None = Field(default=None, description="training rounds per site, all phases: "
                                                "what each site's DP noise was calibrated to")
    budget_split: BudgetSplit | None = Field(default=None, description="each site's ε: the federated model's and "
                                             "the validation phases' shares")


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


class PooledSubgroup(BaseModel):
    subgroup: SubgroupSummary
    label: str
    sites_reporting: int
    summary: MetaAnalysis | None


def pool_subgroups(summary: ConsortiumSummary) -> list[PooledSubgroup]:
    """Random-effects summary of each subgroup figure over the sites that shared it."""
    pooled = []
    for item in summary.subgroups:
        estimates = list(item.sites.values())
        pooled.append(PooledSubgroup(subgroup=item, label=f"{item.group}: {item.level}",
                                     sites_reporting=sum(e.available for e in estimates),
                                     summary=pool_site_estimates(estimates, SITE_FIGURES[item.figure].scale,
                                                                 summary.confidence)))
    return pooled


def _subgroup_rows(pooled: list[PooledSubgroup], figure: str) -> list[tuple[str, Estimate]]:
    """Forest-plot rows: the pooled estimate, or the single site's where only one site shared it."""
    rows = []
    for item in pooled:
        if item.subgroup.figure != figure:
            continue
        if item.summary is not None:
            counts = [e.n for e in item.subgroup.sites.values() if e.available and e.n is not None]
            rows.append((f"{item.label} ({item.sites_reporting} sites)",
                         Estimate(value=item.summary.pooled, lower=item.summary.lower, upper=item.summary.upper,
                                  n=sum(counts) if counts else None)))
        elif item.sites_reporting == 1:
            (site, estimate), = [(s, e) for s, e in item.subgroup.sites.items() if e.available]
            rows.append((f"{item.label} ({site} only)", estimate))
    return rows


def _figures(summary: ConsortiumSummary, pooled: list[PooledFigure], subgroups: list[PooledSubgroup]
             ) -> dict[str, str]:
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
    for key in dict.fromkeys(item.subgroup.figure for item in subgroups):
        spec = SITE_FIGURES[key]
        figures[f"subgroups_{key}"] = plots.forest_plot(_subgroup_rows(subgroups, key),
                                                        title=f"{spec.label} by subgroup, pooled over sites",
                                                        xlabel=spec.label, reference=spec.reference)
    if summary.importance is not None:
        figures["importance"] = plots.shap_outputs_plot(summary.importance.importance, SHAP_OUTPUT_UNITS,
                                                        title="Global feature importance (pooled mean |SHAP|)")
    return figures


def write_consortium_report(out_path: str | Path, consortium_summary: ConsortiumSummary) -> Path:
    """Render the consortium report as one self-contained HTML file, written atomically; returns its path."""
    pooled = pool_figures(consortium_summary.sites, consortium_summary.confidence)
    external = pool_figures(consortium_summary.leave_one_site_out, consortium_summary.confidence)
    loso_keys = [k for k in SITE_FIGURES if any(k in row.figures for row in consortium_summary.leave_one_site_out)]
    subgroups = pool_subgroups(consortium_summary)
    html = render("consortium_report.html.j2", summary=consortium_summary, pooled=pooled, external=external,
                  loso_keys=loso_keys, figure_specs=SITE_FIGURES, subgroups=subgroups,
                  subgroup_keys=list(dict.fromkeys(item.subgroup.figure for item in subgroups)),
                  reference_keys=[k for k in SITE_FIGURES if any(k in f for r in consortium_summary.references
                                                                  for f in r.sites.values())],
                  figures=_figures(consortium_summary, pooled, subgroups))
    return write_atomically(out_path, html)
