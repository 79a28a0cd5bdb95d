import copy
import itertools

import torch
from opacus import GradSampleModule

from shared.encoding import NUM_INPUTS, input_sizes
from shared.losses import batch_loss
from shared.model import OncoFedNet
from tests.factories import GRID, encoded_cohort, tiny_model


def test_any_subset_of_modalities_can_be_missing():
    cohort = encoded_cohort(12, seed=1)
    model = tiny_model().eval()
    inputs = list(cohort.inputs())
    for absent in itertools.chain.from_iterable(itertools.combinations(range(1, 4), k) for k in range(4)):
        mask = inputs[4].clone()
        mask[:, list(absent)] = 0.0
        response, pfs, os_ = model(*inputs[:4], mask, inputs[5])
        assert response.shape == (12,) and pfs.shape == os_.shape == (12, model.pfs_head.out_features)
        assert all(torch.isfinite(t).all() for t in (response, pfs, os_)), absent


def test_an_absent_modality_has_no_influence_on_the_prediction():
    cohort = encoded_cohort(8, seed=2)
    model = tiny_model().eval()
    clinical, pathology, imaging, genomic, mask, treatment = cohort.inputs()
    mask = mask.clone()
    mask[:, 3] = 0.0  # genomic not measured
    before = model(clinical, pathology, imaging, genomic, mask, treatment)
    after = model(clinical, pathology, imaging, torch.randn_like(genomic) * 5, mask, treatment)
    for a, b in zip(before, after, strict=True):
        assert torch.allclose(a, b)


def test_the_regimen_changes_the_prediction():
    cohort = encoded_cohort(8, seed=4)
    model = tiny_model().eval()
    inputs = list(cohort.inputs())
    other = inputs[5].roll(1, dims=0)
    assert not torch.allclose(model(*inputs)[0], model(*inputs[:5], other)[0])


def _randomised(model: OncoFedNet, seed: int) -> OncoFedNet:
    """Every weight drawn afresh, so no test below passes because of the zero initial columns."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    return model.eval()


def _linear_prediction(model: OncoFedNet, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A logistic / proportional-odds model on the encoded inputs, written out by hand from the weights."""
    clinical, pathology, imaging, genomic, mask, treatment = inputs
    blocks = (clinical, pathology, imaging, genomic)
    x = torch.cat([b * mask[:, i:i + 1] for i, b in enumerate(blocks)] + [mask, treatment], dim=1)
    start = model.deep_features
    linear = lambda layer: x @ layer.weight[0, start:start + x.shape[1]] + layer.bias[0]  # noqa: E731
    baseline = lambda head: head.baseline.weight[:, 0][None, :]  # noqa: E731
    return (linear(model.response_head), baseline(model.pfs_head) + linear(model.pfs_head.effect)[:, None],
            baseline(model.os_head) + linear(model.os_head.effect)[:, None])


def test_zeroing_the_deep_and_interaction_columns_leaves_exactly_a_linear_model():
    cohort = encoded_cohort(16, seed=5)
    model = _randomised(tiny_model(), seed=1)
    inputs = cohort.inputs()
    assert not torch.allclose(model(*inputs)[0], _linear_prediction(model, inputs)[0])  # the deep path counts
    with torch.no_grad():
        for layer in (model.response_head, model.pfs_head.effect, model.os_head.effect):
            layer.weight[:, :model.deep_features].zero_()
            layer.weight[:, layer.in_features - model.interaction_rank:].zero_()
    for got, expected in zip(model(*inputs), _linear_prediction(model, inputs), strict=True):
        torch.testing.assert_close(got, expected)


def test_a_new_model_is_its_linear_model_whatever_its_deep_weights():
    cohort = encoded_cohort(16, seed=6)
    model = tiny_model(seed=3).eval()
    inputs = cohort.inputs()
    for got, expected in zip(model(*inputs), _linear_prediction(model, inputs), strict=True):
        torch.testing.assert_close(got, expected)
    assert model.response_head.weight[0, model.deep_features:-model.interaction_rank].abs().sum() > 0


def test_only_the_interactions_let_the_regimen_effect_differ_between_patients():
    cohort = encoded_cohort(8, seed=7)
    clinical, pathology, imaging, genomic, mask, treatment = cohort.inputs()
    # every patient is scored under the same two regimens, so only the patient can change the contrast
    first, second = treatment[:1].expand(8, -1), treatment[1:2].expand(8, -1)
    assert not torch.equal(first, second)

    def contrast(model: OncoFedNet) -> torch.Tensor:
        return (model(clinical, pathology, imaging, genomic, mask, first)[0]
                - model(clinical, pathology, imaging, genomic, mask, second)[0])

    additive = contrast(_randomised(OncoFedNet(GRID.num_intervals, 16, deep=False, interaction_rank=0), seed=2))
    interacting = contrast(_randomised(OncoFedNet(GRID.num_intervals, 16, deep=False, interaction_rank=2), seed=2))
    torch.testing.assert_close(additive, additive[:1].expand(8))
    assert interacting.std() > 1e-3


def test_opacus_computes_each_patients_gradient_for_every_parameter():
    cohort = encoded_cohort(6, seed=8)
    model = _randomised(tiny_model(), seed=4).train()
    reference = copy.deepcopy(model)
    wrapped = GradSampleModule(model, loss_reduction="mean")  # as client/training.py's make_private
    targets = cohort.tensors()[NUM_INPUTS:]
    batch_loss(wrapped(*cohort.inputs()), targets).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad_sample is not None and parameter.grad_sample.shape[0] == 6, name
    # patient 2's per-sample gradient is the gradient of its own loss alone (Opacus undoes the batch mean)
    one = tuple(t[2:3] for t in cohort.tensors())
    alone = torch.autograd.grad(batch_loss(reference(*one[:NUM_INPUTS]), one[NUM_INPUTS:]),
                                list(reference.parameters()))
    for (name, parameter), gradient in zip(model.named_parameters(), alone, strict=True):
        torch.testing.assert_close(parameter.grad_sample[2], gradient, rtol=1e-4, atol=1e-6, msg=name)


def test_the_network_stays_small_for_dp_sgd():
    """DP noise grows with √parameters: the chosen form (docs/dp_tuning.md) must not grow unnoticed."""
    sizes = input_sizes()
    patient = sum(sizes[m] for m in ("clinical", "pathology", "imaging", "genomic")) + 4
    deep_only = sum(p.numel() for p in OncoFedNet(20, hidden=16, wide=False, interaction_rank=0).parameters())
    chosen = sum(p.numel() for p in OncoFedNet(20, hidden=16).parameters())
    # the wide path and rank-2 interactions add to each of the three outputs one weight per input and per product,
    # and 2 × (patient + treatment) factor weights
    assert chosen - deep_only == 3 * (patient + sizes["treatment"] + 2) + 2 * (patient + sizes["treatment"])
    assert deep_only == 3628 and chosen < 5000
