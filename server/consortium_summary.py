"""From a run's metrics.json to what the consortium report shows: only figures the sites shared.

Built from the saved results alone, so the report can be rewritten later with reference rows that only an
experiment can supply (simulations/references.py: pooled centralised training, the synthetic oracle).
"""

from __future__ import annotations

from pathlib import Path

from server.consortium_report import (
    BudgetSplit,
    ConsortiumSummary,
    CrossSiteMatrix,
    GlobalImportance,
    LeaveOneSiteOut,
    ReferenceRow,
    SiteAbsence,
    SiteSummary,
    SubgroupSummary,
)
from server.validation import GLOBAL_MODEL, pool_shap
from shared.html_report import PrivacyRound, PrivacySpent, RunInfo
from shared.messages import COUNT_KEY, FIGURE_ESTIMATES, SUBGROUP_KEY, interval_keys, subgroup_count_key
from shared.metrics import Estimate
from shared.run_result import RoundRecord, RunResult, ValidationResult

def estimates(figures: dict[str, float]) -> dict[str, Estimate]:
    """Shared headline figures (response-auc, pfs-cindex, os-cindex with -lower/-upper) as SITE_FIGURES Estimates.

    A figure sent without its interval becomes a point estimate (not pooled across sites).
    """
    result = {}
    for key, name in FIGURE_ESTIMATES.items():
        if key in figures:
            lower, upper = interval_keys(key)
            result[name] = Estimate(value=figures[key], lower=figures.get(lower), upper=figures.get(upper))
    return result


def _mean_estimates(sites: list[dict[str, float]]) -> dict[str, Estimate]:
    """Unweighted mean of each headline figure over sites (point value, for an in-distribution contrast)."""
    result = {}
    for key, name in FIGURE_ESTIMATES.items():
        values = [f[key] for f in sites if key in f]
        if values:
            result[name] = Estimate(value=sum(values) / len(values), note=f"mean of {len(values)} sites")
    return result


def last_training_figures(history: list[RoundRecord]) -> dict[str, dict[str, float]]:
    """Each site's figures from the last round it trained in (its ε there is cumulative over the run)."""
    last: dict[str, dict[str, float]] = {}
    for record in history:
        last |= record.train
    return last


def _privacy_rounds(site: str, history: list[RoundRecord], run_dir: Path) -> list[PrivacyRound]:
    """The site's ε per round of this run as it reported them (cumulative, and the round's own)."""
    return [PrivacyRound(run_id=run_dir.name, server_round=record.round,
                         epsilon_round=record.train[site]["epsilon-round"],
                         epsilon_cumulative=record.train[site]["epsilon"])
            for record in history if {"epsilon", "epsilon-round"} <= set(record.train.get(site, {}))]


def subgroup_summaries(test: dict[str, dict[str, float]]) -> list[SubgroupSummary]:
    """Every subgroup figure any site shared, with each site's value and interval."""
    found: dict[tuple[str, str, str], dict[str, Estimate]] = {}
    for site, figures in sorted(test.items()):
        for key, value in figures.items():
            match = SUBGROUP_KEY.match(key)
            if match is None or match.group(3) not in FIGURE_ESTIMATES:
                continue
            group, level, figure = match.groups()
            lower, upper = interval_keys(key)
            found.setdefault((group, level, FIGURE_ESTIMATES[figure]), {})[site] = Estimate(
                value=value, lower=figures.get(lower), upper=figures.get(upper),
                n=int(figures[subgroup_count_key(group, level)]))
    return [SubgroupSummary(group=g, level=lv, figure=f, sites=s) for (g, lv, f), s in found.items()]


def short_reason(reason: str, limit: int = 240) -> str:
    """The gist of why a site sat out: a remote traceback is cut to its final message."""
    reason = reason.rsplit("Message:", 1)[-1].strip() if "Traceback" in reason or "Message:" in reason else reason
    reason = " ".join(reason.split())
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


def _absences(results: RunResult) -> list[SiteAbsence]:
    return [row.model_copy(update={"reason": short_reason(row.reason)}) for row in _all_absences(results)]


