import tomllib
from pathlib import Path

import pytest

from shared.config import ConfigError, RunConfig

ROOT = Path(__file__).resolve().parents[2]


def test_pyproject_run_config_is_the_typed_default():
    """The Flower app's [tool.flwr.app.config] and RunConfig must be one source, not two."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["flwr"]["app"]["config"] == RunConfig().to_flower()


@pytest.mark.parametrize("values, field, words", [
    ({"strategy": "fedsgd"}, "strategy", "'fedavg', 'fedprox', 'fedadam' or 'fedyogi'"),
    ({"target-epsilon": 0}, "target-epsilon", "greater than 0"),
    ({"target-epsilon": -1.5}, "target-epsilon", "greater than 0"),
    ({"min-sites": 0}, "min-sites", "greater than or equal to 1"),
    ({"num-rounds": 0}, "num-rounds", "greater than or equal to 1"),
    ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
])
def test_bad_configuration_fails_naming_the_field_and_what_is_allowed(values, field, words):
    with pytest.raises(ConfigError) as raised:
        RunConfig.from_mapping(values)
    assert f"'{field}'" in str(raised.value) and words in str(raised.value)


def test_overrides_round_trip_through_flower_values():
    config = RunConfig.from_mapping({"strategy": "fedadam", "num-rounds": 3, "dp": False})
    assert RunConfig.from_mapping(config.to_flower()) == config
