"""The compute of a federated round without Flower or Ray, and DP-SGD's price per epoch (for performance.py).

Both load and encode the sites' data and calibrate the noise before timing, so only sample passes are timed.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def plain_loop_round(cohort: Path | None, overrides: dict[str, Any], dp: bool) -> Callable[[], float]:
    """The compute of one round without Flower: every site's local training, then its validation figures (loss,
    response AUC, PFS and OS C-index: the evaluate_cohort call a site answers an evaluate message with).

    Data are loaded and encoded, and the noise calibrated, before timing: a round's work at the sites only.
    Returns a function that runs one such round and returns its seconds.
    """
    from flwr.app import Context, RecordDict

    from client.data.site import open_site, simulated_site_dirs
    from client.evaluation.cohort import evaluate_cohort
    from client.training.dp_sgd import LocalTrainingPlan, PrivacyPlan, train_locally
    from client.training.privacy import calibrate_noise, default_delta, steps_per_round
    from shared.config import RunConfig
    from shared.encoding import SurvivalGrid, encode_cohort
    from shared.harmonisation import pool_summaries, summarise_site
    from shared.model import model_for

    config = RunConfig.from_mapping({**overrides, "dp": dp, **({"data-dir": str(cohort)} if cohort else {})})
    grid = SurvivalGrid.from_config(config)
    folders = simulated_site_dirs(config)
    sites = [open_site(Context(run_id=0, node_id=i, node_config={"partition-id": i}, state=RecordDict(),
                               run_config={}), config) for i in range(len(folders))]
    stats = pool_summaries([summarise_site(s.part("train"), min_cell_size=s.min_cell_size) for s in sites])
    prepared = []
    for index, site in enumerate(sites):
        train, validation = encode_cohort(site.part("train"), stats, grid), encode_cohort(site.part("validation"), stats, grid)
        privacy = None
        if config.dp:
            rate, steps = steps_per_round(len(train), config.batch_size, config.local_epochs)
            sigma = calibrate_noise(config.target_epsilon, default_delta(len(train)), rate, steps * config.num_rounds)
            privacy = PrivacyPlan(noise_multiplier=sigma, max_grad_norm=config.max_grad_norm, secure_mode=False,
                                  secret_noise=False)
        plan = LocalTrainingPlan.from_config(config, seed=config.seed + index)
        prepared.append((train, validation, site.part("validation"), site.min_cell_size, plan, privacy))
    initial = model_for(config).state_dict()

    def one_round() -> float:
        started = time.perf_counter()
        for train, validation, patients, min_cell_size, plan, privacy in prepared:
            model = model_for(config)
            model.load_state_dict(initial)
            train_locally(model, train, plan, privacy)
            evaluate_cohort(model, patients, validation, grid, min_cell_size, "validation")
        return time.perf_counter() - started

    return one_round


def dp_epoch_cost(cohort: Path | None, overrides: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Seconds per epoch of the largest site's local training, with Opacus DP-SGD in each of its per-sample
    gradient modes and without DP, alternated."""
    from flwr.app import Context, RecordDict

    from client.data.site import open_site, simulated_site_dirs
    from client.training.dp_sgd import GRAD_SAMPLE_MODES, LocalTrainingPlan, PrivacyPlan, train_locally
    from client.training.privacy import calibrate_noise, default_delta, steps_per_round
    from shared.config import RunConfig
    from shared.encoding import SurvivalGrid, encode_cohort
    from shared.harmonisation import pool_summaries, summarise_site
    from shared.model import model_for

    config = RunConfig.from_mapping({**overrides, **({"data-dir": str(cohort)} if cohort else {})})
    grid = SurvivalGrid.from_config(config)
    sites = [open_site(Context(run_id=0, node_id=i, node_config={"partition-id": i}, state=RecordDict(),
                               run_config={}), config) for i in range(len(simulated_site_dirs(config)))]
    site = max(sites, key=lambda s: len(s.part("train")))
    stats = pool_summaries([summarise_site(s.part("train"), min_cell_size=s.min_cell_size) for s in sites])
    cohort_train = encode_cohort(site.part("train"), stats, grid)
    rate, steps = steps_per_round(len(cohort_train), config.batch_size, config.local_epochs)
    calibrate_started = time.perf_counter()
    search = getattr(calibrate_noise, "__wrapped__", calibrate_noise)  # the search itself, not its memo
    sigma = search(config.target_epsilon, default_delta(len(cohort_train)), rate, steps * config.num_rounds)
    calibrate_seconds = time.perf_counter() - calibrate_started
    plan = LocalTrainingPlan.from_config(config, seed=config.seed)
    modes = {"no_dp": None, **{f"dp_{mode}": PrivacyPlan(noise_multiplier=sigma, max_grad_norm=config.max_grad_norm,
                                                          secure_mode=False, grad_sample_mode=mode)
                               for mode in GRAD_SAMPLE_MODES}}
    timings: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(repeats + 1):  # the first round warms up imports and allocators; it is not kept
        for name, chosen in modes.items():
            model = model_for(config)
            started = time.perf_counter()
            train_locally(model, cohort_train, plan, chosen)
            timings[name].append((time.perf_counter() - started) / config.local_epochs)
    seconds = {name: statistics.median(runs[1:]) for name, runs in timings.items()}
    default = f"dp_{PrivacyPlan.grad_sample_mode}"
    return {"site": site.site_id, "train_patients": len(cohort_train), "epochs_per_timing": config.local_epochs,
            "seconds_per_epoch_dp": seconds[default], "seconds_per_epoch_no_dp": seconds["no_dp"],
            "ratio": seconds[default] / seconds["no_dp"], "grad_sample_mode": PrivacyPlan.grad_sample_mode,
            "seconds_per_epoch": seconds,
            "ratio_by_mode": {mode: seconds[f"dp_{mode}"] / seconds["no_dp"] for mode in GRAD_SAMPLE_MODES},
            "noise_calibration_s": calibrate_seconds, "runs": {name: runs[1:] for name, runs in timings.items()},
            "note": "each timing includes Opacus's make_private (DP) or the plain DataLoader (no DP); one thread; "
                    "the modes are Opacus's grad_sample_mode (client/training/dp_sgd.py), alternated per repeat"}
