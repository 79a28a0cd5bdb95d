"""The Fed-TCGA-BRCA model, its two losses, one site's local training (Opacus DP-SGD when private) and Harrell's C.

The model is linear in the 39 features, as FLamby's reference: with 866 training patients and 151 deaths a
deeper model has nothing to gain and more to overfit. Without DP it is fitted by the Cox partial likelihood
(FLamby's loss); under DP by the per-patient discrete-time hazard likelihood of shared/losses.py, because
the Cox risk set couples patients and per-sample clipping would then bound nothing. Both rank patients by
the same linear risk x·w, which is what the C-index scores.

client/training/dp_sgd.py is bound to the multimodal OncoFedNet (its five inputs and modality dropout), so the
loop is written here with the same Opacus set-up: Poisson sampling, per-sample clipping, seeded noise.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from opacus import PrivacyEngine
from sksurv.metrics import concordance_index_censored
from torch.utils.data import DataLoader, TensorDataset

from shared.encoding import SurvivalGrid
from shared.losses import discrete_hazard_nll
from simulations.datasets.fed_tcga_brca.loader import FEATURE_COLUMNS, SurvivalArrays

NUM_FEATURES = len(FEATURE_COLUMNS)
HAZARD_GRID = SurvivalGrid(interval_days=365, horizon_days=3650)  # yearly hazards over ten years of follow-up


class LinearSurvival(torch.nn.Module):
    """risk = x·w; yearly hazard logits = baseline_k + risk (discrete-time proportional odds)."""

    def __init__(self, num_features: int = NUM_FEATURES, num_intervals: int = HAZARD_GRID.num_intervals) -> None:
        super().__init__()
        self.risk = torch.nn.Linear(num_features, 1, bias=False)
        self.baseline = torch.nn.Linear(1, num_intervals)  # on a constant 1: a Linear, so Opacus can clip it

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.risk(features).squeeze(-1)

    def hazard_logits(self, features: torch.Tensor) -> torch.Tensor:
        ones = torch.ones(features.shape[0], 1, dtype=features.dtype)
        return self.baseline(ones) + self.risk(features)


def build_model(seed: int) -> LinearSurvival:
    torch.manual_seed(seed)
    return LinearSurvival()


class _HazardHead(torch.nn.Module):
    """The model seen through its hazard logits, so Opacus wraps one forward that takes one patient's row."""

    def __init__(self, model: LinearSurvival) -> None:
        super().__init__()
        self.model = model

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model.hazard_logits(features)


