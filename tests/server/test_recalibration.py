"""The coordinator's recalibration: Newton on summed statistics is the pooled logistic fit, and folding it into
the response head changes the probabilities exactly as σ(a·z + b) would."""

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from sklearn.linear_model import LogisticRegression

from client.data.site import simulated_site_table
from client.flower.app import build_client_app
from client.training.recalibration import recalibration_sums, response_logits
from server.coordinator import Coordinator
from server.recalibration import newton_step, recalibrate_response, sum_figures
from shared.config import RunConfig
from shared.encoding import SurvivalGrid
from shared.model import build_model, fold_response_recalibration
from simulations.in_process import InProcessGrid
from tests.factories import GRID, encoded_cohort, patient_table, tiny_model


def harmonised_stats():
    from shared.harmonisation import pool_summaries, summarise_site

    return pool_summaries([summarise_site(patient_table(40), min_cell_size=1)])


def over_confident_sites(seed: int = 0, scale: float = 2.5) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three sites whose logits are `scale` × the true logit, shifted: the fit should find about a = 1 / scale."""
    rng = np.random.default_rng(seed)
    sites = []
    for n in (300, 120, 80):
        true_logit = rng.normal(-0.3, 1.2, n)
        responder = (rng.random(n) < 1 / (1 + np.exp(-true_logit))).astype(float)
        sites.append((scale * true_logit - 0.5, responder))
    return sites


@pytest.mark.parametrize("scale, iterations", [(2.5, 6), (30.0, 12)])  # 30: saturated at the start (a = 1)
def test_newton_on_summed_statistics_reaches_the_pooled_logistic_fit(scale, iterations):
    sites = over_confident_sites(scale=scale)
    a, b = 1.0, 0.0
    for _ in range(iterations):
        figures = {f"site-{i}": recalibration_sums(z, y, a, b) for i, (z, y) in enumerate(sites)}
        a, b = newton_step(sum_figures(figures), a, b)
    z = np.concatenate([s[0] for s in sites])
    y = np.concatenate([s[1] for s in sites])
    pooled = LogisticRegression(C=1e10, max_iter=1000, tol=1e-10).fit(z[:, None], y)
    assert a == pytest.approx(pooled.coef_[0, 0], abs=1e-4)
    assert b == pytest.approx(pooled.intercept_[0], abs=1e-4)
    assert 0.6 / scale < a < 1.5 / scale  # the over-confidence was found


def test_folding_reproduces_the_recalibrated_probabilities_exactly():
    model = tiny_model()
    cohort = encoded_cohort(40)
    with torch.no_grad():
        logit = model(*cohort.inputs())[0]
        folded = build_model(GRID.num_intervals, hidden=16, seed=1)
        folded.load_state_dict(fold_response_recalibration(model.state_dict(), 0.55, -0.3))
        after, pfs, os_ = folded(*cohort.inputs())
        _, pfs_before, os_before = model(*cohort.inputs())
    torch.testing.assert_close(torch.sigmoid(after), torch.sigmoid(0.55 * logit - 0.3), rtol=0, atol=1e-6)
    torch.testing.assert_close(pfs, pfs_before, rtol=0, atol=0)  # the survival heads are untouched
    torch.testing.assert_close(os_, os_before, rtol=0, atol=0)
    undone = fold_response_recalibration(fold_response_recalibration(model.state_dict(), 0.55, -0.3), 1 / 0.55,
                                         0.3 / 0.55)  # how a resumed run gets its trained model back
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(undone[name], tensor, rtol=1e-6, atol=1e-6)


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def test_the_sites_and_the_coordinator_fit_the_validation_splits_of_every_site(tmp_path):
    """Through the real ClientApp: the fit equals scikit-learn's on the pooled validation logits."""
    for index, size in enumerate((260, 200, 160)):
        (tmp_path / "cohort" / f"site_{index}").mkdir(parents=True)
        patient_table(size, seed=index, site=f"s{index}").to_csv(tmp_path / "cohort" / f"site_{index}" /
                                                                  "patients.csv", index=False)
    config = RunConfig.from_mapping({"data-dir": str(tmp_path / "cohort"), "output-dir": str(tmp_path / "runs"),
                                     "run-name": "r", "survival-interval-days": 180, "recalibration-iterations": 8})
    grid = InProcessGrid(build_client_app(config.to_flower()), num_nodes=3)
    coordinator = Coordinator(grid, config)
    stats = coordinator.harmonise()
    days = SurvivalGrid.from_config(config)
    model = build_model(days.num_intervals, config.hidden_size, seed=7)
    with torch.no_grad():  # a spread of logits wide enough for 142 patients to show the slope (std about 2)
        model.response_head.weight.mul_(8.0)
    rng = np.random.default_rng(11)
    for index in range(3):  # outcomes drawn from σ(0.5·z): the model's logits are twice too extreme
        path = tmp_path / "cohort" / f"site_{index}" / "patients.csv"
        patients, _ = simulated_site_table(path, config.seed, config.validation_fraction, config.test_fraction)
        z, _ = response_logits(model, patients.assign(best_response="PD"), stats, days)
        patients["best_response"] = np.where(rng.random(len(z)) < 1 / (1 + np.exp(-0.5 * z)), "PR", "PD")
        patients.to_csv(path, index=False)
    folded, result = recalibrate_response(coordinator, ArrayRecord(model.state_dict()))

    logits, responders = [], []
    for index in range(3):
        patients, split = simulated_site_table(tmp_path / "cohort" / f"site_{index}" / "patients.csv", config.seed,
                                               config.validation_fraction, config.test_fraction)
        z, y = response_logits(model, patients[split == "validation"], stats, days)
        logits.append(z)
        responders.append(y)
    z, y = np.concatenate(logits), np.concatenate(responders)
    pooled = LogisticRegression(C=1e10, max_iter=1000, tol=1e-10).fit(z[:, None], y)
    assert result.applied and result.sites == ["site_0", "site_1", "site_2"] and result.missing == {}
    assert result.validation_patients == len(z)
    assert result.slope == pytest.approx(pooled.coef_[0, 0], abs=1e-3)
    assert result.intercept == pytest.approx(pooled.intercept_[0], abs=1e-3)
    assert 0.25 < result.slope < 0.9  # the over-confidence was found
    state = folded.to_torch_state_dict()
    assert torch.allclose(state["response_head.weight"], model.response_head.weight * result.slope)


