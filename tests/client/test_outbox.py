"""Nothing leaves a site unless it is an allowed aggregate (the wire-level check is in test_federation.py)."""

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

from client.flower import outbox
from shared.config import ConfigError
from tests.factories import tiny_model


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    """Messages can only be built inside a run; set the identity run_simulation would set."""
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def incoming() -> Message:
    return Message(RecordDict({"config": ConfigRecord({"server-round": 1})}), dst_node_id=1, message_type="train")


def test_aggregates_and_model_parameters_pass():
    model = tiny_model()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    message = outbox.reply(incoming(), site_id="site-a", metrics={"num-examples": 120, "train-loss": 1.2,
                                                                   "epsilon": 0.8, "response-auc": 0.7},
                           min_cell_size=10, arrays=ArrayRecord(model.state_dict()), expected_arrays=shapes)
    assert set(message.content.keys()) == {"metrics", "site", "arrays"}


@pytest.mark.parametrize("metrics, words", [
    ({"num-examples": 7}, "below the minimum cell size"),
    ({"n:age_years": 4, "sum:age_years": 250.0}, "below the minimum cell size"),
    ({"sum:age_years": 67.0}, "rests on 0 patients"),
    ({"patient-risk": 0.3}, "not on the outgoing allow-list"),
    ({"response-auc": [0.1, 0.9]}, "only scalars"),
    ({"val-loss": float("nan")}, "only finite"),
    ({"response-brier": 0.2}, "not on the outgoing allow-list"),  # no site sends it, so it may not leave
    ({"n-test": 40}, "not on the outgoing allow-list"),  # counts are named in shared/messages.py, not by prefix
])
def test_anything_else_is_refused_before_it_is_sent(metrics, words):
    with pytest.raises(outbox.DisclosureError, match=words):
        outbox.reply(incoming(), site_id="site-a", metrics=metrics, min_cell_size=10)


def test_arrays_other_than_the_models_parameters_are_refused():
    model = tiny_model()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    leaked = dict(model.state_dict()) | {"patient_predictions": model.state_dict()["response_head.bias"] * 0}
    with pytest.raises(outbox.DisclosureError, match="do not match the model's parameters"):
        outbox.reply(incoming(), site_id="s", metrics={}, min_cell_size=10, arrays=ArrayRecord(leaked),
                     expected_arrays=shapes)


def test_a_failure_inside_the_site_reaches_the_coordinator_without_its_text(caplog):
    def leaky_handler(message, context):
        raise ValueError("patient s0-0007: age_years 203 is out of range")

    reply = outbox.contain_failures(incoming(), None, leaky_handler)
    assert reply.has_error() and reply.error.code == outbox.ERROR_SITE_FAILED
    assert "s0-0007" not in reply.error.reason and "203" not in reply.error.reason
    assert "s0-0007" in caplog.text  # the site's own log keeps the detail

    def bad_configuration(message, context):
        raise ConfigError("invalid run configuration:\n  'num-rounds': must be at least 1, got 0")

    reply = outbox.contain_failures(incoming(), None, bad_configuration)
    assert reply.error.code == outbox.ERROR_CONFIG and "'num-rounds'" in reply.error.reason
    fine = outbox.contain_failures(incoming(), None, lambda m, c: outbox.reply(m, site_id="a", metrics={},
                                                                                  min_cell_size=10))
    assert not fine.has_error()


def test_the_site_app_contains_failures_innermost():
    from client.flower.app import build_client_app
    from client.flower.secure_aggregation import secure_aggregation_mod

    recorder = object()
    app = build_client_app(mods=[recorder])
    # the audit log is outermost, code approval next (client/governance/audit.py, client/governance/approval.py), then
    # the data dictionary's check (client/governance/dictionary_check.py); then SecAgg+ (it passes every other
    # message through), so the recorder sees what is sent
    audit, approval, dictionary, *inner = app._mods
    assert audit.__qualname__.startswith("audit_mod") and approval.__qualname__.startswith("approval_mod")
    assert dictionary.__qualname__.startswith("dictionary_mod")
    assert inner == [secure_aggregation_mod, recorder, outbox.contain_failures]


def test_the_allow_list_is_the_message_schemas():
    """Every figure, interval, subgroup, SHAP, privacy and recalibration key of shared/messages.py may leave (with
    its count); the outbox has no list of its own."""
    from shared import messages

    figures = {key: 0.7 for figure in messages.FIGURES for key in (figure.key, *messages.interval_keys(figure.key))}
    subgroup = {messages.subgroup_key("Age", "≥ 70", name): 0.6 for name in figures}
    subgroup[messages.subgroup_key("Age", "≥ 70", "n")] = 40
    shap = {messages.shap_key(output, "ecog"): 0.1 for output in messages.SHAP_OUTPUT_UNITS}
    privacy = {key: 0.5 for key in messages.PRIVACY_KEYS}
    losses = {key: 1.0 for key in messages.LOSS_KEYS.values()}
    recalibration = {key: 1.0 for key in messages.RECALIBRATION_SUM_KEYS} | {messages.RECALIBRATION_COUNT_KEY: 30}
    metrics = {messages.COUNT_KEY: 120, messages.SHAP_COUNT_KEY: 30, **figures, **subgroup, **shap, **privacy,
               **losses, **recalibration}
    message = outbox.reply(incoming(), site_id="site-a", metrics=metrics, min_cell_size=10)
    assert dict(message.content[messages.METRICS_KEY]) == metrics
    assert message.content[messages.SITE_KEY][messages.SITE_ID_KEY] == "site-a"
