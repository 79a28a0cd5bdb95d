"""Central DP's ε with the project's patient weighting, and the combination it refuses."""

from __future__ import annotations

import pytest
from opacus.accountants import RDPAccountant

from server.central_privacy import central_epsilon
from shared.config import ConfigError, RunConfig
from shared.run_result import RoundRecord


def _history(*weights: tuple[float, ...]) -> list[RoundRecord]:
    return [RoundRecord(round=number, train={f"site_{i}": {"num-examples": w} for i, w in enumerate(round_weights)})
            for number, round_weights in enumerate(weights, start=1)]


def test_equal_weights_at_min_sites_give_flowers_own_noise_multiplier():
    """Four equal sites, min-sites 4: z_eff = z, so ε is Opacus's for the Gaussian mechanism without sampling."""
    config = RunConfig(update_clip_norm=0.5, central_dp_noise_multiplier=2.0, min_sites=4)
    result = central_epsilon(config, _history((100, 100, 100, 100), (100, 100, 100, 100), (90, 90, 90, 90)))
    accountant = RDPAccountant()
    accountant.history = [(2.0, 1.0, 3)]
    assert result["effective_noise_multiplier"] == pytest.approx([2.0, 2.0, 2.0])
    assert result["delta"] == pytest.approx(0.1 / 4)
    assert result["epsilon"] == pytest.approx(accountant.get_epsilon(delta=0.1 / 4), rel=1e-9)


def test_a_site_with_more_patients_weighs_more_and_the_guarantee_weakens():
    config = RunConfig(update_clip_norm=0.5, central_dp_noise_multiplier=2.0, min_sites=4)
    equal = central_epsilon(config, _history((100, 100, 100, 100)))
    skewed = central_epsilon(config, _history((700, 100, 100, 100)))  # one site holds 70% of the weight
    assert skewed["effective_noise_multiplier"][0] == pytest.approx(2.0 / (4 * 0.7))
    assert skewed["epsilon"] > equal["epsilon"]
    assert central_epsilon(RunConfig(), _history((100, 100))) is None  # no central noise, no central ε


def test_central_dp_with_a_coordinatewise_median_is_refused_with_its_reason():
    with pytest.raises(ConfigError, match="aggregation=mean"):
        RunConfig.from_mapping({"update-clip-norm": 0.5, "central-dp-noise-multiplier": 1.0, "aggregation": "median"})


def test_a_federation_with_central_noise_records_its_site_level_epsilon(tmp_path):
    """Through the ClientApp and the round loop: metrics.json carries central_dp, from the rounds' real weights."""
    from flwr.supercore.task_identity import TaskIdentity

    from client.flower.app import build_client_app
    from server.federation import run_federation
    from shared.config import run_directory
    from shared.run_result import RunResult
    from simulations.in_process import InProcessGrid
    from tests.factories import patient_table

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    for index, size in enumerate((200, 150, 120)):
        (tmp_path / "cohort" / f"site_{index}").mkdir(parents=True)
        patient_table(size, seed=index, site=f"s{index}").to_csv(tmp_path / "cohort" / f"site_{index}" /
                                                                  "patients.csv", index=False)
    config = RunConfig.from_mapping({"data-dir": str(tmp_path / "cohort"), "output-dir": str(tmp_path / "runs"),
                                     "run-name": "central", "num-rounds": 2, "dp": False, "min-sites": 3,
                                     "update-clip-norm": 0.5, "central-dp-noise-multiplier": 2.0,
                                     "recalibrate-response": False, "site-reports": False,
                                     "survival-interval-days": 180})
    run_federation(InProcessGrid(build_client_app(config.to_flower()), num_nodes=3), config,
                   run_directory(config, 1), progress=lambda line: None)
    saved = RunResult.read(run_directory(config, 1))
    weights = [saved.rounds[0].train[f"site_{i}"]["num-examples"] for i in range(3)]
    assert saved.central_dp["rounds"] == 2 and saved.central_dp["delta"] == pytest.approx(0.1 / 3)
    assert saved.central_dp["effective_noise_multiplier"][0] == pytest.approx(2.0 / (3 * max(weights) / sum(weights)))
    assert saved.central_dp["epsilon"] > 0
