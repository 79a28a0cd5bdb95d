"""Governance over Flower's deployment engine: a SuperLink with TLS and SuperNode authentication, SuperNodes as
separate processes on 127.0.0.1, `flwr run`.

1. A SecAgg+ training round: the coordinator's aggregate equals the plain weighted mean of the models the sites
   trained (recomputed here from each site's data, the round's instruction and the same seeds), within SecAgg+'s
   quantisation error.
2. An evaluation-only run of that model once a fourth, external site has joined: every site writes its report,
   training sites on their test splits and the new site on all its patients; with release DP on, each site's
   ledger records the release of its figures, and no ε is spent on the weights.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from client.flower.app import train_round
from client.training.privacy import PrivacyLedger
from client.data.site import site_from_config
from server.checkpoint import load_checkpoint
from shared.config import RunConfig
from shared.messages import PhaseInstruction
from shared.model import model_for
from tests.deploy.harness import Consortium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

TRAINING_SITES = {"alpha": 150, "beta": 100, "gamma": 70}  # patients: different sizes, so weighting shows
EXTERNAL = "external"
CLIPPING_RANGE, QUANTIZATION_RANGE = 8.0, 2**22  # SecAggPlusWorkflow's defaults, which the coordinator keeps
SECURE = {"num-rounds": 1, "hidden-size": 16, "bootstrap-samples": 20, "min-sites": 2, "round-timeout-s": 240.0,
          "secure-aggregation": True, "update-norm-ratio": 0, "secure-aggregation-max-weight": 1000, "dp": False,
          "recalibrate-response": False, "site-reports": False}
TIMEOUT_S = 900  # generous: every ClientApp message starts a Python that imports torch on a loaded 2-core machine


@pytest.fixture(scope="module")
def consortium(tmp_path_factory):
    consortium = Consortium(tmp_path_factory.mktemp("governance"))
    configs = {site: consortium.make_site(site, seed, patients=n)
               for seed, (site, n) in enumerate(TRAINING_SITES.items())}
    configs[EXTERNAL] = consortium.make_site(EXTERNAL, 11, patients=90)
    try:
        consortium.start_with_registered_sites(list(configs))
        for site in TRAINING_SITES:  # the external site joins after the model is trained
            consortium.start_site(site, configs[site])
        consortium.wait_for(lambda: consortium.online_nodes() == len(TRAINING_SITES), 120, "three SuperNodes online")
        consortium.site_configs = configs
        yield consortium
    finally:
        consortium.stop_all()


def test_a_secure_aggregation_round_over_the_real_superlink_is_the_plain_weighted_mean(consortium):
    run_dir = consortium.runs / "secure"
    run_id = consortium.submit({**SECURE, "output-dir": str(consortium.runs), "run-name": "secure"})
    consortium.wait_for(lambda: (run_dir / "consortium_report.html").is_file(), TIMEOUT_S, "the consortium report",
                        run_id)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["rounds"][0]["train"]) == set(TRAINING_SITES), metrics["rounds"][0]["missing"]
    assert metrics["rounds"][0]["missing"] == {}
    config = RunConfig.from_mapping(metrics["config"])
    state, _, _ = load_checkpoint(run_dir)
    secure = torch.load(run_dir / "checkpoints" / "round_001.pt", weights_only=True)["model"]
    initial = model_for(config).state_dict()
    trained, weights = [], []
    for site_id in TRAINING_SITES:  # what each site trained in round 1: its data, the instruction, the same seeds
        site = site_from_config(consortium.site_configs[site_id], config)
        model = model_for(config)
        model.load_state_dict(initial)
        figures = train_round(site, config, state.normalisation, model, 1, str(run_id), PhaseInstruction())
        assert figures["num-examples"] == metrics["rounds"][0]["train"][site_id]["num-examples"]
        trained.append({k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()})
        weights.append(float(figures["num-examples"]))
    weights = np.array(weights)
    ratios = weights / config.secure_aggregation_max_weight
    step = 2 * CLIPPING_RANGE / QUANTIZATION_RANGE
    gap_to_unweighted = 0.0
    for name, value in secure.items():
        stacked = np.stack([t[name] for t in trained])
        weighted = np.tensordot(weights, stacked, axes=1) / weights.sum()
        tolerance = len(trained) * step / ratios.sum() \
            + 4 * np.abs(stacked).max() * (0.5 / (ratios * QUANTIZATION_RANGE)).max() + 1e-6
        error = np.abs(value.numpy().astype(np.float64) - weighted).max()
        assert error <= tolerance, (name, error, tolerance)
        gap_to_unweighted = max(gap_to_unweighted, np.abs(weighted - stacked.mean(axis=0)).max() / tolerance)
    assert gap_to_unweighted > 10  # the check tells the weighted mean from a plain one


def test_an_evaluation_only_run_writes_reports_at_a_new_site_and_charges_only_the_released_figures(consortium):
    model_dir = consortium.runs / "secure"
    assert (model_dir / "checkpoints" / "latest.pt").is_file(), "needs the secure run's model (previous test)"
    consortium.start_site(EXTERNAL, consortium.site_configs[EXTERNAL])
    consortium.wait_for(lambda: consortium.online_nodes() == len(TRAINING_SITES) + 1, 120, "the external site online")
    run_dir = consortium.runs / "evaluation"
    run_id = consortium.submit({"evaluate-model": str(model_dir), "release-epsilon-share": 0.2, "min-sites": 4,
                                "bootstrap-samples": 20, "shap-patients": 0, "round-timeout-s": 300.0,
                                "output-dir": str(consortium.runs), "run-name": "evaluation"})
    consortium.wait_for(lambda: (run_dir / "consortium_report.html").is_file(), TIMEOUT_S, "the evaluation report",
                        run_id)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["missing"] == {}
    assert sorted(metrics["internal"]) == sorted(TRAINING_SITES) and list(metrics["external"]) == [EXTERNAL]
    assert metrics["model"]["provenance"]["data_fingerprints"].keys() == TRAINING_SITES.keys()
    for site, figures in {**metrics["internal"], **metrics["external"]}.items():
        assert set(figures) <= {"num-examples", "response-auc", "response-auc-lower", "response-auc-upper",
                                "pfs-cindex", "pfs-cindex-lower", "pfs-cindex-upper", "os-cindex",
                                "os-cindex-lower", "os-cindex-upper"}, figures  # released under DP: nothing else
        state = consortium.site_configs[site].parent / "state"
        assert (state / "report.html").is_file()
        ledger = PrivacyLedger.model_validate_json((state / "privacy_ledger.json").read_text())
        (entry,) = [e for e in ledger.entries if e.run_id.startswith(f"{run_id}:")]
        assert entry.phase == "release" and entry.run_id == f"{run_id}:release:evaluation-only-figures"
        assert ledger.epsilon(group="release") == pytest.approx(0.2 * 50.0, rel=0.01)  # the site's share of ε=50
        assert all(e.phase == "release" for e in ledger.entries)  # no ε was spent on weights in either run
    html = (consortium.site_configs[EXTERNAL].parent / "state" / "report.html").read_text()
    assert "all its patients (external)" in html
