"""Every strategy × aggregation × clipping combination builds from the config, aggregates, and checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, FedMedian, FedTrimmedAvg

from server.strategies import build_propensity_strategy, build_strategy, restore_strategy_state, strategy_state
from shared.config import ConfigError, RunConfig



@pytest.fixture(autouse=True)
def a_flower_run(monkeypatch):
    """Flower stamps every Message with the run id of the process; outside a run there is none."""
    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


GLOBAL = {"w": np.zeros(4, dtype=np.float32)}


class FourNodes:
    """The two Grid methods a strategy's configure_train uses."""

    def get_node_ids(self):
        return [1, 2, 3, 4]


def reply(node: int, weight: np.ndarray, examples: int = 100) -> Message:
    content = RecordDict({"arrays": ArrayRecord({"w": Array(weight.astype(np.float32))}),
                          "metrics": MetricRecord({"num-examples": examples})})
    return Message(content, dst_node_id=node, message_type=MessageType.TRAIN)  # strategies read only content


def aggregate(config: RunConfig, updates: list[np.ndarray]) -> np.ndarray:
    strategy = build_strategy(config)
    strategy.configure_train(1, ArrayRecord({k: Array(v) for k, v in GLOBAL.items()}), ConfigRecord({}), FourNodes())
    replies = [reply(i + 1, u) for i, u in enumerate(updates)]
    arrays, _ = strategy.aggregate_train(1, replies)
    return arrays["w"].numpy()


HONEST = [np.full(4, 0.10), np.full(4, 0.12), np.full(4, 0.08)]
POISONED = [*HONEST, np.full(4, -30.0)]


@pytest.mark.parametrize("strategy", ["fedavg", "fedprox", "fedadam", "fedyogi"])
@pytest.mark.parametrize("aggregation", ["mean", "trimmed-mean", "median"])
def test_every_combination_builds_and_aggregates(strategy, aggregation):
    result = aggregate(RunConfig(strategy=strategy, aggregation=aggregation), HONEST)
    assert result.shape == (4,) and np.all(np.isfinite(result))


def test_robust_aggregates_are_flowers_own_and_bound_a_scaled_update():
    assert isinstance(build_strategy(RunConfig(aggregation="median")), FedMedian)
    assert isinstance(build_strategy(RunConfig(aggregation="trimmed-mean")), FedTrimmedAvg)
    assert aggregate(RunConfig(aggregation="mean"), POISONED)[0] < -7  # the mean takes the attack
    assert np.allclose(aggregate(RunConfig(aggregation="median"), POISONED), 0.09)
    assert np.allclose(aggregate(RunConfig(aggregation="trimmed-mean", trim_fraction=0.25), POISONED), 0.09)


def test_fedadam_steps_along_the_robust_aggregate_not_the_poisoned_mean():
    robust = aggregate(RunConfig(strategy="fedadam", aggregation="median"), POISONED)
    plain = aggregate(RunConfig(strategy="fedadam", aggregation="mean"), POISONED)
    assert np.all(robust > 0) and np.all(plain < 0)  # the server optimiser moves the way the median points


def test_update_clipping_bounds_each_site_and_central_dp_needs_a_bound():
    clipped = build_strategy(RunConfig(update_clip_norm=0.5))
    assert isinstance(clipped, DifferentialPrivacyServerSideFixedClipping) and clipped.noise_multiplier == 0
    result = aggregate(RunConfig(update_clip_norm=0.5), POISONED)
    assert np.linalg.norm(result) <= 0.5 + 1e-6  # a mean of updates each at most 0.5 long
    with pytest.raises(ConfigError, match="update-clip-norm"):
        RunConfig.from_mapping({"central-dp-noise-multiplier": 1.0})
    noisy = aggregate(RunConfig(update_clip_norm=0.5, central_dp_noise_multiplier=1.0), HONEST)
    assert not np.allclose(noisy, 0.1, atol=1e-3)  # noise of σ = 1 × 0.5 / min-sites was added


def test_the_server_optimiser_state_survives_a_checkpoint_under_the_clipping_wrapper():
    config = RunConfig(strategy="fedadam", aggregation="median", update_clip_norm=1.0)
    first = build_strategy(config)
    first.configure_train(1, ArrayRecord({k: Array(v) for k, v in GLOBAL.items()}), ConfigRecord({}), FourNodes())
    first.aggregate_train(1, [reply(i + 1, u) for i, u in enumerate(HONEST)])
    saved = strategy_state(first)
    assert set(saved) == {"current_arrays", "m_t", "v_t"}
    second = build_strategy(config)
    restore_strategy_state(second, saved)
    assert np.array_equal(second.strategy.m_t["w"], first.strategy.m_t["w"])


@pytest.mark.parametrize("aggregation, expected", [("mean", FedAvg), ("median", FedMedian),
                                                   ("trimmed-mean", FedTrimmedAvg)])
def test_the_propensity_rounds_take_the_runs_robust_aggregation_without_its_server_optimiser(aggregation, expected):
    config = RunConfig.from_mapping({"strategy": "fedadam", "aggregation": aggregation, "trim-fraction": 0.25,
                                     "update-clip-norm": 0.5, "min-sites": 3})
    strategy = build_propensity_strategy(config)
    assert type(strategy) is expected and strategy.min_train_nodes == 3
    assert getattr(strategy, "beta", 0.25) == 0.25
