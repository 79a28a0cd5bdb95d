"""End to end on Flower's simulation engine: a small federation writes its run directory, resumes from a
checkpoint, and sends nothing but allowed aggregates and model parameters over the wire."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from flwr.app import Message
from rich.console import Console

from client.evaluation.site_report import SiteEvaluation
from client.flower.outbox import COUNT_KEYS, DATA_FINGERPRINT_KEY, FIGURE_KEYS, FINGERPRINT
from client.governance.audit import AUDIT_FILE, verify
from shared.config import RunConfig
from shared.encoding import SurvivalGrid
from shared.model import build_model
from simulations.main_job import run
from tests.factories import patient_table
from tests.recorders import MessageRecorder

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


class WireRecorder(MessageRecorder):
    """Every reply exactly as the site hands it to Flower for sending (refusals carry no content)."""

    def record(self, message: Message, reply: Message) -> dict | None:
        if reply.has_error():
            return None
        content = reply.content
        return {
            "records": sorted(content.keys()),
            "metrics": {k: v for k, v in content["metrics"].items()} if "metrics" in content else {},
            "arrays": {k: tuple(a.shape) for k, a in content["arrays"].items()} if "arrays" in content else {},
            "site": dict(content["site"]) if "site" in content else {},
        }


PATIENT_ID = re.compile(r"s\d-\d{4}")  # the test cohort's patient identifiers


def disclosures(reply: dict, model_shapes: dict[str, tuple[int, ...]], min_cell_size: int) -> list[str]:
    """Everything in one recorded reply that is not a model parameter, an allowed aggregate or the site id."""
    found = [f"record {name!r}" for name in set(reply["records"]) - {"metrics", "arrays", "site"}]
    if reply["arrays"] not in ({}, {k: list(v) for k, v in model_shapes.items()}):
        found.append(f"arrays other than the model's parameters: {sorted(set(reply['arrays']) - set(model_shapes))}")
    found += [f"site field {key!r}" for key, value in reply["site"].items()
              if key != "site-id" and not (key == DATA_FINGERPRINT_KEY and FINGERPRINT.match(str(value)))]
    for key, value in reply["metrics"].items():
        if PATIENT_ID.search(key) or PATIENT_ID.search(str(value)):
            found.append(f"patient identifier in {key!r}")
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            found.append(f"{key!r} is not a scalar")
        elif COUNT_KEYS.match(key):
            if 0 < value < min_cell_size:
                found.append(f"count {key!r}={value} below the minimum cell size")
        elif not FIGURE_KEYS.match(key):
            found.append(f"{key!r} is not an allowed aggregate")
    return found


@pytest.fixture(scope="module")
def federation(three_sites, tmp_path_factory):
    """One two-round federation, every reply recorded as it went over the wire."""
    out = tmp_path_factory.mktemp("federation")
    config = small_config(three_sites, out)
    recorder = WireRecorder(out)
    run_dir, results = run(config, Console(quiet=True), client_mods=[recorder])
    model_shapes = {k: tuple(v.shape) for k, v in build_model(SurvivalGrid(180, 1825).num_intervals, 16, 0)
                    .state_dict().items()}
    return config, out, run_dir, results, recorder.records, model_shapes


def test_a_two_round_three_site_federation_writes_its_run_directory_and_leaks_nothing(federation):
    config, out, run_dir, results, replies, model_shapes = federation

    assert run_dir == out / "test-run"
    assert json.loads((run_dir / "config.json").read_text())["num-rounds"] == 2
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest.pt", "round_001.pt", "round_002.pt"]
    assert [r.round for r in results.rounds] == [1, 2]
    assert set(results.test) == {"site_0", "site_1", "site_2"}
    for site, figures in results.test.items():
        assert figures["num-examples"] >= 10
        assert 0 < results.epsilon[site] <= 5.0 * 1.001
        assert (run_dir / "sites" / site / "privacy_ledger.json").is_file()
        report = (run_dir / "sites" / site / "report.html").read_text()  # per-patient curves stay at the site
        assert "Privacy spent, round by round" in report  # the site's own ledger, round by round
        evaluation = SiteEvaluation.model_validate_json((run_dir / "sites" / site / "report.json").read_text())
        assert evaluation.site_id == site and evaluation.subgroups  # the tumour board shows these beside a prediction
        assert {"response-auc-lower", "response-auc-upper"} <= set(figures) or "response-auc" not in figures
    assert (run_dir / "consortium_report.html").is_file()
    for record in results.rounds:  # per-site figures are kept, not only the mean
        assert set(record.validation) == {"site_0", "site_1", "site_2"}

    # every message that went over the wire: only model parameters, allowed aggregates, the site id
    # statistics, 2 × (train + validate), the response recalibration's Newton iterations, final test
    assert len(replies) == 3 * (1 + 2 * 2 + config.recalibration_iterations + 1)
    recalibration = results.recalibration  # this cohort's outcomes are random: the fit may find no slope to keep
    assert recalibration["sites"] == ["site_0", "site_1", "site_2"] and recalibration["missing"] == {}
    assert recalibration["applied"] or "below" in recalibration["reason"], recalibration
    for reply in replies:
        assert disclosures(reply, model_shapes, config.min_cell_size) == [], reply


def test_the_model_records_its_provenance_and_each_site_its_audit_log(federation):
    from server.checkpoint import load_provenance
    from server.model_card import model_card
    from shared.provenance import app_hash, dictionary_sha256

    config, _, run_dir, results, replies, _ = federation
    sent = {r["site"]["site-id"]: r["site"][DATA_FINGERPRINT_KEY] for r in replies if DATA_FINGERPRINT_KEY in r["site"]}
    assert set(sent) == {"site_0", "site_1", "site_2"} and len(set(sent.values())) == 3
    repo_hash = app_hash(Path(__file__).resolve().parents[1])
    final = results.provenance
    assert final["data_fingerprints"] == sent and final["app_sha256"] == repo_hash
    assert final["dictionary_sha256"] == dictionary_sha256() and final["strategy"]["strategy"] == config.strategy
    assert final["privacy"]["target-epsilon"] == config.target_epsilon and final["privacy"]["dp"] is True
    assert final["epsilon_by_site"] == results.epsilon and final["validation_split"] == "test"
    assert final["validation"]["response-auc"] == results.test_mean["response-auc"]
    round_one = load_provenance(run_dir / "checkpoints" / "round_001.pt")
    assert round_one.completed_round == 1 and round_one.data_fingerprints == sent
    assert round_one.epsilon_by_site == {s: f["epsilon"] for s, f in results.rounds[0].train.items()}
    assert round_one.validation == results.rounds[0].validation_mean
    card = model_card(run_dir)
    assert "## Provenance" in card and repo_hash in card and all(f"`{f}`" in card for f in sent.values())
    for site in sent:  # the simulated sites keep their audit logs in the run directory
        log = verify(run_dir / "sites" / site / AUDIT_FILE)
        assert log.ok, log.problem
        kinds = [(e["kind"], e["message_type"]) for e in log.entries]
        assert kinds.count(("instruction", "train")) == 2 and kinds.count(("reply", "train")) == 2
        assert next(e for e in log.entries if e["kind"] == "reply")["data_fingerprint"] == sent[site]
        assert '<section id="audit">' in (run_dir / "sites" / site / "report.html").read_text()


def test_each_round_reports_its_own_epsilon_and_the_cumulative_one(federation):
    _, _, _, results, _, _ = federation
    for site in ("site_0", "site_1", "site_2"):
        first, second = (record.train[site] for record in results.rounds)
        assert first["epsilon-round"] == pytest.approx(first["epsilon"])  # round 1 is all that was spent
        assert second["epsilon-round"] == pytest.approx(first["epsilon-round"], rel=0.05)  # same plan, same cost
        assert first["epsilon"] < second["epsilon"] < first["epsilon"] + second["epsilon-round"]  # RDP composition
        assert second["epsilon"] == pytest.approx(results.epsilon[site])


@pytest.mark.parametrize("tamper, words", [
    (lambda r: r["metrics"].update({"response-prob:s0-0007": 0.83}), "patient identifier"),
    (lambda r: r["metrics"].update({"response-prob": [0.83, 0.12, 0.54]}), "not a scalar"),
    (lambda r: r["metrics"].update({"pfs-risk": 0.41}), "not an allowed aggregate"),
    (lambda r: r["metrics"].update({"num-examples": 3}), "below the minimum cell size"),
    (lambda r: r["records"].append("predictions"), "record 'predictions'"),
    (lambda r: r["arrays"].update({"patient_predictions": [40]}), "arrays other than the model's parameters"),
    (lambda r: r["site"].update({"patient-id": "s0-0007"}), "site field"),
])
def test_the_wire_check_fails_when_a_reply_carries_a_per_patient_value(federation, tamper, words):
    """The check above can fail: a per-patient value added to a real reply is caught."""
    config, _, _, _, replies, model_shapes = federation
    reply = json.loads(json.dumps(next(r for r in replies if r["arrays"])))  # a real train reply, copied
    assert disclosures(reply, model_shapes, config.min_cell_size) == []
    tamper(reply)
    assert any(words in problem for problem in disclosures(reply, model_shapes, config.min_cell_size))


def test_a_run_resumes_from_its_last_checkpoint_at_the_next_round(three_sites, tmp_path):
    """FedAdam, so the server optimiser's moments must come back from the checkpoint too."""
    first = small_config(three_sites, tmp_path, **{"num-rounds": 1, "dp": False, "strategy": "fedadam",
                                                   "site-reports": False})  # reports: the test above
    run_dir, results = run(first, Console(quiet=True))
    round_one, recalibrated = results.rounds[0], results.recalibration["applied"]
    checkpoint = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=True)

    assert set(checkpoint["strategy"]) == {"current_arrays", "m_t", "v_t"}
    resumed = small_config(three_sites, tmp_path, **{"num-rounds": 2, "dp": False, "strategy": "fedadam",
                                                     "site-reports": False, "resume-from": str(run_dir)})
    _, results = run(resumed, Console(quiet=True))
    assert [r.round for r in results.rounds] == [1, 2]
    assert results.rounds[0] == round_one  # round 1 was neither repeated nor lost
    assert json.loads(checkpoint["server_state"])["completed_round"] == 1
    # latest.pt records the (a, b) folded into it (resuming unfolds it first); the round files never change
    assert (json.loads(checkpoint["server_state"])["recalibration"] is not None) == recalibrated
    round_file = torch.load(run_dir / "checkpoints" / "round_001.pt", weights_only=True)
    assert json.loads(round_file["server_state"])["recalibration"] is None
    assert (run_dir / "checkpoints" / "round_002.pt").is_file()
