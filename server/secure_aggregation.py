"""A training round under SecAgg+: the coordinator learns the weighted mean of the sites' models, not any one.

Flower 1.41 offers SecAgg+ only as a legacy workflow (SecAggPlusWorkflow needs a LegacyContext, a legacy
Strategy and client manager, and the legacy fit layout), so this module runs that workflow for the train step
of one round inside the project's Message-API loop; client/flower/secure_aggregation.py is the site's side.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, RecordDict
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server import LegacyContext, ServerConfig, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD, Key
from flwr.serverapp import Grid

from shared.config import RunConfig
from shared.messages import NORMALISATION_KEY, PLAN_KEY, SERVER_ROUND_KEY, SITE_ID_KEY
from shared.messages import NORMALISATION_STATS_KEY as STATS_KEY
from shared.secure_aggregation import ARRAY_NAMES_KEY, NORMALISATION_STATS_KEY

# SecAgg+ settings: every site shares with every other (consortia are small), two thirds must stay to unmask
NUM_SHARES, RECONSTRUCTION_THRESHOLD = 1.0, 2 / 3


@dataclass
class SecureRound:
    """What the coordinator learns from a secure round: the mean model and each site's plain figures."""

    arrays: ArrayRecord | None
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


class _UnmaskedMean(LegacyFedAvg):
    """Hands on the mean SecAgg+ unmasked (every result carries it) and keeps each site's plain figures."""

    def __init__(self, config: RunConfig, instruction: dict[str, Scalar]) -> None:
        super().__init__(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=config.min_sites,
                         min_available_clients=config.min_sites, on_fit_config_fn=lambda _: dict(instruction))
        self.figures: dict[str, dict[str, float]] = {}
        self.sites: dict[int, str] = {}

    def aggregate_fit(self, server_round: int, results: list[tuple[ClientProxy, FitRes]],
                      failures: list) -> tuple[Parameters | None, dict[str, Scalar]]:
        for proxy, result in results:
            figures = dict(result.metrics)
            site = str(figures.pop(SITE_ID_KEY))
            self.sites[int(proxy.node_id)] = site
            self.figures[site] = {k: float(v) for k, v in figures.items()}
        if not results:
            return None, {}
        return ndarrays_to_parameters(parameters_to_ndarrays(results[0][1].parameters)), {}


def secure_train_round(grid: Grid, config: RunConfig, arrays: ArrayRecord, records: dict[str, ConfigRecord],
                       server_round: int, names: dict[int, str]) -> SecureRound:
    """Run Flower's SecAgg+ workflow for one training round; `records` are the plan and the feature scaling."""
    order = list(arrays.keys())
    instruction: dict[str, Scalar] = {**dict(records[PLAN_KEY]), SERVER_ROUND_KEY: server_round,
                                      ARRAY_NAMES_KEY: json.dumps(order),
                                      NORMALISATION_STATS_KEY: str(records[NORMALISATION_KEY][STATS_KEY])}
    strategy = _UnmaskedMean(config, instruction)
    run_id = grid.run.run_id
    context = LegacyContext(Context(run_id=run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}),
                            config=ServerConfig(num_rounds=1, round_timeout=config.round_timeout_s),
                            strategy=strategy, client_manager=SimpleClientManager())
    nodes = list(grid.get_node_ids())
    for node in nodes:
        context.client_manager.register(GridClientProxy(node_id=node, grid=grid, run_id=run_id))
    context.state[MAIN_PARAMS_RECORD] = ArrayRecord([arrays[name].numpy() for name in order])
    context.state[MAIN_CONFIGS_RECORD] = ConfigRecord({Key.CURRENT_ROUND: server_round})
    workflow = SecAggPlusWorkflow(num_shares=NUM_SHARES, reconstruction_threshold=RECONSTRUCTION_THRESHOLD,
                                  max_weight=float(config.secure_aggregation_max_weight),
                                  timeout=config.round_timeout_s)
    workflow(grid, context)
    names |= strategy.sites
    missing = {names.get(n, f"node-{n}"): "no masked model in the secure aggregation (dropped out or failed)"
               for n in nodes if n not in strategy.sites}
    if not strategy.figures:
        return SecureRound(arrays=None, missing=missing)
    values = [a.numpy() for a in context.state[MAIN_PARAMS_RECORD].values()]
    mean = ArrayRecord({name: Array(np.asarray(v, dtype=arrays[name].numpy().dtype))
                        for name, v in zip(order, values, strict=True)})
    return SecureRound(arrays=mean, figures=strategy.figures, missing=missing)
