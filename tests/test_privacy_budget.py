"""A site's privacy spending composes across runs; a site at its budget sits out and the others finish."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from shared.config import RunConfig
from simulations.main_job import run
from tests.factories import patient_table

pytestmark = pytest.mark.slow


def test_a_site_that_spent_its_budget_in_an_earlier_run_refuses_and_the_others_finish(tmp_path):
    cohort = tmp_path / "cohort"
    for index, size in enumerate((220, 200, 180)):
        folder = cohort / f"site_{index}"
        folder.mkdir(parents=True)
        patient_table(size, seed=10 + index, site=f"b{index}").to_csv(folder / "patients.csv", index=False)
    # site_0 keeps its own configuration and a ledger that outlives runs, as a deployed hospital does
    (cohort / "site_0" / "site.toml").write_text(
        'site_id = "site_0"\ndisplay_name = "Hospital 0"\ntarget_epsilon = 2.0\nstate_dir = "state"\n'
        '[data]\npath = "patients.csv"\n')
    values = {"data-dir": str(cohort), "output-dir": str(tmp_path / "runs"), "num-rounds": 2, "local-epochs": 1,
              "hidden-size": 16, "survival-interval-days": 180, "target-epsilon": 2.0, "min-sites": 2,
              "round-timeout-s": 120, "bootstrap-samples": 20,
              "site-reports": False}  # this test is about the ledger; reports are tested in tests/test_federation.py

    _, first = run(RunConfig.from_mapping(values | {"run-name": "first"}), Console(quiet=True))
    ledger = json.loads((cohort / "site_0" / "state" / "privacy_ledger.json").read_text())
    assert [e["run_id"] for e in ledger["entries"]] and len(ledger["entries"]) == 2
    assert first.epsilon["site_0"] == pytest.approx(2.0, abs=0.02)

    run_dir, second = run(RunConfig.from_mapping(values | {"run-name": "second"}), Console(quiet=True))
    assert [r.round for r in second.rounds] == [1, 2]  # the federation completed …
    for record in second.rounds:  # … with the two sites that still had budget
        assert set(record.train) == {"site_1", "site_2"}
        assert "privacy budget exhausted" in record.missing["site_0"]
    ledger = json.loads((cohort / "site_0" / "state" / "privacy_ledger.json").read_text())
    assert len(ledger["entries"]) == 2  # nothing more was spent
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "site_0" in metrics["rounds"][0]["missing"]
