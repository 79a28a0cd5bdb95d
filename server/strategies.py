"""Flower's own strategies, chosen and configured from the run configuration; their state for checkpoints."""

from __future__ import annotations

import numpy as np
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, FedYogi

from shared.config import RunConfig

# attributes holding a strategy's server-side optimiser state (FedAdam/FedYogi moments)
_STATE_ATTRIBUTES = ("current_arrays", "m_t", "v_t")


def build_strategy(config: RunConfig) -> FedAvg:
    common = dict(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=config.min_sites,
                  min_evaluate_nodes=config.min_sites, min_available_nodes=config.min_sites)
    if config.strategy == "fedavg":
        return FedAvg(**common)
    if config.strategy == "fedprox":
        return FedProx(proximal_mu=config.proximal_mu, **common)
    if config.strategy == "fedadam":
        return FedAdam(eta=config.server_learning_rate, tau=config.server_tau, **common)
    if config.strategy == "fedyogi":
        return FedYogi(eta=config.server_learning_rate, tau=config.server_tau, **common)
    raise ValueError(f"unknown strategy {config.strategy!r}")  # RunConfig validation makes this unreachable


def strategy_state(strategy: FedAvg) -> dict[str, dict[str, np.ndarray]]:
    return {name: dict(getattr(strategy, name)) for name in _STATE_ATTRIBUTES
            if getattr(strategy, name, None) is not None}


def restore_strategy_state(strategy: FedAvg, state: dict[str, dict[str, np.ndarray]]) -> None:
    for name, arrays in state.items():
        setattr(strategy, name, {k: np.asarray(v) for k, v in arrays.items()})
