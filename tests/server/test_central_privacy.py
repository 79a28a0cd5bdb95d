"""Central DP's ε with the project's patient weighting, and the combination it refuses."""

from __future__ import annotations

import pytest
from opacus.accountants import RDPAccountant

from server.central_privacy import central_epsilon
from shared.config import ConfigError, RunConfig


def _history(*weights: tuple[float, ...]) -> list[dict]:
    return [{"train": {f"site_{i}": {"num-examples": w} for i, w in enumerate(round_weights)}}
            for round_weights in weights]


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
