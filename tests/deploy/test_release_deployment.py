"""Release DP over Flower's deployment engine (TLS, SuperNode authentication, `flwr run`): a DP training run with
`release-epsilon-share` charges the harmonisation statistics, the rounds and the released test figures to each
site's one ledger, so the site's ε covers every release (docs/privacy.md). Fresh sites, so their ledgers hold
only this run.
"""

from __future__ import annotations

import json

import pytest

from client.training.privacy import PrivacyLedger
from tests.deploy.harness import Consortium

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SITES = {"alpha": 150, "beta": 100}
SITE_EPSILON = 50.0  # tests.deploy.harness.Consortium.make_site
RELEASED = {"num-rounds": 1, "release-epsilon-share": 0.2, "recalibrate-response": False, "min-sites": 2,
            "bootstrap-samples": 20, "shap-patients": 0, "round-timeout-s": 300.0}
TIMEOUT_S = 900  # every ClientApp message starts a Python that imports torch


def test_a_dp_run_with_release_noise_charges_harmonisation_rounds_and_figures_to_one_ledger(tmp_path):
    consortium = Consortium(tmp_path)
    configs = {site: consortium.make_site(site, seed, patients=n) for seed, (site, n) in enumerate(SITES.items())}
    try:
        consortium.start_with_registered_sites(list(configs))
        for site, config in configs.items():
            consortium.start_site(site, config)
        consortium.wait_for(lambda: consortium.online_nodes() == len(SITES), 120, "two SuperNodes online")
        run_dir = consortium.runs / "released"
        run_id = consortium.submit({**RELEASED, "output-dir": str(consortium.runs), "run-name": "released"})
        consortium.wait_for(lambda: (run_dir / "metrics.json").is_file(), TIMEOUT_S, "the run's metrics", run_id)
    finally:
        consortium.stop_all()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert set(metrics["rounds"][0]["train"]) == set(SITES), metrics["rounds"][0]["missing"]
    for site, config in configs.items():
        assert not any(key.startswith(("sub:", "shap:", "test-loss")) for key in metrics["test"][site])
        ledger = PrivacyLedger.model_validate_json((config.parent / "state" / "privacy_ledger.json").read_text())
        assert [entry.phase for entry in ledger.entries] == ["release", "federated", "release"]
        assert [e.run_id.rsplit(":", 1)[-1] for e in ledger.entries if e.phase == "release"] == \
               ["harmonisation", "test-figures"]
        assert ledger.epsilon() == pytest.approx(SITE_EPSILON, rel=0.01)  # one ε: every release composed
        assert ledger.epsilon(group="release") == pytest.approx(0.2 * SITE_EPSILON, rel=0.01)
        assert ledger.epsilon(group="federated") < ledger.epsilon()
