"""SecAgg+ in the project's round loop, on Flower's simulation engine: the securely aggregated model equals the
plain weighted mean of the very models the sites trained, within SecAgg+'s quantisation error."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, Message, MessageType
from rich.console import Console

from shared.config import ConfigError, RunConfig
from simulations.main_job import run
from tests.factories import patient_table

CLIPPING_RANGE, QUANTIZATION_RANGE = 8.0, 2**22  # SecAggPlusWorkflow's defaults, which the coordinator keeps


class TrainedModels:
    """A client mod inside the SecAgg+ mod: keeps each site's trained model before it is masked (test only)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __call__(self, message: Message, context: Context, call_next) -> Message:
        reply = call_next(message, context)
        if message.metadata.message_type == MessageType.TRAIN and not reply.has_error():
            site = str(reply.content["site"]["site-id"])
            arrays = {k: v.numpy() for k, v in reply.content["arrays"].items()}
            np.savez(self.folder / f"{site}-{os.getpid()}.npz", num_examples=reply.content["metrics"]["num-examples"],
                     **arrays)
        return reply


@pytest.mark.slow
def test_the_secure_aggregate_is_the_weighted_mean_within_quantisation_error(tmp_path):
    cohort = tmp_path / "cohort"
    for index, size in enumerate((260, 200, 160)):
        (cohort / f"site_{index}").mkdir(parents=True)
        patient_table(size, seed=index, site=f"s{index}").to_csv(cohort / f"site_{index}" / "patients.csv",
                                                                  index=False)
    models = tmp_path / "models"
    models.mkdir()
    config = RunConfig.from_mapping({
        "data-dir": str(cohort), "output-dir": str(tmp_path), "run-name": "secure", "num-rounds": 1,
        "local-epochs": 1, "hidden-size": 16, "survival-interval-days": 180, "dp": False,
        "round-timeout-s": 600, "bootstrap-samples": 20, "secure-aggregation": True, "update-norm-ratio": 0,
        "secure-aggregation-max-weight": 1000, "site-reports": False})  # about the aggregate, not the reports
    run_dir, results = run(config, Console(quiet=True), client_mods=[TrainedModels(models)])

    assert set(results.rounds[0].train) == {"site_0", "site_1", "site_2"}  # figures still come in plain
    assert results.rounds[0].missing == {}
    trained = [np.load(path) for path in sorted(models.glob("*.npz"))]
    assert len(trained) == 3
    weights = np.array([float(t["num_examples"]) for t in trained])
    secure = torch.load(run_dir / "checkpoints" / "round_001.pt", weights_only=True)["model"]

    ratios = weights / config.secure_aggregation_max_weight
    step = 2 * CLIPPING_RANGE / QUANTIZATION_RANGE  # one quantisation level of (weight ratio × parameter)
    worst = 0.0
    gap_to_unweighted = 0.0
    for name, value in secure.items():
        stacked = np.stack([t[name].astype(np.float64) for t in trained])
        weighted = np.tensordot(weights, stacked, axes=1) / weights.sum()
        # stochastic rounding: each site's (ratio × value) is off by under one level, and the sum is divided by
        # the sum of the ratios; each ratio is rounded to half a level, which shifts the weights of the mean
        tolerance = len(trained) * step / ratios.sum() \
            + 4 * np.abs(stacked).max() * (0.5 / (ratios * QUANTIZATION_RANGE)).max() + 1e-6  # float32 storage
        error = np.abs(value.numpy().astype(np.float64) - weighted).max()
        assert error <= tolerance, (name, error, tolerance)
        worst = max(worst, error / tolerance)
        gap_to_unweighted = max(gap_to_unweighted, np.abs(weighted - stacked.mean(axis=0)).max() / tolerance)
    assert gap_to_unweighted > 10  # the check can tell the weighted mean from a plain one
    print(f"largest error / tolerance: {worst:.3f}; weighted vs unweighted mean: {gap_to_unweighted:.0f} × tolerance")


@pytest.mark.parametrize("change, named", [
    ({"aggregation": "median"}, "aggregation=mean"),
    ({"update-norm-ratio": 5.0}, "update-norm-ratio=0"),
    ({"update-clip-norm": 1.0}, "update-clip-norm=0"),
    ({"strategy": "fedadam"}, "fedavg or fedprox"),
    ({"min-sites": 1}, "min-sites >= 2"),
])
def test_secure_aggregation_refuses_what_needs_one_sites_model(change, named):
    base = {"secure-aggregation": True, "update-norm-ratio": 0}
    with pytest.raises(ConfigError, match=named.replace("(", r"\(")):
        RunConfig.from_mapping(base | change)
    RunConfig.from_mapping(base | {"strategy": "fedprox"})  # FedProx changes only what the sites train
