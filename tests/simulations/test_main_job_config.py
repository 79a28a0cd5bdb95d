"""The main job's configuration: RunConfig's defaults and its validation phases, switched off by flag."""

from __future__ import annotations

from shared.config import RunConfig
from simulations.main_job import argument_parser, config_from_arguments


def config_of(*argv: str) -> RunConfig:
    return config_from_arguments(argument_parser().parse_args(list(argv)))


def test_the_main_job_runs_the_cross_site_and_loso_phases_with_runconfigs_own_values():
    config = config_of()
    assert config.share_local_models and config.leave_one_site_out
    assert config.loso_rounds == RunConfig().loso_rounds == 2  # one place: RunConfig, mirrored in pyproject
    others = {"run_name", "share_local_models", "leave_one_site_out"}  # every other value is RunConfig's default
    assert config.model_dump(exclude=others) == RunConfig().model_dump(exclude=others)


def test_each_phase_is_switched_off_by_its_flag_and_set_values_win():
    assert not config_of("--no-loso").leave_one_site_out and config_of("--no-loso").share_local_models
    assert not config_of("--no-cross-site").share_local_models
    assert config_of("--set", "loso-rounds=3", "--rounds", "4").loso_rounds == 3
    assert not config_of("--set", "leave-one-site-out=false").leave_one_site_out


def test_each_option_sets_its_run_config_key():
    assert config_of("--rounds", "4").num_rounds == 4 and config_of("--strategy", "fedprox").strategy == "fedprox"
    assert not config_of("--no-dp").dp and config_of().dp
    assert config_of("--set", "dp=false").dp is False
    assert config_of("--set", "num-rounds=5", "--rounds", "4").num_rounds == 4  # an option wins over --set
    resumed = config_of("--resume", "/somewhere/runs/20240101-120000")
    assert resumed.resume_from == "/somewhere/runs/20240101-120000" and resumed.run_name == "20240101-120000"
    assert config_of("--data-dir", "cohort", "--output-dir", "out").model_dump(include={"data_dir", "output_dir"}) == {
        "data_dir": "cohort", "output_dir": "out"}
