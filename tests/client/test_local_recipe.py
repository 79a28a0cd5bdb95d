"""The run configuration's network form (`network`, `interaction-rank`) and the sites' optimiser (`local-optimizer`)."""

import dataclasses

import torch

from client.training.dp_sgd import LocalTrainingPlan, train_locally
from shared.config import RunConfig
from shared.encoding import NUM_INPUTS, SurvivalGrid
from shared.losses import batch_loss
from shared.model import build_model, model_for
from tests.factories import encoded_cohort

PLAN = LocalTrainingPlan(local_epochs=1, batch_size=64, learning_rate=0.5, proximal_mu=0.0, modality_dropout=0.0,
                         seed=0, optimizer="sgd")


def test_the_wide_network_is_the_linear_path_and_its_interactions_alone():
    config = RunConfig.from_mapping({"network": "wide", "interaction-rank": 0, "survival-interval-days": 180})
    default = RunConfig.from_mapping({"survival-interval-days": 180})
    wide, chosen = model_for(config), model_for(default)
    assert not wide.deep and wide.interaction_rank == 0 and chosen.deep and chosen.interaction_rank == 2
    assert not any(name.startswith(("encoders", "fusion", "trunk", "film", "regimen.", "interaction"))
                   for name in wide.state_dict())
    assert sum(p.numel() for p in wide.parameters()) < sum(p.numel() for p in chosen.parameters()) / 2
    # the same seed gives the same start at the coordinator and at every site
    for a, b in zip(wide.state_dict().values(), model_for(config).state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    # the default form is the one every earlier run built
    for a, b in zip(chosen.state_dict().values(), build_model(SurvivalGrid.from_config(default).num_intervals, 16, 42).state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b)


def test_local_sgd_takes_plain_gradient_steps():
    """One full-batch step of `local-optimizer = sgd` moves each weight by exactly −learning rate × gradient (Adam's
    first step would move every weight by about the learning rate, whatever its gradient)."""
    config = RunConfig.from_mapping({"network": "wide", "survival-interval-days": 180, "seed": 1})
    cohort = encoded_cohort(64, seed=2)
    model, reference = model_for(config), model_for(config)
    tensors = cohort.tensors()
    gradients = torch.autograd.grad(batch_loss(reference(*tensors[:NUM_INPUTS]), tensors[NUM_INPUTS:]),
                                    list(reference.parameters()))
    train_locally(model, cohort, PLAN, privacy=None)
    for (name, after), before, gradient in zip(model.named_parameters(), reference.parameters(), gradients,
                                               strict=True):
        torch.testing.assert_close(after, before - 0.5 * gradient, rtol=1e-4, atol=1e-6, msg=name)
    adam = model_for(config)
    train_locally(adam, cohort, dataclasses.replace(PLAN, optimizer="adam"), privacy=None)
    assert not torch.allclose(adam.response_head.weight, model.response_head.weight)


def test_the_plan_takes_the_optimiser_from_the_run_configuration():
    config = RunConfig.from_mapping({"local-optimizer": "sgd"})
    assert LocalTrainingPlan.from_config(config, seed=0).optimizer == "sgd"
    assert LocalTrainingPlan.from_config(RunConfig(), seed=0).optimizer == "adam"
