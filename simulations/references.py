"""References only a simulation can give: pooled centralised training, and the synthetic generator's oracle.

Both need what no real consortium has: every site's training rows in one place, and the ground truth.
They are computed after the federated run, on the same splits: the main job hands `references` to the ServerApp
(server/app.py), which adds them to metrics.json and the consortium report before writing either, once (the server
never imports this module).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from client.data.loader import load_contract_csv
from client.data.site import Site, assign_splits, simulated_site_dirs, site_from_config
from client.evaluation.validation import headline_intervals
from client.training.dp_sgd import LocalTrainingPlan, PrivacyPlan, train_locally
from client.training.privacy import calibrate_noise, default_delta, steps_per_round
from server.consortium_report import ReferenceRow
from server.consortium_summary import estimates
from shared.config import RunConfig, cohort_directory
from shared.encoding import SurvivalGrid, encode_cohort
from shared.harmonisation import NormalisationStats, pool_summaries, summarise_site
from shared.metrics import Estimate, EvaluationSettings
from shared.model import OncoFedNet, model_for

GROUND_TRUTH_DIR = "_ground_truth"  # simulations/cohort/io.py's; the generator is imported only when a cohort has one

POOLED_LABEL = "Pooled centralised (simulation only)"
ORACLE_LABEL = "Oracle (synthetic ground truth)"


def simulated_sites(config: RunConfig) -> list[Site]:
    """Every simulated site with the same data and splits its ClientApp uses (client/data/site.py open_site)."""
    sites = []
    for folder in simulated_site_dirs(config):
        if (folder / "site.toml").is_file():
            sites.append(site_from_config(folder / "site.toml", config))
            continue
        patients = load_contract_csv(folder / "patients.csv")
        sites.append(Site(site_id=folder.name, patients=patients,
                          split=assign_splits(patients["patient_id"], config.seed, config.validation_fraction,
                                              config.test_fraction),
                          target_epsilon=config.target_epsilon, target_delta=config.target_delta,
                          min_cell_size=config.min_cell_size, secure_mode=config.secure_mode, state_dir=folder,
                          secret_dp_noise=False))
    return sites


def train_pooled(sites: list[Site], config: RunConfig, stats: NormalisationStats) -> OncoFedNet:
    """The federation's model trained centrally on the union of the training splits: same start, epochs × rounds.

    With DP on, the noise is calibrated so the whole training spends the run's target ε (δ from the union's size).
    """
    grid = SurvivalGrid.from_config(config)
    union = pd.concat([site.part("train") for site in sites], ignore_index=True)
    cohort = encode_cohort(union, stats, grid)
    model = model_for(config)
    privacy = None
    if config.dp:
        sample_rate, steps = steps_per_round(len(cohort), config.batch_size, config.local_epochs)
        delta = config.target_delta or default_delta(len(cohort))
        sigma = calibrate_noise(config.target_epsilon, delta, sample_rate, steps * config.num_rounds)
        privacy = PrivacyPlan(noise_multiplier=sigma, max_grad_norm=config.max_grad_norm,
                              secure_mode=config.secure_mode, secret_noise=False)  # a reference: reproducible
    for round_number in range(1, config.num_rounds + 1):
        if round_number > 1:  # a fresh module each round: Opacus hooks the one it trains
            trained, model = model, model_for(config)
            model.load_state_dict(trained.state_dict())
        train_locally(model, cohort, LocalTrainingPlan.from_config(config, seed=config.seed * 7 + round_number),
                      privacy)
    return model


def pooled_reference(sites: list[Site], config: RunConfig) -> tuple[ReferenceRow, dict[str, dict[str, float]]]:
    """Pooled centralised training evaluated on each site's test split (figures with bootstrap intervals)."""
    stats = pool_summaries([summarise_site(site.part("train"), min_cell_size=site.min_cell_size) for site in sites])
    model = train_pooled(sites, config, stats)
    grid = SurvivalGrid.from_config(config)
    figures = {}
    for site in sites:
        settings = EvaluationSettings.from_config(config, site.min_cell_size)
        test = site.part("test")
        figures[site.site_id] = {"num-examples": len(test)} | headline_intervals(
            model, test, stats, grid, settings, np.random.default_rng(config.seed))
    privacy = f"DP-SGD at ε={config.target_epsilon:g} over the union" if config.dp else "no DP"
    row = ReferenceRow(label=POOLED_LABEL, description=f"the same model trained centrally on the union of every "
                       f"site's training split for {config.num_rounds} × {config.local_epochs} epochs ({privacy}); "
                       f"impossible in a real consortium, it bounds what federation can recover",
                       sites={site: estimates(f) for site, f in figures.items()})
    return row, figures


def oracle_reference(sites: list[Site], config: RunConfig) -> tuple[ReferenceRow, dict[str, dict[str, float]]] | None:
    """The generator's true risks on each site's test split; None when the cohort has no ground truth."""
    root = cohort_directory(config)
    if not (root / GROUND_TRUTH_DIR).is_dir():
        return None
    # the generator reads the default dictionary's vocabulary: another consortium's app (a real data set's) never
    # has a ground truth, and never imports it
    from simulations.cohort.io import read_ground_truth
    from simulations.cohort.oracle import oracle_metrics

    figures: dict[str, dict[str, float]] = {}
    for site in sites:
        test = site.part("test")
        truth = read_ground_truth(root, [site.site_id])
        oracle = oracle_metrics(truth, patient_ids=list(test["patient_id"].astype(str)))
        shown = {"num-examples": len(test)}
        counts = {"response-auc": min(oracle.n_responders, oracle.n_response_evaluable - oracle.n_responders),
                  "pfs-cindex": oracle.n_pfs_events, "os-cindex": oracle.n_os_events}
        values = {"response-auc": oracle.response_auc, "pfs-cindex": oracle.pfs_c_index, "os-cindex": oracle.os_c_index}
        for key, value in values.items():
            if counts[key] >= site.min_cell_size and math.isfinite(value):
                shown[key] = value
        figures[site.site_id] = shown
    row = ReferenceRow(label=ORACLE_LABEL, description="the synthetic generator's true response probability and "
                       "survival (from the complete, unmasked characteristics): the best discrimination any model "
                       "could reach on these patients (point values)",
                       sites={site: {k: Estimate(value=e.value) for k, e in estimates(f).items()}
                              for site, f in figures.items()})
    return row, figures


def references(config: RunConfig) -> tuple[list[ReferenceRow], dict[str, dict[str, dict[str, float]]]]:
    """Every simulation reference: rows for the consortium report and figures for metrics.json (server.federation
    References)."""
    sites = simulated_sites(config)
    rows, saved = [], {}
    pooled, figures = pooled_reference(sites, config)
    rows.append(pooled)
    saved["pooled"] = figures
    oracle = oracle_reference(sites, config)
    if oracle is not None:
        rows.append(oracle[0])
        saved["oracle"] = oracle[1]
    return rows, saved

