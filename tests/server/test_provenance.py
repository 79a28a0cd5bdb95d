"""A model's provenance: the keyed data fingerprint a site sends, and what checkpoints and the model card record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from client.data.fingerprint import KEY_FILE, data_fingerprint
from client.flower import outbox
from server.checkpoint import ServerState, load_checkpoint, load_provenance, save_checkpoint
from server.model_card import model_card
from server.provenance import final_provenance, run_provenance
from shared.config import RunConfig
from shared.provenance import dictionary_sha256, running_app_hash
from tests.client.board_run import SITE, make_run
from tests.factories import patient_table


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def test_the_fingerprint_is_keyed_stable_and_changes_with_the_data(tmp_path):
    patients = patient_table(40, seed=1, site="s1")
    first = data_fingerprint(patients, tmp_path / "state")
    assert (tmp_path / "state" / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert data_fingerprint(patients.sample(frac=1.0, random_state=3), tmp_path / "state") == first  # row order
    changed = patients.copy()
    changed.loc[0, "age_years"] = changed.loc[0, "age_years"] + 1
    assert data_fingerprint(changed, tmp_path / "state") != first
    assert data_fingerprint(patients, tmp_path / "another-site") != first  # another key: not comparable


def test_only_a_fingerprint_passes_the_outbox_in_its_place():
    message = Message(RecordDict({"config": ConfigRecord({"server-round": 0})}), dst_node_id=1,
                      message_type="query.feature_summary")
    reply = outbox.reply(message, site_id="a", metrics={}, min_cell_size=10, data_fingerprint="ab" * 32)
    assert dict(reply.content["site"]) == {"site-id": "a", outbox.DATA_FINGERPRINT_KEY: "ab" * 32}
    with pytest.raises(outbox.DisclosureError, match="64 hex digits"):
        outbox.reply(message, site_id="a", metrics={}, min_cell_size=10, data_fingerprint="patient s0-0001")


def test_checkpoints_metrics_and_the_model_card_record_provenance(tmp_path: Path):
    run_dir, _ = make_run(tmp_path, rounds=1)
    config = RunConfig.from_mapping(json.loads((run_dir / "config.json").read_text()))
    run = run_provenance(config, {SITE: "cd" * 32})
    assert run.app_sha256 == running_app_hash() and run.dictionary_sha256 == dictionary_sha256()
    assert run.config_sha256 == run_provenance(config.model_copy(update={"run_name": "elsewhere"}), {}).config_sha256
    assert run.config_sha256 != run_provenance(config.model_copy(update={"target_epsilon": 9.0}), {}).config_sha256
    history = [{"round": 1, "train": {SITE: {"epsilon": 1.5, "num-examples": 120}},
                "validation_mean": {"response-auc": 0.66}}]
    state, _, _ = load_checkpoint(run_dir)
    save_checkpoint(run_dir, ServerState(completed_round=1, normalisation=state.normalisation, history=history,
                                         provenance=run), {}, {})
    saved = load_provenance(run_dir / "checkpoints" / "round_001.pt")
    assert saved.completed_round == 1 and saved.epsilon_by_site == {SITE: 1.5}
    assert saved.validation == {"response-auc": 0.66} and saved.data_fingerprints == {SITE: "cd" * 32}
    assert "## Provenance" in model_card(run_dir) and "Not recorded" in model_card(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics["provenance"] = final_provenance(run, 1, {SITE: 2.9}, {"response-auc": 0.61}).model_dump()
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    card = model_card(run_dir)
    assert f"| {SITE} | `{'cd' * 32}` | 2.90 |" in card
    assert f"`{run.app_sha256}`" in card and run.config_sha256 in card and "Response AUC = 0.610" in card
