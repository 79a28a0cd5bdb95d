"""A site asked for Opacus's secure noise without the package that provides it refuses the round and says why."""

from flwr.app import ArrayRecord, Context, Message, RecordDict
import pytest

from client.flower import app as client_app
from client.flower import outbox
from shared.config import RunConfig
from shared.harmonisation import pool_summaries, summarise_site
from shared.messages import instruction_records
from shared.model import model_for
from tests.factories import patient_table


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def test_secure_mode_without_torchcsprng_is_refused_with_the_reason(tmp_path, monkeypatch):
    patients = patient_table(120, seed=4)
    (tmp_path / "cohort" / "site_a").mkdir(parents=True)
    patients.to_csv(tmp_path / "cohort" / "site_a" / "patients.csv", index=False)
    config = RunConfig.from_mapping({"data-dir": str(tmp_path / "cohort"), "output-dir": str(tmp_path / "runs"),
                                     "run-name": "r", "hidden-size": 16, "secure-mode": True})
    monkeypatch.setattr("client.training.dp_sgd.secure_rng_available", lambda: False)  # app.py imports it per message
    model = model_for(config)
    records = instruction_records(config, pool_summaries([summarise_site(patients)]), **{"server-round": 1})
    message = Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), **records}), dst_node_id=1,
                      message_type="train")
    context = Context(run_id=1, node_id=1, node_config={"partition-id": 0}, state=RecordDict(),
                      run_config=config.to_flower())

    reply = client_app.build_client_app()(message, context)
    assert reply.has_error() and reply.error.code == outbox.ERROR_CONFIG
    assert "torchcsprng" in reply.error.reason and "secure-mode=false" in reply.error.reason
    assert not (tmp_path / "runs" / "r" / "sites" / "site_a" / "privacy_ledger.json").exists()  # nothing spent
