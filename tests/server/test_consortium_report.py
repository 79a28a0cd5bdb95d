"""The consortium report: pooled figures, heterogeneity, cross-site matrix, leave-one-site-out, privacy.

Set ONCOFED_SCREENSHOT_DIR to keep the report and a full-page screenshot for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from server.consortium_report import (
    ConsortiumSummary,
    CrossSiteMatrix,
    SiteSummary,
    pool_figures,
    pool_subgroups,
    write_consortium_report,
)
from shared.html_report import PrivacySpent, RunInfo
from shared.metrics import SITE_FIGURES, Estimate
from tests.browser import rendered_report

SITES = ("hospital-north", "hospital-south", "clinic-east", "clinic-west")


def _estimate(value: float, width: float = 0.05) -> Estimate:
    return Estimate(value=value, lower=value - width, upper=value + width, n=180, events=70)


@pytest.fixture(scope="module")
def summary() -> ConsortiumSummary:
    rng = np.random.default_rng(51)
    sites = []
    for index, site_id in enumerate(SITES):
        figures = {key: _estimate(0.68 + 0.03 * rng.normal()) for key in SITE_FIGURES}
        figures["response_brier"] = _estimate(0.2 + 0.01 * rng.normal(), 0.02)
        figures["response_calibration_slope"] = _estimate(1 + 0.1 * rng.normal(), 0.2)
        if index == 3:
            figures["os_uno_c"] = Estimate(value=None, suppressed=True, note="fewer than 10 events")
        sites.append(SiteSummary(site_id=site_id, n_patients=180 + 20 * index,
                                 privacy=PrivacySpent(epsilon=2.0 + index, delta=1e-5, accountant="rdp"),
                                 figures=figures))
    models = [f"Trained at {s} only" for s in SITES] + ["Federated"]
    matrix = [[_estimate(0.6 + 0.1 * rng.random()) if (i, j) != (1, 2) else None for j in range(len(SITES))]
              for i in range(len(models))]
    # the other parts as plain data, validated by ConsortiumSummary as when read back from a run's results
    return ConsortiumSummary.model_validate({
        "run": RunInfo(run_id="run-test", model_checkpoint="round-12", rounds_completed=12), "sites": sites,
        "cross_site": [{"figure": "response_auc", "models": models, "sites": list(SITES), "values": matrix}],
        "leave_one_site_out": [{"held_out_site": s, "figures": {"response_auc": _estimate(0.66 + 0.02 * rng.normal()),
                                                                "os_harrell_c": _estimate(0.65)}} for s in SITES],
        "subgroups": [{"group": "age", "level": "ge70", "figure": "response_auc",
                       "sites": {s: _estimate(0.6 + 0.02 * i) for i, s in enumerate(SITES)}}],
        "references": [{"label": "Oracle", "description": "true risks",
                        "sites": {s: {"response_auc": Estimate(value=0.8)} for s in SITES}}],
        "importance": {"patients": {s: 50 for s in SITES},
                       "importance": {"response": {"ecog": 0.1, "stage_group": 0.05}}},
        "absences": [{"exchange": "round 3", "site_id": "clinic-west", "reason": "no reply"}],
        "planned_training_rounds": 20,
        "budget_split": {"target_epsilon": 3.0, "validation_epsilon_share": 0.2, "validation_epsilon": 0.6,
                         "federated_rounds": 20, "validation_rounds": 30,
                         "federated_epsilon": {"clinic-east": 2.91, "clinic-west": 2.87}}})


def test_pooled_figures_and_heterogeneity(summary: ConsortiumSummary) -> None:
    pooled = {p.key: p for p in pool_figures(summary.sites, summary.confidence)}
    assert set(pooled) == set(SITE_FIGURES)
    assert pooled["os_uno_c"].sites_reporting == 3 and pooled["os_uno_c"].summary.sites == 3
    auc = pooled["response_auc"].summary
    values = [s.figures["response_auc"].value for s in summary.sites]
    assert min(values) <= auc.pooled <= max(values)
    assert 0 <= auc.i2_percent <= 100 and auc.tau2 >= 0


def test_report_content(summary: ConsortiumSummary, report_dir: Path) -> None:
    out = write_consortium_report(report_dir / "consortium_report.html", summary)
    text = out.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)
    for site_id in SITES:
        # overview, leave-one-site-out, privacy, subgroup and reference tables, SHAP patients (and one absence)
        assert text.count(site_id) == 6 + (site_id == "clinic-west")
    assert "Leave-one-site-out" in text and "I²" in text and "5.00" in text  # clinic-west's ε
    # 7 site forest plots + 1 heatmap + 1 subgroup forest plot + global importance
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == len(SITE_FIGURES) + 3
    assert "20 planned training rounds" in text
    # the consortium's split of each site's ε: the validation share and the deployed model's budgets
    assert "validation-epsilon-share 0.20" in text and "2.87–2.91" in text and "Validation phases" in text


def test_subgroups_are_pooled_across_the_sites_that_shared_them(summary: ConsortiumSummary) -> None:
    (pooled,) = pool_subgroups(summary)
    assert pooled.sites_reporting == 4 and pooled.summary.sites == 4
    assert 0.6 <= pooled.summary.pooled <= 0.66


def test_unknown_figures_bad_matrices_and_repeated_sites_are_refused(summary: ConsortiumSummary) -> None:
    with pytest.raises(ValidationError, match="unknown figure"):
        SiteSummary(site_id="x", privacy=PrivacySpent(epsilon=1.0), figures={"accuracy": _estimate(0.7)})
    with pytest.raises(ValidationError, match="duplicated site_id"):
        summary.model_validate(summary.model_dump() | {"sites": summary.sites[:2] + summary.sites[1:2]})
    with pytest.raises(ValidationError, match="rows"):
        CrossSiteMatrix(figure="response_auc", models=["a"], sites=["x", "y"], values=[[None]])


def test_report_renders_in_headless_chromium(summary: ConsortiumSummary, report_dir: Path) -> None:
    out = write_consortium_report(report_dir / "consortium_report.html", summary)
    rendered_report(out, report_dir / "consortium_report.png", images=len(SITE_FIGURES) + 3)
