"""A site's recalibration sums: exactly the gradient and Hessian of its log-loss, and never below the cell size."""

import math

import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from client.flower import outbox
from client.training.recalibration import recalibration_sums, response_logits
from shared.harmonisation import pool_summaries, summarise_site
from tests.factories import GRID, patient_table, tiny_model


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def test_the_sums_are_the_log_loss_gradient_and_hessian_computed_by_hand():
    logit, responder, a, b = [0.5, -1.0, 2.0, 0.0], [1, 0, 0, 1], 1.5, -0.2
    gradient_a = gradient_b = hessian_aa = hessian_ab = hessian_bb = 0.0
    for z, y in zip(logit, responder):
        p = 1.0 / (1.0 + math.exp(-(a * z + b)))
        gradient_a += (p - y) * z
        gradient_b += p - y
        hessian_aa += p * (1 - p) * z * z
        hessian_ab += p * (1 - p) * z
        hessian_bb += p * (1 - p)
    sums = recalibration_sums(logit, responder, a, b)
    assert sums["n-recalibration"] == 4
    assert sums["recal-gradient-a"] == pytest.approx(gradient_a, abs=1e-12)
    assert sums["recal-gradient-b"] == pytest.approx(gradient_b, abs=1e-12)
    assert sums["recal-hessian-aa"] == pytest.approx(hessian_aa, abs=1e-12)
    assert sums["recal-hessian-ab"] == pytest.approx(hessian_ab, abs=1e-12)
    assert sums["recal-hessian-bb"] == pytest.approx(hessian_bb, abs=1e-12)


def test_only_patients_with_a_known_response_are_summed():
    patients = patient_table(60, seed=3)
    patients.loc[patients.index[:7], "best_response"] = None
    stats = pool_summaries([summarise_site(patients, min_cell_size=1)])
    logit, responder = response_logits(tiny_model(), patients, stats, GRID)
    assert len(logit) == len(responder) == 53
    assert set(responder.tolist()) <= {0.0, 1.0}


def test_the_outbox_sends_the_sums_at_the_cell_size_and_refuses_them_below_it():
    incoming = Message(RecordDict({"config": ConfigRecord({"server-round": 0})}), dst_node_id=1,
                       message_type="evaluate.recalibration")
    sums = recalibration_sums([0.1 * i for i in range(12)], [i % 2 for i in range(12)], 1.0, 0.0)
    sent = outbox.reply(incoming, site_id="s", metrics=sums, min_cell_size=10)
    assert dict(sent.content["metrics"]) == sums
    for min_cell_size in (13, 20):  # 12 patients: the count itself and the sums it guards are refused
        with pytest.raises(outbox.DisclosureError, match="below the minimum cell size"):
            outbox.reply(incoming, site_id="s", metrics=sums, min_cell_size=min_cell_size)
    without_count = {k: v for k, v in sums.items() if k != "n-recalibration"}
    with pytest.raises(outbox.DisclosureError, match="sums over 0 patients"):
        outbox.reply(incoming, site_id="s", metrics=without_count, min_cell_size=10)
