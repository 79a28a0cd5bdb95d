"""Local training at a site: Opacus DP-SGD (Poisson sampling, per-sample clipping, calibrated noise)."""

from __future__ import annotations

import importlib.util
import secrets
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from opacus import PrivacyEngine
from torch.utils.data import DataLoader, TensorDataset

from shared.config import LocalOptimizer, RunConfig
from shared.encoding import MODALITY_MASK_INPUT, NUM_INPUTS, EncodedCohort
from shared.losses import batch_loss, patient_losses
from shared.model import OncoFedNet


@dataclass(frozen=True)
class LocalTrainingPlan:
    local_epochs: int
    batch_size: int
    learning_rate: float
    proximal_mu: float
    modality_dropout: float
    seed: int
    weight_decay: float = 0.0
    optimizer: LocalOptimizer = "adam"

    @classmethod
    def from_config(cls, config: RunConfig, seed: int, proximal_mu: float = 0.0) -> LocalTrainingPlan:
        """The run configuration's recipe, so no caller forgets one of its keys."""
        return cls(local_epochs=config.local_epochs, batch_size=config.batch_size,
                   learning_rate=config.learning_rate, proximal_mu=proximal_mu,
                   modality_dropout=config.modality_dropout, seed=seed, weight_decay=config.weight_decay,
                   optimizer=config.local_optimizer)


# How Opacus gets each patient's gradient norm: "hooks" (per-sample gradients from module hooks), "functorch"
# (the same per-sample gradients through torch.func.vmap) or "ghost" (ghost clipping: per-sample norms without
# per-sample gradients, then a second backward pass of the clipped loss). The privacy accounting is the same.
GRAD_SAMPLE_MODES = ("hooks", "functorch", "ghost")


@dataclass(frozen=True)
class PrivacyPlan:
    noise_multiplier: float
    max_grad_norm: float
    secure_mode: bool
    # False only for rehearsals on synthetic data: the sampling and noise then follow the run's seed, which the
    # coordinator knows, so DP does not hold against it (see dp_noise_seed)
    secret_noise: bool = True
    grad_sample_mode: str = "hooks"  # ghost clipping trains the same model but no faster at this model's size


@dataclass(frozen=True)
class LocalTrainingResult:
    mean_loss: float
    steps: int
    sample_rate: float


def secure_rng_available() -> bool:
    """Opacus's secure_mode draws noise from torchcsprng; without the package it cannot run."""
    return importlib.util.find_spec("torchcsprng") is not None


