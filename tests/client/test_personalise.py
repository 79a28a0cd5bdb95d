"""Personalisation at the site: the refitted response head is the ridge logistic fit, from training rows only."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from client.training.personalise import fit_head, head_features, personalise_at_site
from shared.encoding import encode_cohort
from shared.harmonisation import pool_summaries, summarise_site
from tests.factories import GRID, patient_table, tiny_model


def _toy(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(200, 3))
    y = (rng.random(200) < 1 / (1 + np.exp(-(1.5 * x[:, 0] - x[:, 1])))).astype(float)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)


def test_without_the_pull_from_a_zero_anchor_the_head_is_the_plain_logistic_fit():
    x, y = _toy()
    # mean log-loss + ridge/2·‖θ‖² is scikit-learn's C = 1 / (n·ridge), which leaves the intercept unpenalised:
    # the ridge is small enough that the intercept's penalty does not matter at this tolerance
    weight, bias = fit_head(x, y, torch.zeros(1, 3), torch.zeros(1), ridge=1e-6)
    reference = LogisticRegression(C=1e6, tol=1e-10, max_iter=10_000).fit(x.numpy(), y.numpy())
    assert weight.numpy()[0] == pytest.approx(reference.coef_[0], abs=2e-3)
    assert bias.item() == pytest.approx(reference.intercept_[0], abs=2e-3)


def test_the_l2_pull_keeps_the_head_near_the_consortium_weights():
    x, y = _toy(1)
    anchor_w, anchor_b = torch.tensor([[0.2, 0.3, -0.5]]), torch.tensor([0.4])
    free_w, _ = fit_head(x, y, anchor_w, anchor_b, ridge=0.0)
    distances = []
    for ridge in (0.01, 0.1, 1.0, 100.0):
        weight, bias = fit_head(x, y, anchor_w, anchor_b, ridge=ridge)
        distances.append(float(torch.linalg.norm(torch.cat([weight[0] - anchor_w[0], bias - anchor_b]))))
    assert all(a > b for a, b in zip(distances, distances[1:]))  # a stronger pull, a closer head
    assert distances[-1] < 0.01 * float(torch.linalg.norm(free_w - anchor_w))
    # the optimum's stationarity: mean-loss gradient = −ridge·(θ − θ_anchor), checked by hand at ridge 1
    weight, bias = fit_head(x, y, anchor_w, anchor_b, ridge=1.0)
    residual = torch.sigmoid(x @ weight[0] + bias) - y
    assert (x.T @ residual / len(y)).numpy() == pytest.approx(-(weight[0] - anchor_w[0]).numpy(), abs=1e-4)


def test_intercept_only_leaves_the_weights_alone():
    x, y = _toy(2)
    anchor_w, anchor_b = torch.tensor([[0.5, -0.5, 0.1]]), torch.tensor([-1.0])
    weight, bias = fit_head(x, y, anchor_w, anchor_b, ridge=0.0, intercept_only=True)
    assert torch.equal(weight, anchor_w) and bias.item() != pytest.approx(-1.0, abs=1e-3)


def test_personalisation_reads_only_the_training_split_and_leaves_the_consortium_model_unchanged():
    train = patient_table(80, seed=4)
    stats = pool_summaries([summarise_site(train, min_cell_size=1)])
    model = tiny_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    personal = personalise_at_site(model, train, stats, GRID, "response-head", 0.01, min_cell_size=10)
    assert personal is not None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the received model untouched
    changed = {k for k, v in personal.state_dict().items() if not torch.equal(before[k], v)}
    assert changed == {"response_head.weight", "response_head.bias"}
    # the same fit by hand from the training rows alone: other patients (validation, test) cannot enter it
    cohort = encode_cohort(train, stats, GRID)
    known = cohort.responder_known > 0.5
    weight, bias = fit_head(head_features(model, cohort.inputs())[known], cohort.responder[known],
                            model.response_head.weight, model.response_head.bias, 0.01)
    assert torch.allclose(personal.response_head.weight, weight)
    assert torch.allclose(personal.response_head.bias, bias)
    shuffled_extra = pd.concat([train, patient_table(40, seed=9)], ignore_index=True)
    other = personalise_at_site(model, shuffled_extra, stats, GRID, "response-head", 0.01, min_cell_size=10)
    assert not torch.allclose(other.response_head.weight, personal.response_head.weight)


def test_too_few_training_responses_or_an_unknown_mode_give_no_personalised_model():
    train = patient_table(30, seed=5)
    stats = pool_summaries([summarise_site(train, min_cell_size=1)])
    assert personalise_at_site(tiny_model(), train, stats, GRID, "response-head", 1.0, min_cell_size=100) is None
    with pytest.raises(ValueError, match="response-head"):
        personalise_at_site(tiny_model(), train, stats, GRID, "everything", 1.0, min_cell_size=10)
    with pytest.raises(ValueError, match="ridge"):
        fit_head(*_toy(), torch.zeros(1, 3), torch.zeros(1), ridge=-1.0)