def _all_absences(results: RunResult) -> list[SiteAbsence]:
    rows = [SiteAbsence(exchange=f"round {r.round}", site_id=site, reason=reason)
            for r in results.rounds for site, reason in r.missing.items()]
    rows += [SiteAbsence(exchange="final test", site_id=site, reason=reason)
             for site, reason in results.test_missing.items()]
    validation = results.validation
    if validation is None:
        return rows
    if validation.local is not None:
        rows += [SiteAbsence(exchange="local-only model", site_id=site, reason=reason)
                 for site, reason in validation.local.missing.items()]
    for row in validation.leave_one_site_out or []:
        rows += [SiteAbsence(exchange=f"leave-one-site-out without {row.held_out_site}", site_id=site,
                             reason=reason) for site, reason in row.missing.items()]
    return rows


def cross_site_matrices(matrix: dict[str, dict[str, dict[str, float]]], sites: list[str]) -> list[CrossSiteMatrix]:
    """One matrix per headline figure: rows = models (global first), columns = test sites."""
    models = [GLOBAL_MODEL] + sorted(m for m in matrix if m != GLOBAL_MODEL)
    result = []
    for figure in FIGURE_ESTIMATES.values():
        values = [[estimates(matrix[m].get(site, {})).get(figure) for site in sites] for m in models]
        result.append(CrossSiteMatrix(figure=figure, models=models, sites=sites, values=values))
    return result


def _budget_split(results: RunResult) -> BudgetSplit | None:
    """The run's split, with each site's federated-model budget as its training replies stated it."""
    if not results.budget_split:
        return None
    federated = {site: f["epsilon-phase-budget"] for site, f in last_training_figures(results.rounds).items()
                 if "epsilon-phase-budget" in f}
    return BudgetSplit(**results.budget_split, federated_epsilon=federated)


def summary_from_results(results: RunResult, run_dir: Path, references: list[ReferenceRow] | None = None
                         ) -> ConsortiumSummary:
    """The consortium report's content from a run's metrics.json (plus reference rows an experiment adds)."""
    history, test = results.rounds, results.test
    last_train = last_training_figures(history)
    max_grad_norm = results.config.get("max-grad-norm")
    sites = []
    for site, figures in sorted(test.items()):
        spent = last_train.get(site, {})
        validation_spent = results.validation.epsilon.get(site) if results.validation is not None else None
        privacy = PrivacySpent(epsilon=validation_spent if validation_spent is not None else spent.get("epsilon"),
                               delta=spent.get("delta"), accountant="rdp" if "epsilon" in spent else None,
                               noise_multiplier=spent.get("noise-multiplier"),
                               max_grad_norm=max_grad_norm if "epsilon" in spent else None,
                               budget_epsilon=spent.get("epsilon-budget"),
                               rounds=_privacy_rounds(site, history, run_dir))
        count = int(figures.get(COUNT_KEY, 0))
        sites.append(SiteSummary(site_id=site, n_patients=count or None, privacy=privacy,
                                 figures={k: e for k, e in estimates(figures).items()
                                          if e.lower is not None and e.upper is not None}))
    validation = results.validation or ValidationResult(planned_training_rounds=0, budget_split={})
    references = list(references or [])
    local = validation.local.figures if validation.local is not None else {}
    if local:
        references.insert(0, ReferenceRow(
            label="Local only", description="each site's own model, trained on its data alone (same start, rounds, "
                                            "epochs and privacy plan), evaluated on its own test patients",
            sites={site: estimates(figures) for site, figures in local.items()}))
    loso = []
    for row in validation.leave_one_site_out or []:
        loso.append(LeaveOneSiteOut(held_out_site=row.held_out_site, figures=estimates(row.held_out or {}),
                                    trained_on=row.trained_on, rounds=row.rounds,
                                    in_distribution=_mean_estimates(list((row.in_distribution or {}).values()))))
    # every site that evaluated any shared model is a column, also one that missed the final test of the global model
    matrix = validation.cross_site or {}
    matrix_sites = sorted({s for row in matrix.values() for s in row})
    shap = pool_shap(test)
    run = RunInfo(run_id=run_dir.name, model_checkpoint=str(run_dir / "checkpoints" / "latest.pt"),
                  rounds_completed=len(history))
    return ConsortiumSummary(
        run=run, sites=sites, subgroups=subgroup_summaries(test), references=references,
        cross_site=cross_site_matrices(matrix, matrix_sites) if matrix_sites else [],
        leave_one_site_out=loso, absences=_absences(results),
        importance=GlobalImportance(**shap) if shap["patients"] else None,
        planned_training_rounds=results.validation.planned_training_rounds if results.validation else None,
        budget_split=_budget_split(results))