def _drop_modalities(mask: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Hide present non-clinical modalities at random, per patient, so the model copes when they are absent."""
    if rate <= 0:
        return mask
    keep = (torch.rand(mask.shape, generator=generator) >= rate).float()
    keep[:, 0] = 1.0  # clinical is always present
    return mask * keep


def dp_noise_seed(run_seed: int, secret: bool) -> int:
    """The seed of DP-SGD's Poisson sampling and Gaussian noise.

    DP holds only while both are unknown to whoever sees the update; the run's seed is the coordinator's, so a real
    site draws a fresh one from the operating system's entropy for every round. A rehearsal on synthetic data may
    reuse the run's seed to reproduce its figures (site.toml's `reproducible_dp_noise`, the simulated cohort)."""
    return secrets.randbits(62) if secret else run_seed


def train_locally(model: OncoFedNet, cohort: EncodedCohort, plan: LocalTrainingPlan,
                  privacy: PrivacyPlan | None, patient_weights: torch.Tensor | None = None) -> LocalTrainingResult:
    """Train `model` in place for the plan's epochs; with `privacy`, every step is DP-SGD through Opacus.

    `patient_weights` (one per patient of `cohort`): inverse-probability weights of the outcome loss.
    """
    seed = plan.seed if privacy is None else dp_noise_seed(plan.seed, privacy.secret_noise)
    generator = torch.Generator().manual_seed(seed)
    tensors = cohort.tensors() if patient_weights is None else (*cohort.tensors(), patient_weights)
    loader = DataLoader(TensorDataset(*tensors), batch_size=plan.batch_size, shuffle=True,
                        generator=generator)
    global_weights = [p.detach().clone() for p in model.parameters()]
    parameters = _parameter_groups(model, plan.weight_decay)
    optimizer = (torch.optim.SGD(parameters, lr=plan.learning_rate) if plan.optimizer == "sgd"
                 else torch.optim.Adam(parameters, lr=plan.learning_rate))
    trained: torch.nn.Module = model
    criterion = None
    if privacy is not None:
        with warnings.catch_warnings():  # secure_mode off is the simulation's choice, set in the configuration
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp", secure_mode=privacy.secure_mode)
        if privacy.grad_sample_mode not in GRAD_SAMPLE_MODES:
            raise ValueError(f"grad_sample_mode {privacy.grad_sample_mode!r} is not one of {GRAD_SAMPLE_MODES}")
        private = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=privacy.noise_multiplier,
            max_grad_norm=privacy.max_grad_norm, poisson_sampling=True, grad_sample_mode=privacy.grad_sample_mode,
            noise_generator=None if privacy.secure_mode else torch.Generator().manual_seed(seed + 1),
            **({"criterion": _PatientLoss()} if privacy.grad_sample_mode == "ghost" else {}))
        if privacy.grad_sample_mode == "ghost":
            trained, optimizer, criterion, loader = private
        else:
            trained, optimizer, loader = private
    trained.train()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")  # inputs need no gradient
        total, steps = _run_epochs(model, trained, optimizer, loader, plan, global_weights, generator,
                                   weighted=patient_weights is not None, criterion=criterion)
    # the rate the accountant must be told: the Poisson loader's own (1 / batches per epoch)
    sample_rate = float(getattr(loader, "sample_rate", min(1.0, plan.batch_size / len(cohort))))
    return LocalTrainingResult(mean_loss=total / max(1, steps * plan.batch_size), steps=steps,
                               sample_rate=sample_rate)


def _parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict] | Iterator[torch.nn.Parameter]:
    """The optimiser's L2 penalty (a ridge, added to the gradient after DP-SGD's noise) on the weight matrices only:
    the biases, the norms' gains and the survival heads' baseline hazards are intercepts and scales, left
    unpenalised. Without a penalty the optimiser gets model.parameters() itself, as before the option."""
    if weight_decay == 0:
        return model.parameters()
    decayed, rest = [], []
    for name, parameter in model.named_parameters():
        (decayed if parameter.ndim == 2 and "baseline" not in name else rest).append(parameter)
    return [{"params": decayed, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


class _PatientLoss:
    """batch_loss as the criterion Opacus's ghost clipping wraps: it sets `reduction` to "none" to get one loss
    per patient, clips through a second backward pass of those losses, and reduces them by their mean."""

    reduction = "mean"

    def __call__(self, outputs, targets, weights=None) -> torch.Tensor:
        if self.reduction != "none":
            return batch_loss(outputs, targets, weights)
        losses = patient_losses(*outputs, *targets)
        return losses if weights is None else losses * weights


def _run_epochs(model: OncoFedNet, trained: torch.nn.Module, optimizer: torch.optim.Optimizer, loader: DataLoader,
                plan: LocalTrainingPlan, global_weights: list[torch.Tensor], generator: torch.Generator,
                weighted: bool = False, criterion=None) -> tuple[float, int]:
    total, steps = 0.0, 0
    for _ in range(plan.local_epochs):
        for batch in loader:
            weights = batch[-1] if weighted else None
            inputs, targets = list(batch[:NUM_INPUTS]), batch[NUM_INPUTS:len(batch) - int(weighted)]
            inputs[MODALITY_MASK_INPUT] = _drop_modalities(inputs[MODALITY_MASK_INPUT], plan.modality_dropout,
                                                           generator)
            optimizer.zero_grad(set_to_none=True)
            loss = (criterion or batch_loss)(trained(*inputs), targets, weights)
            loss.backward()
            optimizer.step()
            if plan.proximal_mu > 0:  # FedProx as a decoupled proximal step: data-independent, no privacy cost
                with torch.no_grad():
                    for weight, anchor in zip(model.parameters(), global_weights, strict=True):
                        weight.sub_(plan.learning_rate * plan.proximal_mu * (weight - anchor))
            if len(batch[0]):  # an empty Poisson batch adds noise only (its mean loss is undefined)
                total += float(loss.detach()) * len(batch[0])
            steps += 1
    return total, steps
