"""A site's recalibration sums: exactly the gradient and Hessian of its log-loss, and never below the cell size."""

import math

import numpy as np
import torch

import pytest
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict

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


def build_copy(model):
    copy = tiny_model()
    copy.load_state_dict(model.state_dict())
    return copy


def test_a_sites_own_fit_is_the_platt_fit_of_its_validation_patients_and_shrinks_towards_the_consortium():
    from scipy import special

    from client.training.recalibration import fit_site_recalibration, recalibrate_at_site
    from shared.metrics import calibration_intercept_value, calibration_slope_value, responder_labels

    validation = patient_table(400, seed=5)
    stats = pool_summaries([summarise_site(validation, min_cell_size=1)])
    model = tiny_model()
    with torch.no_grad():  # logits spread enough to fit a slope on 400 patients
        model.response_head.weight.mul_(8.0)
    z, _ = response_logits(model, validation, stats, GRID)
    rng = np.random.default_rng(9)  # outcomes drawn from σ(0.4·z + 0.5): the model is over-confident here
    validation["best_response"] = np.where(rng.random(len(z)) < special.expit(0.4 * z + 0.5), "PR", "PD")
    z, y = response_logits(model, validation, stats, GRID)

    own, fitted = recalibrate_at_site(build_copy(model), validation, stats, GRID, "platt", ridge=0.0, min_cell_size=10)
    assert fitted == pytest.approx(fit_site_recalibration(z, y, 0.0, 0.0))
    assert 0.2 < fitted[0] < 0.7 and fitted[1] > 0.1
    known, responder = responder_labels(validation)
    probability = special.expit(response_logits(own, validation, stats, GRID)[0])
    # the maximum-likelihood Platt fit: on the patients it was fitted on, slope 1 and intercept 0 exactly
    assert calibration_slope_value(probability, responder[known]) == pytest.approx(1.0, abs=1e-3)
    assert calibration_intercept_value(probability, responder[known]) == pytest.approx(0.0, abs=1e-3)
    shrunk = fit_site_recalibration(z, y, 1e4, 1e4)
    assert abs(shrunk[0] - 1.0) < abs(fitted[0] - 1.0) / 10 and abs(shrunk[1]) < abs(fitted[1]) / 10
    reversed_outcomes = validation.assign(best_response=np.where(validation["best_response"] == "PR", "PD", "PR"))
    assert recalibrate_at_site(build_copy(model), reversed_outcomes, stats, GRID, "platt", 0.0, 10)[1] is None  # a < 0
    _, intercept_only = recalibrate_at_site(build_copy(model), validation, stats, GRID, "intercept", 0.0, 10)
    assert intercept_only[0] == 1.0 and intercept_only == pytest.approx(fit_site_recalibration(z, y, np.inf, 0.0))
    with pytest.raises(ValueError, match="'intercept' or 'platt'"):
        recalibrate_at_site(build_copy(model), validation, stats, GRID, "none", 0.0, 10)
    few, none = recalibrate_at_site(tiny_model(), validation.head(8), stats, GRID, "platt", 10.0, min_cell_size=10)
    assert none is None  # fewer validation patients than the cell size: the model is left as it came
    torch.testing.assert_close(few.state_dict(), tiny_model().state_dict())


def test_with_site_recalibration_the_test_figures_use_the_sites_validation_fit_and_keep_its_ranking(tmp_path):
    """Through the real ClientApp: the test loss is that of the model refitted on the site's VALIDATION split,
    computed here by hand; the test AUC and C-indices are unchanged (a monotone map per site)."""
    from client.data.site import simulated_site_table
    from client.evaluation.cohort import evaluate_cohort
    from client.flower.app import build_client_app
    from client.training.recalibration import fit_site_recalibration
    from server.coordinator import Coordinator
    from shared.config import RunConfig
    from shared.encoding import SurvivalGrid, encode_cohort
    from shared.messages import PhaseInstruction
    from shared.model import build_model, fold_response_recalibration
    from simulations.in_process import InProcessGrid

    for index, size in enumerate((220, 180, 160)):
        (tmp_path / "cohort" / f"site_{index}").mkdir(parents=True)
        patient_table(size, seed=index, site=f"s{index}").to_csv(tmp_path / "cohort" / f"site_{index}" /
                                                                  "patients.csv", index=False)
    base = {"data-dir": str(tmp_path / "cohort"), "output-dir": str(tmp_path / "runs"), "run-name": "r",
            "survival-interval-days": 180, "site-recalibration-ridge": 0.0}
    days = SurvivalGrid.from_config(RunConfig.from_mapping(base))
    model = build_model(days.num_intervals, 16, seed=7)
    with torch.no_grad():
        model.response_head.weight.mul_(8.0)
    first = Coordinator(InProcessGrid(build_client_app(base), num_nodes=3), RunConfig.from_mapping(base))
    stats = first.harmonise()
    rng = np.random.default_rng(11)
    for index in range(3):  # outcomes drawn from σ(0.5·z): the model ranks patients but is twice too extreme
        path = tmp_path / "cohort" / f"site_{index}" / "patients.csv"
        patients, _ = simulated_site_table(path, 42, 0.2, 0.2)
        z, _ = response_logits(model, patients.assign(best_response="PD"), stats, days)
        patients["best_response"] = np.where(rng.random(len(z)) < 1 / (1 + np.exp(-0.5 * z)), "PR", "PD")
        patients.to_csv(path, index=False)
    figures = {}
    for on in (False, True):
        config = RunConfig.from_mapping(base | {"site-recalibration": "platt" if on else "none"})
        coordinator = Coordinator(InProcessGrid(build_client_app(config.to_flower()), num_nodes=3), config)
        stats = coordinator.harmonise()
        replies = coordinator.evaluate_model(ArrayRecord(model.state_dict()), PhaseInstruction())
        figures[on] = replies.figures
    patients, split = simulated_site_table(tmp_path / "cohort" / "site_0" / "patients.csv", 42, 0.2, 0.2)
    a, b = fit_site_recalibration(*response_logits(model, patients[split == "validation"], stats, days), 0.0, 0.0)
    assert 0.2 < a < 1.0  # the over-confidence is found on the validation split
    refitted = build_model(days.num_intervals, 16, seed=7)
    refitted.load_state_dict(fold_response_recalibration(model.state_dict(), a, b))
    test = patients[split == "test"].reset_index(drop=True)
    by_hand = evaluate_cohort(refitted, test, encode_cohort(test, stats, days), days, 10, "test")
    assert figures[True]["site_0"]["test-loss"] == pytest.approx(by_hand["test-loss"], rel=1e-5)
    assert figures[True]["site_0"]["test-loss"] != pytest.approx(figures[False]["site_0"]["test-loss"], rel=1e-3)
    for site in figures[False]:
        for key in ("response-auc", "pfs-cindex", "os-cindex"):
            if key in figures[False][site]:
                assert figures[True][site][key] == pytest.approx(figures[False][site][key], abs=1e-12)