def cox_nll(risk: torch.Tensor, log_risk_set: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Cox negative log partial likelihood (Breslow ties), mean over deaths.

    log_risk_set[i, j] = 0 where t_j >= t_i, -inf elsewhere: written by hand (no installed library has a torch
    Cox loss), dense because a site holds at most a few hundred patients.
    """
    log_denominator = torch.logsumexp(risk[None, :] + log_risk_set, dim=1)
    deaths = event.sum().clamp(min=1.0)
    return -((risk - log_denominator) * event).sum() / deaths


def risk_set_mask(time: np.ndarray) -> torch.Tensor:
    at_risk = time[None, :] >= time[:, None]
    return torch.from_numpy(np.where(at_risk, 0.0, -np.inf).astype(np.float32))


def hazard_targets(data: SurvivalArrays) -> tuple[torch.Tensor, torch.Tensor]:
    """(survived, event) per yearly interval, as shared/losses.discrete_hazard_nll takes them."""
    edges = HAZARD_GRID.edges
    t = data.time[:, None]
    survived = t >= edges[None, 1:]
    events = (t >= edges[None, :-1]) & (t < edges[None, 1:]) & data.event[:, None]
    return torch.from_numpy(survived.astype(np.float32)), torch.from_numpy(events.astype(np.float32))


@dataclass(frozen=True)
class TrainingSteps:
    """How one site trains in one call; `epochs` are full passes, `steps_per_epoch` only matters under DP."""

    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float
    proximal_mu: float
    seed: int


@dataclass(frozen=True)
class Privacy:
    noise_multiplier: float
    max_grad_norm: float


@dataclass(frozen=True)
class TrainingOutcome:
    mean_loss: float
    steps: int
    sample_rate: float


def train_site(model: LinearSurvival, data: SurvivalArrays, steps: TrainingSteps,
               privacy: Privacy | None) -> TrainingOutcome:
    """Train `model` in place on one site's patients: full-batch Cox without DP, DP-SGD hazard NLL with it."""
    anchor = [p.detach().clone() for p in model.parameters()]
    features = torch.from_numpy(data.features)
    if privacy is None:
        optimizer = torch.optim.Adam(model.risk.parameters(), lr=steps.learning_rate,
                                     weight_decay=steps.weight_decay)
        log_risk_set, event = risk_set_mask(data.time), torch.from_numpy(data.event.astype(np.float32))
        total = 0.0
        for _ in range(steps.epochs):
            optimizer.zero_grad(set_to_none=True)
            loss = cox_nll(model(features), log_risk_set, event)
            loss.backward()
            optimizer.step()
            _proximal_step(model, anchor, steps)
            total += float(loss.detach())
        return TrainingOutcome(mean_loss=total / max(1, steps.epochs), steps=steps.epochs, sample_rate=1.0)
    return _train_private(model, features, data, steps, privacy, anchor)


def _train_private(model: LinearSurvival, features: torch.Tensor, data: SurvivalArrays, steps: TrainingSteps,
                   privacy: Privacy, anchor: list[torch.Tensor]) -> TrainingOutcome:
    generator = torch.Generator().manual_seed(steps.seed)
    survived, event = hazard_targets(data)
    loader = DataLoader(TensorDataset(features, survived, event), batch_size=steps.batch_size, shuffle=True,
                        generator=generator)
    head = _HazardHead(model)
    optimizer = torch.optim.Adam(head.parameters(), lr=steps.learning_rate, weight_decay=steps.weight_decay)
    with warnings.catch_warnings():  # the benchmark is a simulation: seeded noise, not a secure RNG
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
    private, optimizer, loader = engine.make_private(
        module=head, optimizer=optimizer, data_loader=loader, noise_multiplier=privacy.noise_multiplier,
        max_grad_norm=privacy.max_grad_norm, poisson_sampling=True,
        noise_generator=torch.Generator().manual_seed(steps.seed + 1))
    private.train()
    total, count = 0.0, 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for _ in range(steps.epochs):
            for batch_features, batch_survived, batch_event in loader:
                optimizer.zero_grad(set_to_none=True)
                losses = discrete_hazard_nll(private(batch_features), batch_survived, batch_event)
                loss = losses.mean() if losses.numel() else losses.sum()  # an empty Poisson batch still steps
                loss.backward()
                optimizer.step()
                _proximal_step(model, anchor, steps)
                total += float(loss.detach()) * len(batch_features)
                count += 1
    sample_rate = float(getattr(loader, "sample_rate", 1.0))
    return TrainingOutcome(mean_loss=total / max(1, count * steps.batch_size), steps=count,
                           sample_rate=sample_rate)


def _proximal_step(model: LinearSurvival, anchor: list[torch.Tensor], steps: TrainingSteps) -> None:
    """FedProx as a decoupled proximal step (as client/training/dp_sgd.py): data-independent, so no privacy cost."""
    if steps.proximal_mu <= 0:
        return
    with torch.no_grad():
        for weight, start in zip(model.parameters(), anchor, strict=True):
            weight.sub_(steps.learning_rate * steps.proximal_mu * (weight - start))


def risk_scores(model: LinearSurvival, data: SurvivalArrays) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(data.features)).numpy().astype(np.float64)


def harrell_c(data: SurvivalArrays, risk: np.ndarray) -> float:
    """Harrell's C from scikit-survival (higher risk should die sooner); NaN where no pair is comparable."""
    if not data.event.any():
        return float("nan")
    return float(concordance_index_censored(data.event, data.time, risk)[0])
