"""The site's report on one model, written on the site's disk: explanations, every figure against the clinic's
baselines, the HTML page and its JSON; only the figures that may leave the site are returned.

Imported on first use (a report is the heaviest part of a message: SHAP, matplotlib, the templates).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from client.data.site import Site
from client.governance.audit import AUDIT_FILE, summarise
from client.training.privacy import load_ledger
from shared.config import RunConfig
from shared.encoding import SurvivalGrid, encode_cohort
from shared.harmonisation import NormalisationStats
from shared.html_report import PrivacySpent
from shared.messages import FIGURE_ESTIMATES
from shared.model import OncoFedNet, predict


def _privacy_spent(site: Site, plan: RunConfig) -> PrivacySpent:
    """What the site's ledger says it has spent; ε is None when the site kept no ledger (no DP)."""
    if not site.ledger_path.exists():
        return PrivacySpent(epsilon=None)
    ledger = load_ledger(site.ledger_path, site.delta())
    last = ledger.entries[-1] if ledger.entries else None
    return PrivacySpent(epsilon=ledger.epsilon(), delta=ledger.delta, accountant="rdp",
                        noise_multiplier=last.noise_multiplier if last else None, max_grad_norm=plan.max_grad_norm,
                        budget_epsilon=site.target_epsilon, rounds=ledger.spending())


def report_at_site(site: Site, model: OncoFedNet, stats: NormalisationStats, grid: SurvivalGrid, plan: RunConfig,
                   run_id: str, server_round: int, evaluated: pd.DataFrame | None = None,
                   model_label: str | None = None, personalised: OncoFedNet | None = None) -> dict[str, float]:
    """Write the site's report (per-patient curves stay on the site's disk); return its shareable intervals.

    Only figures that are not suppressed are returned: the headline figures and each subgroup's (value/lower/
    upper, and the subgroup's size), and the mean |SHAP| per field when enough test patients were explained.
    `evaluated`: the patients to report on (default the test split; an external site's evaluation-only run
    passes all its patients); the baselines are fitted on the training split either way. `personalised`: the
    site's own refit of the model (client/training/personalise.py), shown beside it in the report only.
    """
    from client.evaluation.site_report import evaluate_site, write_site_report
    from client.evaluation.validation import (
        explain_test_patients,
        shap_importances,
        shap_metrics,
        subgroup_metrics,
        with_interval,
    )
    from shared.atomic import write_atomically
    from shared.html_report import RunInfo
    from shared.metrics import EvaluationSettings, OutcomePredictions, site_figures

    train, test = site.part("train"), site.part("test") if evaluated is None else evaluated
    inputs = encode_cohort(test, stats, grid).inputs()

    def outcome_predictions(net: OncoFedNet) -> OutcomePredictions:
        raw = predict(net, inputs)
        return OutcomePredictions(response_prob=raw.response_prob, pfs_survival=raw.pfs_survival,
                                  os_survival=raw.os_survival, time_grid_days=grid.time_grid_days)

    predictions = outcome_predictions(model)
    personal = None if personalised is None else outcome_predictions(personalised)
    run = RunInfo(run_id=run_id, model_checkpoint=model_label or f"global model after round {server_round}",
                  rounds_completed=server_round)
    settings = EvaluationSettings.from_config(plan, site.min_cell_size)
    explanation = explain_test_patients(model, train, test, stats, grid, plan.shap_patients, plan.shap_samples,
                                        plan.seed)
    evaluation = evaluate_site(site.site_id, train, test, predictions, shap_importances=shap_importances(explanation),
                               privacy=_privacy_spent(site, plan), run=run,
                               rng=np.random.default_rng(plan.seed), settings=settings,
                               shap_patients=0 if explanation is None else len(explanation.values),
                               audit=summarise(site.state_dir / AUDIT_FILE)
                               if (site.state_dir / AUDIT_FILE).is_file() else None, personalised=personal)
    write_site_report(site.state_dir / "report.html", evaluation)
    # the same figures as data, for the tumour board's subgroup column (client/tumour_board/board.py)
    write_atomically(site.state_dir / "report.json", evaluation.model_dump_json(indent=1))
    headline = site_figures(evaluation.model)
    shared: dict[str, float] = {}
    for key, name in FIGURE_ESTIMATES.items():
        if (estimate := headline.get(name)) is not None:
            shared |= with_interval(key, estimate)
    return shared | subgroup_metrics(evaluation.subgroups, site.min_cell_size) | shap_metrics(explanation,
                                                                                              site.min_cell_size)
