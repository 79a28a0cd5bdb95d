"""The propensity model's ε goes through the site's ledger, and with the outcome model's share the run fits the
site's budget."""

from __future__ import annotations

from pathlib import Path

import pytest

from client.data.site import Site, assign_splits
from client.training.privacy import PrivacyBudgetExceeded, calibrate_noise, load_ledger, steps_per_round
from client.training.propensity import outcome_epsilon, train_propensity_round
from shared.config import RunConfig
from shared.harmonisation import pool_summaries, summarise_site
from shared.propensity import build_propensity_model
from tests.factories import patient_table


def fresh(model):
    """A new module per round, as each training message builds one (Opacus hooks the module it trains)."""
    copy = build_propensity_model(0)
    copy.load_state_dict(model.state_dict())
    return copy


def make_site(tmp_path: Path, epsilon: float) -> Site:
    patients = patient_table(150, seed=8)
    return Site(site_id="site", patients=patients, split=assign_splits(patients["patient_id"], 0, 0.2, 0.2),
                target_epsilon=epsilon, target_delta=0.0, min_cell_size=5, secure_mode=False, state_dir=tmp_path)


def test_propensity_rounds_spend_their_share_through_the_ledger_and_the_whole_run_fits(tmp_path: Path):
    site = make_site(tmp_path, epsilon=3.0)
    plan = RunConfig.from_mapping({"propensity-weighting": True, "propensity-rounds": 2,
                                   "propensity-epsilon-share": 0.2, "batch-size": 16, "num-rounds": 3,
                                   "survival-interval-days": 180})
    stats = pool_summaries([summarise_site(site.part("train"), min_cell_size=1)])
    model = build_propensity_model(0)
    for server_round in (1, 2):
        model = fresh(model)
        metrics = train_propensity_round(site, plan, stats, model, server_round, "run")
    ledger = load_ledger(site.ledger_path, site.delta())
    assert [e.run_id for e in ledger.entries] == ["run:propensity", "run:propensity"]
    assert metrics["epsilon"] == pytest.approx(0.2 * 3.0, rel=0.02)
    # the outcome model is calibrated to the rest; composed with the propensity rounds the run stays within ε
    assert outcome_epsilon(3.0, plan) == pytest.approx(2.4)
    sample_rate, steps = steps_per_round(len(site.part("train")), plan.batch_size, plan.local_epochs)
    sigma = calibrate_noise(outcome_epsilon(3.0, plan), site.delta(), sample_rate, steps * plan.num_rounds)
    assert ledger.epsilon([(sigma, sample_rate, steps * plan.num_rounds)]) <= 3.0
    # the propensity rounds are their own budget group: the federated and validation shares start untouched
    assert {e.phase for e in ledger.entries} == {"propensity"}
    assert ledger.epsilon(group="federated") == ledger.epsilon(group="validation") == 0.0
    assert ledger.epsilon(group="propensity") == pytest.approx(metrics["epsilon"])


def test_a_propensity_round_past_the_sites_budget_is_refused(tmp_path: Path):
    site = make_site(tmp_path, epsilon=0.5)
    plan = RunConfig.from_mapping({"propensity-weighting": True, "propensity-rounds": 1, "batch-size": 16,
                                   "propensity-epsilon-share": 0.9, "target-epsilon": 0.5})
    stats = pool_summaries([summarise_site(site.part("train"), min_cell_size=1)])
    model = build_propensity_model(0)
    train_propensity_round(site, plan, stats, model, 1, "run")  # the planned round spends 90% of 0.5
    for server_round in range(2, 6):  # rounds beyond the plan keep spending until the site refuses
        try:
            train_propensity_round(site, plan, stats, fresh(model), server_round, "run")
        except PrivacyBudgetExceeded:
            break
    else:
        pytest.fail("the site never refused a propensity round past its budget")
    assert load_ledger(site.ledger_path, site.delta()).epsilon() <= 0.5 * 1.001


def test_without_propensity_weighting_the_outcome_model_gets_the_whole_budget():
    assert outcome_epsilon(3.0, RunConfig()) == 3.0
    assert outcome_epsilon(3.0, RunConfig.from_mapping({"propensity-weighting": True, "dp": False})) == 3.0


def test_the_outcome_round_weights_each_patient_by_the_released_propensity_model(tmp_path: Path, monkeypatch):
    import torch

    import client.flower.app
    import client.training.dp_sgd
    from client.training.dp_sgd import LocalTrainingResult
    from shared.encoding import SurvivalGrid, encode_cohort
    from shared.messages import PhaseInstruction
    from shared.model import build_model
    from shared.propensity import inverse_probability_weights

    site = make_site(tmp_path, epsilon=3.0)
    plan = RunConfig.from_mapping({"dp": False, "propensity-weighting": True, "propensity-weight-bound": 3.0,
                                   "hidden-size": 16, "survival-interval-days": 180})
    stats = pool_summaries([summarise_site(site.part("train"), min_cell_size=1)])
    grid = SurvivalGrid.from_config(plan)
    received = []

    def recording_training(model, cohort, local_plan, privacy, patient_weights=None):
        received.append(patient_weights)
        return LocalTrainingResult(mean_loss=0.0, steps=1, sample_rate=1.0)

    monkeypatch.setattr(client.training.dp_sgd, "train_locally", recording_training)  # app imports it per message
    propensity = build_propensity_model(0)
    with torch.no_grad():
        propensity.heads[0].weight.mul_(30.0)  # far from uniform: some weights reach the bound
    for released in (None, propensity):
        client.flower.app.train_round(site, plan, stats, build_model(grid.num_intervals, 16, 0), 1, "run",
                               PhaseInstruction(), released)
    expected = inverse_probability_weights(propensity, encode_cohort(site.part("train"), stats, grid).inputs(), 3.0)
    assert received[0] is None
    assert torch.equal(received[1], expected) and received[1].max() == 3.0
