"""End to end on Flower's simulation engine: a small federation writes its run directory, resumes from a
checkpoint, and sends nothing but allowed aggregates and model parameters over the wire."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import torch
from flwr.app import Context, Message
from rich.console import Console

from client.outbox import COUNT_KEYS, FIGURE_KEYS
from client.site_report import SiteEvaluation
from shared.config import RunConfig
from shared.encoding import SurvivalGrid
from shared.model import build_model
from simulations.main_job import run
from tests.factories import patient_table

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def three_sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    for index, size in enumerate((260, 200, 160)):
        folder = root / f"site_{index}"
        folder.mkdir()
        patient_table(size, seed=index, site=f"s{index}").to_csv(folder / "patients.csv", index=False)
    return root


def small_config(data_dir, output_dir, **changes) -> RunConfig:
    values = {"data-dir": str(data_dir), "output-dir": str(output_dir), "run-name": "test-run", "num-rounds": 2,
              "local-epochs": 1, "hidden-size": 16, "survival-interval-days": 180, "target-epsilon": 5.0,
              "round-timeout-s": 120, "bootstrap-samples": 20}  # the fewest resamples: reports here only need to exist
    return RunConfig.from_mapping(values | changes)


class WireRecorder:
    """A Flower client mod: sees every reply exactly as the site hands it to Flower for sending.

    It runs inside the simulation's worker processes, so it appends to a file (one JSON line per reply).
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def replies(self) -> list[dict]:
        return [json.loads(line) for path in self.folder.glob("*.jsonl") for line in path.read_text().splitlines()]

    def __call__(self, message: Message, context: Context, call_next) -> Message:
        reply = call_next(message, context)
        if not reply.has_error():
            content = reply.content
            seen = {
                "records": sorted(content.keys()),
                "metrics": {k: v for k, v in content["metrics"].items()} if "metrics" in content else {},
                "arrays": {k: tuple(a.shape) for k, a in content["arrays"].items()} if "arrays" in content else {},
                "site": dict(content["site"]) if "site" in content else {},
            }
            with open(self.folder / f"{os.getpid()}.jsonl", "a") as file:
                file.write(json.dumps(seen) + "\n")
        return reply


def test_a_two_round_three_site_federation_writes_its_run_directory_and_leaks_nothing(three_sites, tmp_path):
    config = small_config(three_sites, tmp_path)
    recorder = WireRecorder(tmp_path)
    run_dir, results = run(config, Console(quiet=True), client_mods=[recorder])

    assert run_dir == tmp_path / "test-run"
    assert json.loads((run_dir / "config.json").read_text())["num-rounds"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest.pt", "round_001.pt", "round_002.pt"]
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert set(results["test"]) == {"site_0", "site_1", "site_2"}
    for site, figures in results["test"].items():
        assert figures["num-examples"] >= 10
        assert 0 < results["epsilon"][site] <= 5.0 * 1.001
        assert (run_dir / "sites" / site / "privacy_ledger.json").is_file()
        assert (run_dir / "sites" / site / "report.html").is_file()  # per-patient curves stay at the site
        report = SiteEvaluation.model_validate_json((run_dir / "sites" / site / "report.json").read_text())
        assert report.site_id == site and report.subgroups  # the tumour board shows these beside a prediction
        assert {"response-auc-lower", "response-auc-upper"} <= set(figures) or "response-auc" not in figures
    assert (run_dir / "consortium_report.html").is_file()
    for record in results["rounds"]:  # per-site figures are kept, not only the mean
        assert set(record["validation"]) == {"site_0", "site_1", "site_2"}

    # every message that went over the wire: only model parameters, allowed aggregates, the site id
    model_shapes = {k: tuple(v.shape) for k, v in build_model(SurvivalGrid(180, 1825).num_intervals, 16, 0)
                    .state_dict().items()}
    assert len(recorder.replies) == 3 * (1 + 2 * 2 + 1)  # statistics, 2 × (train + validate), final test
    for reply in recorder.replies:
        assert set(reply["records"]) <= {"metrics", "arrays", "site"}
        assert reply["arrays"] in ({}, {k: list(v) for k, v in model_shapes.items()})
        assert set(reply["site"]) <= {"site-id"}
        for key, value in reply["metrics"].items():
            assert isinstance(value, (int, float)), key
            assert COUNT_KEYS.match(key) or FIGURE_KEYS.match(key), key
            if COUNT_KEYS.match(key):
                assert value == 0 or value >= config.min_cell_size, (key, value)
            assert not re.search(r"s\d-\d{4}", key)  # no patient identifier anywhere


def test_a_run_resumes_from_its_last_checkpoint_at_the_next_round(three_sites, tmp_path):
    """FedAdam, so the server optimiser's moments must come back from the checkpoint too."""
    first = small_config(three_sites, tmp_path, **{"num-rounds": 1, "dp": False, "strategy": "fedadam"})
    run_dir, results = run(first, Console(quiet=True))
    round_one = results["rounds"][0]
    checkpoint = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)

    assert set(checkpoint["strategy"]) == {"current_arrays", "m_t", "v_t"}
    resumed = small_config(three_sites, tmp_path, **{"num-rounds": 2, "dp": False, "strategy": "fedadam",
                                                     "resume-from": str(run_dir)})
    _, results = run(resumed, Console(quiet=True))
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert results["rounds"][0] == round_one  # round 1 was neither repeated nor lost
    assert json.loads(checkpoint["server_state"])["completed_round"] == 1
    assert (run_dir / "checkpoints" / "round_002.pt").is_file()
