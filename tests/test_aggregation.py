"""A poisoned site on Flower's simulation engine: NaN updates are rejected, a scaled update is rejected (by the
update-size screen) or bounded (by the coordinate-wise median), and the final model stays close to the clean run's.

The check cannot pass vacuously: the same poisoning with every defence off must ruin the model.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from flwr.app import Array, ArrayRecord, Context, Message, MessageType
from rich.console import Console

from shared.config import DEFAULT_COHORT_DIR, RunConfig
from shared.run_result import RunResult
from simulations.cohort import default_consortium, generate_consortium, write_consortium
from simulations.main_job import run

pytestmark = pytest.mark.slow

SITES = ("metro_academic", "coastal_regional", "pacific_medical", "southside_public")
PATIENTS_PER_SITE = 400
SCALED_SITE, NAN_SITE = "coastal_regional", "pacific_medical"
SCALE = -30.0  # a boosted, sign-flipped update: the classic model-replacement attack


class PoisonedSites:
    """A Flower client mod: the named sites' training replies are replaced after the site has trained.

    `scaled`: global + SCALE × (site model − global); `nan`: every parameter NaN. Other sites are untouched.
    """

    def __init__(self, scaled: str | None = None, nan: str | None = None) -> None:
        self.scaled, self.nan = scaled, nan

    def __call__(self, message: Message, context: Context, call_next) -> Message:
        reply = call_next(message, context)
        if message.metadata.message_type != MessageType.TRAIN or reply.has_error():
            return reply
        site = str(reply.content["site"]["site-id"])
        if site not in (self.scaled, self.nan):
            return reply
        sent, trained = message.content["arrays"], reply.content["arrays"]
        poisoned = {}
        for name in trained.keys():
            local, global_ = trained[name].numpy(), sent[name].numpy()
            value = np.full_like(local, np.nan) if site == self.nan else global_ + SCALE * (local - global_)
            poisoned[name] = Array(np.asarray(value, dtype=local.dtype))
        reply.content["arrays"] = ArrayRecord(poisoned)
        return reply


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory):
    """400 patients from each of four default-cohort hospitals (the cohort's outcomes carry real signal)."""
    root = tmp_path_factory.mktemp("cohort")
    source = DEFAULT_COHORT_DIR.expanduser()
    if not all((source / site / "patients.csv").is_file() for site in SITES):  # a clean machine: generate it
        source = write_consortium(generate_consortium(default_consortium()), tmp_path_factory.mktemp("default"))
    for site in SITES:
        (root / site).mkdir()
        pd.read_csv(source / site / "patients.csv", dtype=str, keep_default_na=False).head(PATIENTS_PER_SITE) \
            .to_csv(root / site / "patients.csv", index=False)
    return root


def federate(data_dir, output_dir, name: str, mods=None, **changes) -> dict:
    values = {"data-dir": str(data_dir), "output-dir": str(output_dir), "run-name": name, "num-rounds": 3,
              "local-epochs": 1, "hidden-size": 16, "survival-interval-days": 180, "dp": False,
              "min-sites": 2, "round-timeout-s": 600, "bootstrap-samples": 20,
              "batch-size": 32, "learning-rate": 0.01,  # several steps a round: 240 training patients a site
              "site-reports": False} | changes  # the test figures only: the same point figures, without SHAP and plots
    _, results = run(RunConfig.from_mapping(values), Console(quiet=True), client_mods=mods)
    return results


def figures(results: RunResult) -> dict[str, float]:
    assert not results.test_missing, results.test_missing
    mean = results.test_mean
    shown = {key: round(mean[key], 3) for key in ("response-auc", "pfs-cindex", "os-cindex")}
    print(f"{results.config['run-name']}: test {shown}; last round out: {results.rounds[-1].missing}")
    return {key: mean[key] for key in ("response-auc", "pfs-cindex", "os-cindex")}


TOLERANCE = 0.03  # the screened run learns from 2 of the 4 sites; measured gaps ≤ 0.006 (docs/aggregation.md)
# the coordinate-wise median of two honest updates and a hostile one costs the small DP-sized network more:
# measured gaps 0.043 / 0.022 / 0.030 (docs/aggregation.md); still far from the undefended run's collapse to 0.5
MEDIAN_TOLERANCE = 0.06
RUINED = 0.08  # the undefended run must lose at least this much on the mean of the three figures


@pytest.fixture(scope="module")
def clean(four_sites, tmp_path_factory) -> dict[str, float]:
    return figures(federate(four_sites, tmp_path_factory.mktemp("runs"), "clean"))


def test_without_any_defence_one_scaled_site_ruins_the_model(four_sites, clean, tmp_path):
    """The premise of the other tests: a plain mean with the size screen off takes the attack in full."""
    results = federate(four_sites, tmp_path, "undefended", [PoisonedSites(scaled=SCALED_SITE)],
                       **{"update-norm-ratio": 0})
    assert all(not r.missing for r in results.rounds)  # nothing was rejected
    assert np.mean(list(figures(results).values())) < np.mean(list(clean.values())) - RUINED


def test_nan_and_scaled_updates_are_rejected_with_their_reasons_and_the_model_stays_close_to_clean(
        four_sites, clean, tmp_path):
    results = federate(four_sites, tmp_path, "screened", [PoisonedSites(scaled=SCALED_SITE, nan=NAN_SITE)])
    for record in results.rounds:
        assert "NaN or infinite" in record.missing[NAN_SITE]
        assert "update-norm-ratio" in record.missing[SCALED_SITE]
        assert set(record.train) == set(SITES) - {NAN_SITE, SCALED_SITE}
        honest = [record.update_distance[s] for s in SITES if s not in (NAN_SITE, SCALED_SITE)]
        assert record.update_distance[SCALED_SITE] > 10 * max(honest)
    for key, value in figures(results).items():
        assert abs(value - clean[key]) <= TOLERANCE, (key, value, clean[key])


def test_the_median_bounds_a_scaled_update_that_the_size_screen_lets_through(four_sites, clean, tmp_path):
    results = federate(four_sites, tmp_path, "median", [PoisonedSites(scaled=SCALED_SITE, nan=NAN_SITE)],
                       **{"update-norm-ratio": 0, "aggregation": "median"})
    for record in results.rounds:
        assert SCALED_SITE in record.train and set(record.missing) == {NAN_SITE}
    for key, value in figures(results).items():
        assert abs(value - clean[key]) <= MEDIAN_TOLERANCE, (key, value, clean[key])
