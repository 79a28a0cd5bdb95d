"""Federated validation end to end on Flower's simulation engine: local-only models shared for the cross-site
matrix, leave-one-site-out federations, and privacy accounting over every training round.

A client mod records every instruction each site receives, so the test sees what the held-out site was asked.
"""

from __future__ import annotations

import json

import pytest
from flwr.app import Message
from rich.console import Console

from client.flower.outbox import COUNT_KEYS, FIGURE_KEYS
from server.validation import GLOBAL_MODEL, local_model_label
from shared.messages import HELD_OUT_KEY, PHASE_KEY
from simulations.main_job import run
from tests.recorders import MessageRecorder
from tests.test_federation import small_config, three_sites  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.slow


class InstructionRecorder(MessageRecorder):
    """Which site got which instruction (type, phase, held-out site), and what it replied."""

    def record(self, message: Message, reply: Message) -> dict:
        plan = message.content["config"] if "config" in message.content else {}
        return {"type": message.metadata.message_type, "phase": str(plan.get(PHASE_KEY, "federated")),
                "held_out": str(plan.get(HELD_OUT_KEY, "")), "split": str(plan.get("split", "")),
                "site": None if reply.has_error() else str(reply.content["site"]["site-id"]),
                "metrics": {} if reply.has_error() else dict(reply.content["metrics"]),
                "arrays": (not reply.has_error()) and "arrays" in reply.content}


def test_loso_never_trains_on_the_held_out_site_and_the_matrix_is_complete(three_sites, tmp_path):  # noqa: F811
    config = small_config(three_sites, tmp_path, **{"num-rounds": 1, "share-local-models": True,
                                                    "leave-one-site-out": True, "loso-rounds": 1,
                                                    "shap-patients": 15, "shap-samples": 10, "bootstrap-samples": 20,
                                                    "round-timeout-s": 600})  # generous: CI machines can be busy
    recorder = InstructionRecorder(tmp_path)
    run_dir, results = run(config, Console(quiet=True), client_mods=[recorder])
    sites = ["site_0", "site_1", "site_2"]
    seen = recorder.records
    validation = results.validation

    # privacy: 1 federated + 1 local-only + 1 round in each of the 2 LOSO federations a site takes part in
    assert validation.planned_training_rounds == 4
    for site in sites:
        ledger = json.loads((run_dir / "sites" / site / "privacy_ledger.json").read_text())
        assert len(ledger["entries"]) == 4
        assert ledger["entries"][-1]["epsilon_after"] == pytest.approx(results.epsilon[site])
        assert results.epsilon[site] <= config.target_epsilon * 1.001
        # one calibration per budget group covers its rounds: the federated one, and the 3 validation rounds
        assert [e["phase"] for e in ledger["entries"]] == ["federated"] + ["validation"] * 3
        assert len({e["noise_multiplier"] for e in ledger["entries"][1:]}) == 1
        assert ledger["entries"][0]["noise_multiplier"] < ledger["entries"][1]["noise_multiplier"]  # the larger share
        assert results.epsilon[site] >= config.target_epsilon - 0.02  # the split spends the whole ε, no more

    # leave-one-site-out: the held-out site is never asked to train in its own phase, and never enters the model
    rows = {row.held_out_site: row for row in validation.leave_one_site_out}
    assert sorted(rows) == sites
    for held_out in sites:
        trainers = {s["site"] for s in seen if s["phase"] == "loso" and s["held_out"] == held_out
                    and s["type"].startswith("train")}
        assert trainers == set(sites) - {held_out}
        assert rows[held_out].trained_on == sorted(set(sites) - {held_out})
        assert rows[held_out].rounds == 1 and rows[held_out].held_out["num-examples"] >= 10
        evaluated = {s["site"] for s in seen if s["phase"] == "loso" and s["held_out"] == held_out
                     and s["type"] == "evaluate"}
        assert evaluated == set(sites)  # the held-out site only evaluates the model the others trained

    # the cross-site matrix: the global model and each shared local model, evaluated at every site
    matrix = validation.cross_site
    assert sorted(matrix) == sorted([GLOBAL_MODEL] + [local_model_label(s) for s in sites])
    assert all(sorted(row) == sites for row in matrix.values())
    assert sorted(validation.local.figures) == sites
    assert all(s["arrays"] for s in seen if s["type"] == "train.local_only")  # shared: the consortium opted in

    # what the sites shared from their final test evaluation: subgroups and SHAP, through the allow-list
    for site in sites:
        figures = results.test[site]
        assert figures["n-shap-explained"] == 15 and "shap:response:ecog" in figures
        assert figures["sub:age:lt70:n"] >= 10
    for record in seen:
        for key, value in record["metrics"].items():
            assert COUNT_KEYS.match(key) or FIGURE_KEYS.match(key), key
            if COUNT_KEYS.match(key):
                assert value == 0 or value >= config.min_cell_size, (key, value)

    text = (run_dir / "consortium_report.html").read_text(encoding="utf-8")
    for section in ("cross-site", "leave-one-site-out", "subgroups", "importance", "references"):
        assert f'id="{section}"' in text
    assert all((run_dir / "sites" / s / "report.html").is_file() for s in sites)
