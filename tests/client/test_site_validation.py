"""What a site shares about subgroups and SHAP: the keys the model card reads, and suppression on the wire."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ConfigRecord, Message, RecordDict

from client.evaluation.explanations import Explanation
from client.evaluation.validation import shap_metrics, subgroup_metrics
from client.flower import outbox
from shared.messages import SHAP_COUNT_KEY, SUBGROUP_KEY, slug, subgroup_key
from shared.metrics import EvaluationSettings, evaluate_subgroups
from tests.shared.test_metrics_support import contract_only, make_site_table, predictions_from_prognosis


@pytest.fixture(autouse=True)
def inside_a_flower_run():
    from flwr.supercore.task_identity import TaskIdentity

    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 1


def incoming() -> Message:
    return Message(RecordDict({"config": ConfigRecord({"split": "test"})}), dst_node_id=1, message_type="evaluate")


@pytest.mark.parametrize("group, level, key", [
    ("Age", "≥ 70", "sub:age:ge70:response-auc"),
    ("Age", "< 70", "sub:age:lt70:response-auc"),
    ("Race/ethnicity", "black", "sub:race-ethnicity:black:response-auc"),
    ("Comorbidity (Charlson)", "≥ 3", "sub:comorbidity:ge3:response-auc"),
    ("Comorbidity (Charlson)", "1–2", "sub:comorbidity:1-2:response-auc"),
    ("Imaging data", "missing", "sub:imaging-data:missing:response-auc"),
    ("Cancer type", "nsclc", "sub:cancer-type:nsclc:response-auc"),
])
def test_subgroup_keys_are_the_agreed_slugs(group, level, key):
    assert subgroup_key(group, level, "response-auc") == key
    assert SUBGROUP_KEY.match(key)


def test_bad_subgroup_names_and_figures_are_refused():
    with pytest.raises(ValueError, match="at least one letter"):
        slug("  ")
    with pytest.raises(ValueError, match="not a subgroup figure"):
        subgroup_key("Age", "≥ 70", "brier")


@pytest.fixture(scope="module")
def subgroups():
    rng = np.random.default_rng(7)
    test = make_site_table(rng, 160, follow_up_days=1400)
    predictions = predictions_from_prognosis(test, rng)
    return evaluate_subgroups(contract_only(test), predictions, EvaluationSettings(n_bootstrap=20), rng)


def test_only_subgroups_at_or_above_the_minimum_cell_leave_and_they_pass_the_outbox(subgroups):
    shared = subgroup_metrics(subgroups, min_cell_size=10)
    sizes = {(slug(s.group), slug(s.level)): s.n for s in subgroups}
    small = [k for k, n in sizes.items() if n is None]
    assert small, "the fixture should hold a subgroup under 10 patients"
    for group, level in small:
        assert not any(k.startswith(f"sub:{group}:{level}:") for k in shared)
    for key in shared:
        group, level, figure = SUBGROUP_KEY.match(key).groups()
        assert sizes[(group, level)] >= 10
        assert shared[f"sub:{group}:{level}:n"] == sizes[(group, level)]
        if not figure.endswith(("-lower", "-upper", "n")):
            assert {f"{key}-lower", f"{key}-upper"} <= set(shared)
    assert shared["sub:age:lt70:n"] >= 10 and "sub:age:lt70:response-auc" in shared
    message = outbox.reply(incoming(), site_id="s", metrics=shared, min_cell_size=10)
    assert dict(message.content["metrics"]) == pytest.approx(shared)


@pytest.mark.parametrize("metrics, words", [
    ({"sub:age:ge70:n": 6, "sub:age:ge70:response-auc": 0.7}, "below the minimum cell size"),
    ({"sub:age:ge70:response-auc": 0.7}, "subgroup of 0 patients"),
    ({"sub:age:ge70:brier": 0.2, "sub:age:ge70:n": 30}, "not on the outgoing allow-list"),
    ({"shap:response:ecog": 0.1}, "averages 0 patients"),
    ({SHAP_COUNT_KEY: 9, "shap:response:ecog": 0.1}, "below the minimum cell size"),
])
def test_small_subgroups_and_shap_means_are_refused_at_the_wire(metrics, words):
    with pytest.raises(outbox.DisclosureError, match=words):
        outbox.reply(incoming(), site_id="s", metrics=metrics, min_cell_size=10)


def _explanation(patients: int) -> Explanation:
    rng = np.random.default_rng(3)
    return Explanation(fields=["ecog", "stage_group"], values=rng.normal(size=(patients, 2, 3)),
                       baseline=np.zeros((patients, 3)))


def test_shap_means_are_shared_only_over_enough_patients():
    assert shap_metrics(_explanation(9), min_cell_size=10) == {}
    assert shap_metrics(None, min_cell_size=10) == {}
    explanation = _explanation(25)
    shared = shap_metrics(explanation, min_cell_size=10)
    assert shared[SHAP_COUNT_KEY] == 25
    assert shared["shap:pfs:ecog"] == pytest.approx(np.abs(explanation.values[:, 0, 1]).mean())
    assert len(shared) == 1 + 2 * 3
    outbox.reply(incoming(), site_id="s", metrics=shared, min_cell_size=10)
