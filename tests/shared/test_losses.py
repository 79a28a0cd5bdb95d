"""The losses are sums of per-patient terms: what DP-SGD's per-sample clipping requires."""

import torch
from opacus import GradSampleModule

from shared.losses import batch_loss, discrete_hazard_nll, survival_curve
from tests.factories import encoded_cohort, tiny_model


def test_discrete_hazard_likelihood_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0]])  # hazard 1/2 in every interval
    event_in_second = discrete_hazard_nll(logits, torch.tensor([[1.0, 0, 0]]), torch.tensor([[0.0, 1, 0]]))
    censored_after_first = discrete_hazard_nll(logits, torch.tensor([[1.0, 0, 0]]), torch.zeros(1, 3))
    assert torch.allclose(event_in_second, torch.tensor([2 * torch.log(torch.tensor(2.0))]))
    assert torch.allclose(censored_after_first, torch.tensor([torch.log(torch.tensor(2.0))]))
    assert torch.allclose(survival_curve(logits), torch.tensor([[0.5, 0.25, 0.125]]))


def per_sample_gradients(model, cohort, rows):
    wrapped = GradSampleModule(model, loss_reduction="mean")  # grad_sample = each patient's own gradient
    tensors = [t[rows] for t in cohort.tensors()]
    wrapped.zero_grad()
    batch_loss(wrapped(*tensors[:6]), tensors[6:]).backward()
    grads = {n: p.grad_sample.detach().clone() for n, p in wrapped.named_parameters()}
    wrapped._close()
    return grads


def test_a_patients_gradient_does_not_depend_on_who_else_is_in_the_batch():
    cohort = encoded_cohort(40, seed=3)
    model = tiny_model()
    first = per_sample_gradients(model, cohort, torch.tensor([0, 1, 2, 3, 4]))
    second = per_sample_gradients(model, cohort, torch.tensor([17, 0, 30, 22, 9, 11, 35]))
    for name in first:
        assert torch.allclose(first[name][0], second[name][1], atol=1e-5), name
    # and the batch loss is exactly the mean of the patients' own losses
    tensors = cohort.tensors()
    together = batch_loss(model(*tensors[:6]), tensors[6:])
    alone = torch.stack([batch_loss(model(*[t[i:i + 1] for t in tensors[:6]]), [t[i:i + 1] for t in tensors[6:]])
                         for i in range(len(cohort))])
    assert torch.allclose(together, alone.mean(), atol=1e-5)
