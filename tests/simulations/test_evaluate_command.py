"""`oncofed-evaluate` on Flower's simulation engine: a registered model at its training sites and a new site."""

from __future__ import annotations

import json
import shutil

import pytest

from client.flower.app import build_client_app
from server.federation import run_federation
from shared.config import RunConfig, run_directory
from simulations.evaluate import main
from simulations.in_process import InProcessGrid
from tests.factories import patient_table

pytestmark = pytest.mark.slow


def test_the_command_evaluates_a_registered_model_at_a_new_site_without_training(tmp_path, capsys):
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1
    for index, site in enumerate(("north", "south")):
        (tmp_path / "train" / site).mkdir(parents=True)
        patient_table(200, seed=index, site=site).to_csv(tmp_path / "train" / site / "patients.csv", index=False)
        shutil.copytree(tmp_path / "train" / site, tmp_path / "all" / site)
    (tmp_path / "all" / "west").mkdir()
    patient_table(150, seed=7, site="west").to_csv(tmp_path / "all" / "west" / "patients.csv", index=False)
    trained = RunConfig.from_mapping({"data-dir": str(tmp_path / "train"), "output-dir": str(tmp_path / "runs"),
                                      "run-name": "model", "num-rounds": 1, "recalibrate-response": False,
                                      "site-reports": False, "survival-interval-days": 180, "seed": 7,
                                      "test-fraction": 0.25})
    run_federation(InProcessGrid(build_client_app(trained.to_flower()), num_nodes=2), trained,
                   run_directory(trained, 1), progress=lambda line: None)

    code = main(["--model", str(tmp_path / "runs" / "model"), "--sites", str(tmp_path / "all"),
                 "--output-dir", str(tmp_path / "evaluations"), "--set", "bootstrap-samples=20",
                 "--set", "shap-patients=0"])
    printed = capsys.readouterr().out
    assert code == 0, printed
    (run_dir,) = (tmp_path / "evaluations").iterdir()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["seed"], config["test-fraction"], config["survival-interval-days"]) == (7, 0.25, 180)  # the model's
    assert sorted(metrics["internal"]) == ["north", "south"] and list(metrics["external"]) == ["west"]
    assert metrics["external"]["west"]["num-examples"] == 150
    assert all(metrics["internal"][s]["num-examples"] < 200 for s in ("north", "south"))
    assert (run_dir / "sites" / "west" / "report.html").is_file()
    assert not (run_dir / "sites" / "west" / "privacy_ledger.json").exists()  # nothing trained, nothing spent
    assert "external (west)" in printed and "internal (north, south)" in printed
