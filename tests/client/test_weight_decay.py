"""The ridge penalty (run config `weight-decay`) shrinks the weight matrices only, under DP-SGD as without it."""

import dataclasses

import torch

from client.training.dp_sgd import LocalTrainingPlan, PrivacyPlan, _parameter_groups, train_locally
from tests.factories import encoded_cohort, tiny_model

PLAN = LocalTrainingPlan(local_epochs=3, batch_size=16, learning_rate=1e-2, proximal_mu=0.0,
                         modality_dropout=0.0, seed=0)
DP = PrivacyPlan(noise_multiplier=1.0, max_grad_norm=1.0, secure_mode=False, secret_noise=False)


def _penalised(name: str, parameter: torch.Tensor) -> bool:
    return parameter.ndim == 2 and "baseline" not in name


def _train(weight_decay: float, privacy: PrivacyPlan | None) -> tuple[dict, dict]:
    model = tiny_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    train_locally(model, encoded_cohort(64, seed=3), dataclasses.replace(PLAN, weight_decay=weight_decay), privacy)
    return before, {name: p.detach().clone() for name, p in model.named_parameters()}


def test_weight_decay_shrinks_the_weight_matrices():
    for privacy in (None, DP):
        before, plain = _train(0.0, privacy)
        _, ridge = _train(1.0, privacy)
        penalised = [name for name, p in before.items() if _penalised(name, p)]
        norm = lambda weights, names: sum(float(weights[n].norm()) ** 2 for n in names) ** 0.5  # noqa: E731
        assert norm(ridge, penalised) < 0.9 * norm(plain, penalised)


def test_only_weight_matrices_are_penalised():
    """Biases, the norms' gains and the survival heads' baseline hazards (intercepts) carry no penalty."""
    model = tiny_model()
    names = {id(p): name for name, p in model.named_parameters()}
    decayed, rest = _parameter_groups(model, 0.5)
    assert decayed["weight_decay"] == 0.5 and rest["weight_decay"] == 0.0
    decayed_names = {names[id(p)] for p in decayed["params"]}
    assert decayed_names == {name for name, p in model.named_parameters() if _penalised(name, p)}
    assert {"pfs_head.baseline.weight", "os_head.baseline.weight"} <= {names[id(p)] for p in rest["params"]}
    assert not any(name.endswith("bias") for name in decayed_names)
    assert len(decayed["params"]) + len(rest["params"]) == len(names)
