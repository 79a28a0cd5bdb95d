"""The Fed-TCGA-BRCA federation: a ClientApp per center, the project's Flower strategies, and two ways to run them.

`run_in_process` drives the same ClientApp and strategy through `InProcessGrid` (simulations/in_process.py),
which hands each Message straight to the ClientApp in this process: ~200 benchmark runs on two shared cores cannot each pay Ray's
start-up, and the messages, strategy and aggregation are Flower's own either way. `run_with_flower_simulation`
runs one configuration through `flwr.simulation.run_simulation` to show both give the same model.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from pydantic import BaseModel, ConfigDict, Field

from client.flower import outbox
from client.training.privacy import LedgerEntry, PrivacyLedger, calibrate_noise, check_budget, default_delta, steps_per_round
from server.strategies import build_strategy
from shared.config import RunConfig
from shared.seeds import SITE_SLOTS, name_slot, round_seed
from simulations.benchmarks.brca_training import Privacy, TrainingSteps, build_model, train_site
from simulations.datasets.fed_tcga_brca.loader import REGIONS, CenterData, SurvivalArrays, arrays_of, load_centers
from simulations.in_process import InProcessGrid

Method = Literal["fedavg", "fedprox", "fedadam", "fedyogi", "local", "pooled"]
FEDERATED: tuple[str, ...] = ("fedavg", "fedprox", "fedadam", "fedyogi")
NUM_CENTERS = len(REGIONS)


class BenchmarkPlan(BaseModel):
    """One benchmark configuration, sent to every site in each round's ConfigRecord."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method
    seed: int = 42
    rounds: int = Field(50, ge=1, description="federated rounds; local/pooled train rounds × epochs in one go")
    epochs: int = Field(5, ge=1, description="local passes per round (full-batch steps without DP)")
    batch_size: int = Field(32, ge=1, description="expected Poisson batch size under DP")
    learning_rate: float = Field(0.05, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    server_learning_rate: float = Field(0.1, gt=0, description="FedAdam/FedYogi eta")
    server_tau: float = Field(1e-3, gt=0)
    proximal_mu: float = Field(0.1, ge=0)
    epsilon: float | None = Field(None, gt=0, description="per-site DP budget for the whole run; None = no DP")
    max_grad_norm: float = Field(1.0, gt=0)
    validation: bool = Field(False, description="train on each center's train minus its validation part")
    local_center: int | None = Field(None, ge=0, lt=NUM_CENTERS, description="the center 'local' trains on")

    def to_config(self) -> ConfigRecord:
        return ConfigRecord({"plan": self.model_dump_json()})

    @classmethod
    def from_config(cls, config: ConfigRecord) -> BenchmarkPlan:
        return cls.model_validate_json(str(config["plan"]))


def validation_split(train: SurvivalArrays, seed: int = 0, fraction: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Rows (fit, validation) of a center's TRAIN part, stratified on death: the only data any choice is made on."""
    rng = np.random.default_rng(seed)
    validation = []
    for stratum in (train.event, ~train.event):
        rows = np.flatnonzero(stratum)
        validation.extend(rng.choice(rows, size=int(round(fraction * len(rows))), replace=False))
    held = np.zeros(len(train), dtype=bool)
    held[np.asarray(validation, dtype=int)] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def subset(data: SurvivalArrays, rows: np.ndarray) -> SurvivalArrays:
    return SurvivalArrays(features=data.features[rows], event=data.event[rows], time=data.time[rows])


def training_arrays(center: CenterData, validation: bool) -> SurvivalArrays:
    train = arrays_of(center.train)
    return subset(train, validation_split(train)[0]) if validation else train


def evaluation_arrays(center: CenterData, validation: bool) -> SurvivalArrays:
    """The held-out patients a model is scored on: the validation part while tuning, else the test set."""
    if validation:
        train = arrays_of(center.train)
        return subset(train, validation_split(train)[1])
    return arrays_of(center.test)


@functools.lru_cache(maxsize=256)
def _noise_multiplier(epsilon: float, delta: float, sample_rate: float, total_steps: int) -> float:
    return calibrate_noise(epsilon, delta, sample_rate, total_steps)  # pure, and the search is slow: cached


@functools.lru_cache(maxsize=1024)
def spent_epsilon(budget: float, delta: float, noise_multiplier: float, sample_rate: float, steps: int) -> float:
    """ε after `steps` identical DP-SGD steps, through the site's own ledger check (refuses past the budget).

    Cached because Opacus's RDP accountant takes seconds per call and every seed repeats the same steps.
    """
    return check_budget(PrivacyLedger(delta=delta), budget, (noise_multiplier, sample_rate, steps))


def privacy_for(plan: BenchmarkPlan, num_patients: int, planned_passes: int) -> tuple[Privacy, float, float, int]:
    """(noise, δ, sample rate, steps) spending the site's ε exactly over every step it will ever take."""
    assert plan.epsilon is not None
    delta = default_delta(num_patients)
    sample_rate, steps = steps_per_round(num_patients, plan.batch_size, plan.epochs)
    sigma = _noise_multiplier(plan.epsilon, delta, sample_rate, steps * planned_passes)
    return Privacy(noise_multiplier=sigma, max_grad_norm=plan.max_grad_norm), delta, sample_rate, steps


def site_seed(plan: BenchmarkPlan, server_round: int, center: int) -> int:
    return round_seed(plan.seed, server_round, name_slot(REGIONS[center], SITE_SLOTS))


def build_client_app(centers: Sequence[CenterData] | None = None) -> ClientApp:
    """Each node is one center (node_config 'partition-id'); without `centers` it loads the packaged data."""
    app = ClientApp()
    ledgers: dict[tuple[int, int], PrivacyLedger] = {}  # this site's own ledger per run, kept by the site

    loaded: dict[int, CenterData] = dict(enumerate(centers or ()))  # a dict, not functools.cache: Ray pickles apps

    def data_of(center: int) -> CenterData:
        if center not in loaded:
            loaded.update(enumerate(load_centers()))
        return loaded[center]

    @app.train()
    def train(message: Message, context: Context) -> Message:
        center = int(context.node_config["partition-id"])
        config = message.content["config"]
        plan, server_round = BenchmarkPlan.from_config(config), int(config["server-round"])
        data = training_arrays(data_of(center), plan.validation)
        model = build_model(plan.seed)
        model.load_state_dict(message.content["arrays"].to_torch_state_dict())
        privacy, metrics = None, {"num-examples": len(data)}
        if plan.epsilon is not None:
            privacy, delta, sample_rate, steps = privacy_for(plan, len(data), plan.rounds)
            ledger = ledgers.setdefault((context.run_id, center), PrivacyLedger(delta=delta))
            # every round takes the same steps, so the whole planned run is one ledger entry: its ε bounds each
            # round's, and a round beyond the plan is refused (the accountant takes seconds per call)
            if sum(entry.steps for entry in ledger.entries) + steps > steps * plan.rounds:
                return outbox.refusal(message, outbox.ERROR_BUDGET_EXHAUSTED,
                                      f"center {center}: the run's privacy budget ε={plan.epsilon} is spent")
            after = spent_epsilon(plan.epsilon, delta, privacy.noise_multiplier, sample_rate, steps * plan.rounds)
            metrics |= {"epsilon": after, "noise-multiplier": privacy.noise_multiplier}
        steps_plan = TrainingSteps(epochs=plan.epochs, batch_size=plan.batch_size, learning_rate=plan.learning_rate,
                                   weight_decay=plan.weight_decay,
                                   proximal_mu=float(config.get("proximal-mu", 0.0)),
                                   seed=site_seed(plan, server_round, center))
        outcome = train_site(model, data, steps_plan, privacy)
        if privacy is not None:
            ledger.entries.append(LedgerEntry(run_id=str(context.run_id), server_round=server_round,
                                              noise_multiplier=privacy.noise_multiplier,
                                              sample_rate=outcome.sample_rate, steps=outcome.steps,
                                              epsilon_after=metrics["epsilon"]))
        metrics["train-loss"] = outcome.mean_loss
        return outbox.reply(message, site_id=f"brca-{center}", metrics=metrics, min_cell_size=10,
                            arrays=ArrayRecord(model.state_dict()),
                            expected_arrays={k: tuple(v.shape) for k, v in model.state_dict().items()})

    return app


def build_strategy_for(plan: BenchmarkPlan) -> FedAvg:
    """The project's own strategy factory; evaluation happens once, on the final model, in the benchmark."""
    config = RunConfig(strategy=plan.method, proximal_mu=plan.proximal_mu,
                       server_learning_rate=plan.server_learning_rate, server_tau=plan.server_tau,
                       min_sites=NUM_CENTERS)
    strategy = build_strategy(config)
    strategy.fraction_evaluate = 0.0  # no per-round federated evaluation: the benchmark scores the final model
    return strategy


def run_federation(grid: Grid, plan: BenchmarkPlan) -> dict[str, np.ndarray]:
    """Flower's strategy loop over `grid`; the final global model's arrays."""
    initial = ArrayRecord(build_model(plan.seed).state_dict())
    result = build_strategy_for(plan).start(grid=grid, initial_arrays=initial, num_rounds=plan.rounds,
                                            train_config=plan.to_config())
    if not result.arrays:
        raise RuntimeError(f"{plan.method}: no round produced a model; the sites' errors are in Flower's log")
    return {name: array.numpy() for name, array in result.arrays.items()}


def run_in_process(plan: BenchmarkPlan, centers: Sequence[CenterData]) -> dict[str, np.ndarray]:
    grid = InProcessGrid(build_client_app(centers), num_nodes=NUM_CENTERS)
    return run_federation(grid, plan)


def run_with_flower_simulation(plan: BenchmarkPlan) -> dict[str, np.ndarray]:
    """The same ClientApp and strategy under Flower's simulation engine (Ray): the cross-check, slow."""
    from flwr.simulation import run_simulation

    final: list[dict[str, np.ndarray]] = []
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        final.append(run_federation(grid, plan))

    run_simulation(server_app=server, client_app=build_client_app(), num_supernodes=NUM_CENTERS,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
                                   "init_args": {"num_cpus": 2, "include_dashboard": False}})
    if not final:
        raise RuntimeError("the Flower simulation ended without a final model; see its log above")
    return final[0]
