"""Flower's own strategies, chosen and configured from the run configuration; their state for checkpoints.

Robust aggregation uses Flower's FedTrimmedAvg / FedMedian. With FedProx, FedAdam or FedYogi it is combined by
cooperative inheritance: the robust class supplies the aggregate of the sites' models, which FedAdam/FedYogi
then turn into the pseudo-gradient for their server optimiser (FedProx only changes what the sites train).
Server-side update clipping and central DP use Flower's DifferentialPrivacyServerSideFixedClipping wrapper.
"""

from __future__ import annotations

import numpy as np
from flwr.serverapp.strategy import (
    DifferentialPrivacyServerSideFixedClipping,
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Strategy,
)

from shared.config import RunConfig

# attributes holding a strategy's server-side optimiser state (FedAdam/FedYogi moments)
_STATE_ATTRIBUTES = ("current_arrays", "m_t", "v_t")

_BASES: dict[str, type[FedAvg]] = {"fedavg": FedAvg, "fedprox": FedProx, "fedadam": FedAdam, "fedyogi": FedYogi}
_ROBUST: dict[str, type[FedAvg]] = {"trimmed-mean": FedTrimmedAvg, "median": FedMedian}


def _strategy_class(strategy: str, aggregation: str) -> type[FedAvg]:
    """Flower's class for the strategy, with its aggregate replaced by the robust one when asked."""
    base = _BASES[strategy]
    if aggregation == "mean":
        return base
    robust = _ROBUST[aggregation]
    if base is FedAvg:
        return robust
    # MRO: base (its configure/optimiser step) → FedOpt → robust (aggregate_train) → FedAvg
    return type(f"{base.__name__}With{robust.__name__}", (base, robust), {})


def _robust(strategy: FedAvg, config: RunConfig) -> FedAvg:
    if config.aggregation == "trimmed-mean":
        strategy.beta = config.trim_fraction
    return strategy


def _every_site(config: RunConfig) -> dict:
    return dict(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=config.min_sites,
                min_evaluate_nodes=config.min_sites, min_available_nodes=config.min_sites)


def build_propensity_strategy(config: RunConfig) -> FedAvg:
    """The propensity model's rounds: FedAvg with the run's robust aggregation (trimmed mean / median).

    No server optimiser (FedAdam/FedYogi) and no server-side clipping: update-clip-norm is sized for the outcome
    model's update and its central-DP noise is accounted over the outcome rounds only."""
    return _robust(_strategy_class("fedavg", config.aggregation)(**_every_site(config)), config)


def build_strategy(config: RunConfig) -> Strategy:
    common = _every_site(config)
    if config.strategy == "fedprox":
        common |= dict(proximal_mu=config.proximal_mu)
    elif config.strategy in ("fedadam", "fedyogi"):
        common |= dict(eta=config.server_learning_rate, tau=config.server_tau)
    strategy = _robust(_strategy_class(config.strategy, config.aggregation)(**common), config)
    if config.update_clip_norm > 0:
        # clips each update (site model − global model) to the bound, then adds N(0, (z·C/n)²) to the aggregate;
        # n = min-sites, so the noise is never smaller than the fewest sites a round may use call for
        return DifferentialPrivacyServerSideFixedClipping(strategy, config.central_dp_noise_multiplier,
                                                          config.update_clip_norm, config.min_sites)
    return strategy


def _inner(strategy: Strategy) -> Strategy:
    """The strategy under a DP wrapper (whose own arrays are re-set every round and need no checkpoint)."""
    return getattr(strategy, "strategy", strategy)


def strategy_state(strategy: Strategy) -> dict[str, dict[str, np.ndarray]]:
    inner = _inner(strategy)
    return {name: dict(getattr(inner, name)) for name in _STATE_ATTRIBUTES
            if getattr(inner, name, None) is not None}


def restore_strategy_state(strategy: Strategy, state: dict[str, dict[str, np.ndarray]]) -> None:
    inner = _inner(strategy)
    for name, arrays in state.items():
        setattr(inner, name, {k: np.asarray(v) for k, v in arrays.items()})
