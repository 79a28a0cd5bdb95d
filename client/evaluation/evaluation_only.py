"""A site's side of an evaluation-only run: a registered model evaluated on the site's own patients, no training.

Which patients: a site that trained the model (it is named in the instruction's `trained-on`) reports on its
held-out test split only, since its training and validation patients shaped the model; that is the internal
figure. Any other site is external: none of its patients touched the model, so it reports on all of them, as an
external validation does (TRIPOD's external validation uses the whole new cohort: more patients, narrower
intervals, and no split of a population the model never saw). The baselines in the site report are still fitted
on the site's training split, so at an external site they are partly scored on their own fitting patients: an
optimistic baseline, hence a conservative comparison for the model. No ε is spent on the weights (they are not
trained); with release-epsilon-share > 0 the figures that leave carry Gaussian noise charged to the site's ledger.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Message

from client.data.site import Site
from client.flower import outbox
from shared.encoding import SurvivalGrid, encode_cohort
from shared.messages import MODEL_ARRAYS_KEY, read_evaluation, read_instructions
from shared.model import model_for
from shared.release_privacy import EXTERNAL_FIGURES_RELEASE, releases_under_dp

def evaluate_registered_model(message: Message, site: Site, run_id: str) -> Message:
    """The site's figures on the registered model (with intervals) and its site report; a refusal if too few."""
    from client.evaluation.cohort import evaluate_cohort
    from client.evaluation.report import report_at_site
    from client.evaluation.validation import headline_intervals
    from shared.metrics import EvaluationSettings

    plan, stats, _ = read_instructions(message.content)
    trained_on, model_label, completed_round = read_evaluation(message.content)
    internal = site.site_id in trained_on
    patients = site.part("test") if internal else site.patients.reset_index(drop=True)
    if len(patients) < site.min_cell_size:
        return outbox.refusal(message, outbox.ERROR_DATA, f"site {site.site_id}: fewer patients to evaluate than "
                              f"the minimum cell size; nothing can be reported")
    grid = SurvivalGrid.from_config(plan)
    model = model_for(plan)
    model.load_state_dict(message.content[MODEL_ARRAYS_KEY].to_torch_state_dict())
    figures = evaluate_cohort(model, patients, encode_cohort(patients, stats, grid), grid, site.min_cell_size,
                              split="test")
    settings = EvaluationSettings.from_config(plan, site.min_cell_size)
    figures |= headline_intervals(model, patients, stats, grid, settings, np.random.default_rng(plan.seed))
    if plan.site_reports:
        scope = "its test split (a training site)" if internal else "all its patients (external)"
        figures |= report_at_site(site, model, stats, grid, plan, run_id, completed_round, evaluated=patients,
                                  model_label=f"{model_label}, evaluated on {scope}")
    if releases_under_dp(plan):  # the figures leave with Gaussian noise, charged to the site's ledger
        from client.governance.release_privacy import charge_release, noisy_test_figures
        from client.training.privacy import PrivacyBudgetExceeded

        try:
            sigma = charge_release(site, plan, run_id, EXTERNAL_FIGURES_RELEASE)
        except PrivacyBudgetExceeded as refused:
            return outbox.refusal(message, outbox.ERROR_BUDGET_EXHAUSTED, f"site {site.site_id}: {refused}")
        figures = noisy_test_figures(figures, patients, site.min_cell_size, sigma)
    return outbox.reply(message, site_id=site.site_id, metrics=figures, min_cell_size=site.min_cell_size)