def test_a_slope_near_zero_or_reversed_leaves_the_model_as_it_was(tmp_path):
    """A model that does not rank responders higher on validation is not 'calibrated' by flipping or erasing it."""
    from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

    from shared.messages import METRICS_KEY, PLAN_KEY, SITE_ID_KEY, SITE_KEY

    rng = np.random.default_rng(1)
    z = rng.normal(0, 1, 200)
    y = (rng.random(200) < 1 / (1 + np.exp(2 * z))).astype(float)  # responders have LOWER logits

    class Sites:
        """Two sites that answer every recalibration instruction with the sums of (z, y) at its (a, b)."""

        def get_node_ids(self):
            return [1, 2]

        def send_and_receive(self, messages, timeout):
            replies = []
            for message in messages:
                message.metadata.__dict__["_message_id"] = f"m{message.metadata.dst_node_id}"
                plan = message.content[PLAN_KEY]
                sums = recalibration_sums(z, y, float(plan["recalibration-a"]), float(plan["recalibration-b"]))
                replies.append(Message(RecordDict({
                    SITE_KEY: ConfigRecord({SITE_ID_KEY: f"site-{message.metadata.dst_node_id}"}),
                    METRICS_KEY: MetricRecord(sums)}), reply_to=message))
            return replies

    config = RunConfig.from_mapping({"survival-interval-days": 180})
    model = tiny_model()
    arrays = ArrayRecord(model.state_dict())
    kept, result = recalibrate_response(Coordinator(Sites(), config, stats=harmonised_stats()), arrays)
    assert not result.applied and result.slope < 0 and "below" in result.reason
    assert kept is arrays
