"""The coordinator's one round function: the federation and every validation phase screen and aggregate alike."""

from __future__ import annotations

from uuid import uuid4

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict

from server.coordinator import Coordinator
from server.propensity import propensity_phase
from server.strategies import build_strategy
from server.validation import TrainingRounds, run_leave_one_site_out
from shared.config import RunConfig
from shared.harmonisation import pool_summaries, summarise_site
from shared.messages import METRICS_KEY, MODEL_ARRAYS_KEY, SITE_ID_KEY, SITE_KEY, PhaseInstruction
from shared.propensity import PROPENSITY_TRAINING, build_propensity_model
from tests.factories import patient_table

SITES = {11: "north", 12: "south", 13: "east", 14: "west"}
OVERSIZED = "west"  # sends its update scaled far beyond the others
BROKEN = "south"  # in the propensity test: sends NaN


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


class Sites:
    """Four sites: each trains by moving the model a little (its own direction); one moves it 1000 × further."""

    def __init__(self, broken: str = "") -> None:
        self.trained: list[str] = []
        self.message_types: set[str] = set()
        self.broken = broken

    def get_node_ids(self) -> list[int]:
        return list(SITES)

    def send_and_receive(self, messages, timeout):
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            site = SITES[message.metadata.dst_node_id]
            content = RecordDict({SITE_KEY: ConfigRecord({SITE_ID_KEY: site}),
                                  METRICS_KEY: MetricRecord({"num-examples": 50.0})})
            if message.metadata.message_type.startswith(MessageType.TRAIN):
                self.trained.append(site)
                self.message_types.add(message.metadata.message_type)
                step = 0.01 * (1 + list(SITES.values()).index(site)) * (1000 if site == OVERSIZED else 1)
                step = float("nan") if site == self.broken else step
                arrays = message.content[MODEL_ARRAYS_KEY]
                content[MODEL_ARRAYS_KEY] = ArrayRecord({k: torch.from_numpy(v.numpy() + step)
                                                          for k, v in arrays.items()})
            replies.append(Message(content, reply_to=message))
        return replies


def coordinator_of(sites: Sites, config: RunConfig, progress=lambda line: None) -> Coordinator:
    return Coordinator(sites, config, progress=progress, names=dict(SITES),
                       stats=pool_summaries([summarise_site(patient_table(40), min_cell_size=1)]))


def test_a_leave_one_site_out_round_screens_an_oversized_update() -> None:
    config = RunConfig.from_mapping({"leave-one-site-out": True, "loso-rounds": 1, "min-sites": 2,
                                     "update-norm-ratio": 5.0})
    sites = Sites()
    coordinator = coordinator_of(sites, config)
    initial = ArrayRecord({"w": torch.zeros(3, 2), "b": torch.zeros(2)})
    rows = {row.held_out_site: row for row in
            run_leave_one_site_out(coordinator, initial, TrainingRounds(federated=1, validation=3))}
    for held_out, row in rows.items():
        assert held_out not in row.trained_on  # the held-out site never trains in its own federation
        if held_out == OVERSIZED:
            assert row.trained_on == ["east", "north", "south"] and not row.missing
        else:  # the oversized update is left out with its figures as the reason, as in the federation
            assert OVERSIZED not in row.trained_on and len(row.trained_on) == 2
            assert "update rejected" in row.missing[OVERSIZED] and "update-norm-ratio" in row.missing[OVERSIZED]
        assert row.rounds == 1
    assert sites.trained.count(OVERSIZED) == 3  # it was asked to train in every federation but its own


def test_a_propensity_round_screens_a_nan_and_an_oversized_update_like_a_training_round(tmp_path) -> None:
    config = RunConfig.from_mapping({"propensity-weighting": True, "propensity-rounds": 1, "min-sites": 2,
                                     "update-norm-ratio": 5.0})
    initial = ArrayRecord(build_propensity_model(config.seed).state_dict())
    training_sites = Sites(broken=BROKEN)
    trained = coordinator_of(training_sites, config).train_round(build_strategy(config), 1, initial,
                                                                 PhaseInstruction())
    assert sorted(trained.replies.figures) == ["east", "north"]
    assert "NaN" in trained.replies.missing[BROKEN] and "update-norm-ratio" in trained.replies.missing[OVERSIZED]

    sites, lines = Sites(broken=BROKEN), []
    released = propensity_phase(coordinator_of(sites, config, lines.append), tmp_path)
    assert sites.message_types == {PROPENSITY_TRAINING} and sorted(sites.trained) == sorted(SITES.values())
    assert any(line.startswith(f"{OVERSIZED}: update rejected") for line in lines)
    assert lines[-1] == "propensity model round 1/1: 2 sites"
    mean_step = (0.01 * 1 + 0.01 * 3) / 2  # north and east, equal weights: the NaN and the oversized update left out
    for name, value in released.items():
        torch.testing.assert_close(value.numpy(), initial[name].numpy() + mean_step)
    assert (tmp_path / "checkpoints" / "propensity.pt").is_file()
