"""The site's part of the propensity model: DP-SGD rounds on its training split, spent through its ledger.

The propensity model gets `propensity-epsilon-share` of the site's ε over its `propensity-rounds` rounds; the
outcome model's noise is calibrated to the rest (`outcome_epsilon`). The site's ledger composes both, and every
round, of either model, is refused before it starts if it would take the site past its budget.
"""

from __future__ import annotations

import warnings

import torch
from torch.utils.data import DataLoader, TensorDataset

from client.data.site import Site
from client.training.privacy import (
    LedgerEntry,
    RoundPrivacy,
    calibrate_noise,
    check_budget,
    load_ledger,
    save_ledger,
    steps_per_round,
)
from shared.config import RunConfig
from shared.encoding import NUM_INPUTS, SurvivalGrid, encode_cohort
from shared.harmonisation import NormalisationStats
from shared.propensity import PROPENSITY_INPUTS, PropensityModel, propensity_losses
from shared.seeds import propensity_seed


def outcome_epsilon(target_epsilon: float, plan: RunConfig) -> float:
    """The ε the outcome model's training is calibrated to: the site's budget less the propensity model's share."""
    if plan.dp and plan.propensity_weighting:
        return target_epsilon * (1.0 - plan.propensity_epsilon_share)
    return target_epsilon


def train_propensity_round(site: Site, plan: RunConfig, stats: NormalisationStats, model: PropensityModel,
                           server_round: int, run_id: str) -> dict[str, float]:
    """One epoch of (DP) training of the propensity model in place; its figures and the privacy spent so far.

    Raises client.training.privacy.PrivacyBudgetExceeded before training when the round would overspend.
    """
    grid = SurvivalGrid.from_config(plan)
    inputs = encode_cohort(site.part("train"), stats, grid).inputs()[:NUM_INPUTS]
    seed = propensity_seed(plan.seed, server_round)
    if plan.dp:
        from client.training.dp_sgd import dp_noise_seed

        seed = dp_noise_seed(seed, site.secret_dp_noise)
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(TensorDataset(*inputs), batch_size=plan.batch_size, shuffle=True, generator=generator)
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.propensity_learning_rate)
    trained: torch.nn.Module = model
    ledger, planned = None, None
    if plan.dp:
        from opacus import PrivacyEngine  # on the first propensity message: client/flower/app.py stays lean

        delta = site.delta()
        sample_rate, steps = steps_per_round(len(inputs[0]), plan.batch_size, 1)
        share = site.target_epsilon * plan.propensity_epsilon_share
        sigma = calibrate_noise(share, delta, sample_rate, steps * plan.propensity_rounds)
        ledger = load_ledger(site.ledger_path, delta)
        planned = RoundPrivacy(noise_multiplier=sigma, sample_rate=sample_rate, steps=steps, group="propensity",
                               group_budget=share)
        check_budget(ledger, site.target_epsilon, planned.planned, planned.group, planned.group_budget)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Secure RNG turned off")
            engine = PrivacyEngine(accountant="rdp", secure_mode=site.secure_mode)
        trained, optimizer, loader = engine.make_private(
            module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=sigma,
            max_grad_norm=plan.max_grad_norm, poisson_sampling=True,
            noise_generator=None if site.secure_mode else torch.Generator().manual_seed(seed + 1))
    trained.train()
    total, steps_taken = 0.0, 0
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        for batch in loader:
            optimizer.zero_grad(set_to_none=True)
            losses = propensity_losses(trained(*batch[:PROPENSITY_INPUTS]), batch[PROPENSITY_INPUTS])
            loss = losses.mean() if losses.numel() else losses.sum()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch[0])
            steps_taken += 1
    metrics: dict[str, float] = {"num-examples": len(inputs[0]), "train-loss": total / max(1, len(inputs[0]))}
    if ledger is not None and planned is not None:
        label = f"{run_id}:propensity"
        sample_rate = float(getattr(loader, "sample_rate", planned.sample_rate))
        ledger.entries.append(LedgerEntry(run_id=label, server_round=server_round, noise_multiplier=planned.noise_multiplier,
                                          sample_rate=sample_rate, steps=steps_taken, epsilon_after=0.0,
                                          phase="propensity"))
        ledger.entries[-1].epsilon_after = ledger.epsilon()
        save_ledger(ledger, site.ledger_path)
        metrics |= {"epsilon": ledger.entries[-1].epsilon_after,
                    "epsilon-round": ledger.round_epsilon(label, server_round), "epsilon-budget": site.target_epsilon,
                    "delta": ledger.delta, "noise-multiplier": planned.noise_multiplier, "sample-rate": sample_rate,
                    "steps": steps_taken}
    return metrics
