"""The propensity model and its weights: valid probabilities over the right regimens, bounded weights, and a
weighted loss whose per-patient gradients still depend on one patient only (what DP-SGD's clipping needs)."""

from __future__ import annotations

import pytest
import torch
from opacus import GradSampleModule

from shared.config import ConfigError, RunConfig
from shared.encoding import encode_cohort
from shared.harmonisation import pool_summaries, summarise_site
from shared.losses import batch_loss
from shared.propensity import build_propensity_model, inverse_probability_weights, propensity_losses
from shared.vocabulary import REGIMEN_CODES, CancerType, regimens_for
from tests.factories import GRID, patient_table, tiny_model


def cohort_and_frame(n: int, seed: int):
    frame = patient_table(n, seed)
    return encode_cohort(frame, pool_summaries([summarise_site(frame, min_cell_size=1)]), GRID), frame


def test_probabilities_cover_the_cancer_types_regimens_only():
    cohort, frame = cohort_and_frame(80, seed=1)
    probabilities = build_propensity_model(0)(*cohort.inputs()[:5]).exp()
    assert torch.allclose(probabilities.sum(dim=1), torch.ones(len(frame)), atol=1e-6)
    for row, cancer in enumerate(frame["cancer_type"]):
        candidates = {r.code for r in regimens_for(CancerType(cancer))}
        for column, code in enumerate(REGIMEN_CODES):
            assert (probabilities[row, column] > 0) == (code in candidates), (cancer, code)


def test_weights_are_bounded_and_each_depends_on_its_own_patient_only():
    cohort, frame = cohort_and_frame(60, seed=2)
    model = build_propensity_model(0)
    with torch.no_grad():  # a model that makes the given regimens very unlikely: raw weights far above the bound
        for head in model.heads:
            head.weight.mul_(40.0)
    inputs = cohort.inputs()
    weights = inverse_probability_weights(model, inputs, bound=4.0)
    assert weights.max() == pytest.approx(4.0) and (weights > 0).all()
    some = torch.tensor([7, 3, 41])
    alone = inverse_probability_weights(model, tuple(t[some] for t in inputs), bound=4.0)
    assert torch.equal(alone, weights[some])
    # an untrained model (near-uniform) gives weights near 1: (1/k) / (1/k)
    near_uniform = inverse_probability_weights(build_propensity_model(0), inputs, bound=4.0)
    assert 0.2 < float(near_uniform.mean()) < 5.0


def per_sample_gradients(model, cohort, rows, weights):
    wrapped = GradSampleModule(model, loss_reduction="mean")
    tensors = [t[rows] for t in cohort.tensors()]
    wrapped.zero_grad()
    batch_loss(wrapped(*tensors[:6]), tensors[6:], None if weights is None else weights[rows]).backward()
    grads = {n: p.grad_sample.detach().clone() for n, p in wrapped.named_parameters()}
    wrapped._close()
    return grads


def test_a_patients_weighted_gradient_is_the_same_alone_or_in_any_batch():
    cohort, _ = cohort_and_frame(40, seed=3)
    weights = torch.linspace(0.5, 6.0, len(cohort))
    model = tiny_model()
    in_one = per_sample_gradients(model, cohort, torch.tensor([0, 1, 2, 3, 4]), weights)
    in_other = per_sample_gradients(model, cohort, torch.tensor([17, 0, 30, 22, 9, 11, 35]), weights)
    alone = per_sample_gradients(model, cohort, torch.tensor([0]), weights)
    unweighted = per_sample_gradients(model, cohort, torch.tensor([0]), None)
    for name in in_one:
        assert torch.allclose(in_one[name][0], in_other[name][1], atol=1e-5), name
        assert torch.allclose(in_one[name][0], alone[name][0], atol=1e-5), name
        assert torch.allclose(alone[name][0], weights[0] * unweighted[name][0], atol=1e-5), name


def test_the_propensity_models_per_patient_gradients_do_not_mix_patients():
    cohort, _ = cohort_and_frame(30, seed=4)
    wrapped = GradSampleModule(build_propensity_model(0), loss_reduction="sum")
    inputs = cohort.inputs()

    def gradients(rows):
        wrapped.zero_grad()
        propensity_losses(wrapped(*[t[rows] for t in inputs[:5]]), inputs[5][rows]).sum().backward()
        return {n: p.grad_sample.detach().clone() for n, p in wrapped.named_parameters()}

    first, second = gradients(torch.tensor([2, 5, 9])), gradients(torch.tensor([11, 2]))
    for name in first:
        assert torch.allclose(first[name][0], second[name][1], atol=1e-6), name
    wrapped._close()


def test_propensity_weighting_is_refused_with_secure_aggregation():
    with pytest.raises(ConfigError, match="propensity-weighting needs secure-aggregation=false"):
        RunConfig.from_mapping({"propensity-weighting": True, "secure-aggregation": True, "update-norm-ratio": 0})
