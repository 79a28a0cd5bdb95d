"""The coordinator's federated validation: privacy planning, SHAP pooling, the cross-site matrix and LOSO rows,
and the consortium report built from a run's metrics.json (rendered in headless Chromium)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from server.consortium_report import write_consortium_report
from server.consortium_summary import summary_from_results
from server.coordinator import SubsetGrid
from server.validation import (
    GLOBAL_MODEL,
    TrainingRounds,
    budget_split,
    local_model_label,
    planned_training_rounds,
    pool_shap,
)
from shared.config import RunConfig
from shared.run_result import RunResult
from tests.browser import check_page, find_chromium

SITES = ("north", "south", "east")


def test_every_training_round_of_every_phase_is_planned_for_the_privacy_budget():
    plain = RunConfig.from_mapping({"num-rounds": 5})
    assert planned_training_rounds(plain, 6) == TrainingRounds(federated=5, validation=0)
    assert budget_split(plain, planned_training_rounds(plain, 6))["validation_epsilon_share"] == 0.0  # all of ε
    local = RunConfig.from_mapping({"num-rounds": 5, "share-local-models": True})
    assert planned_training_rounds(local, 6) == TrainingRounds(federated=5, validation=5)
    both = RunConfig.from_mapping({"num-rounds": 5, "share-local-models": True, "leave-one-site-out": True,
                                   "loso-rounds": 2, "validation-epsilon-share": 0.25})
    # a site trains in every LOSO federation but its own
    assert planned_training_rounds(both, 6) == TrainingRounds(federated=5, validation=5 + 2 * 5)
    assert planned_training_rounds(both, 6).total == 20
    assert budget_split(both, planned_training_rounds(both, 6))["validation_epsilon"] == 0.75
    default_loso = RunConfig.from_mapping({"num-rounds": 3, "leave-one-site-out": True, "loso-rounds": 0})
    assert planned_training_rounds(default_loso, 4).validation == 3 * 3
    # two sites and min-sites 2: no federation is possible without one of them, so nothing is planned for it
    assert planned_training_rounds(default_loso, 2) == TrainingRounds(federated=3, validation=0)


def test_global_importance_is_weighted_by_the_patients_each_site_explained():
    figures = {"north": {"n-shap-explained": 100, "shap:response:ecog": 0.2, "shap:os:ecog": 30.0},
               "south": {"n-shap-explained": 20, "shap:response:ecog": 0.5, "shap:response:stage_group": 0.1},
               "east": {"response-auc": 0.7}}  # shared no SHAP (too few patients explained)
    pooled = pool_shap(figures)
    assert pooled["patients"] == {"north": 100, "south": 20}
    assert pooled["importance"]["response"]["ecog"] == pytest.approx((100 * 0.2 + 20 * 0.5) / 120)
    assert pooled["importance"]["response"]["stage_group"] == pytest.approx(0.1)
    assert pooled["importance"]["os"] == {"ecog": pytest.approx(30.0)}


class _Grid:
    def __init__(self, nodes):
        self.nodes = nodes

    def get_node_ids(self):
        return list(self.nodes)

    def send_and_receive(self, messages, timeout):
        return ["sent", len(list(messages))]


def test_a_subset_grid_hides_the_held_out_site_and_passes_everything_else_through():
    grid = SubsetGrid(_Grid([11, 12, 13]), [11, 13])
    assert grid.get_node_ids() == [11, 13]
    assert grid.send_and_receive([1, 2], timeout=1) == ["sent", 2]


def _figures(auc: float, n: int = 60) -> dict[str, float]:
    return {"num-examples": n, "response-auc": auc, "response-auc-lower": auc - 0.08, "response-auc-upper": auc + 0.08,
            "pfs-cindex": auc - 0.02, "pfs-cindex-lower": auc - 0.09, "pfs-cindex-upper": auc + 0.05,
            "os-cindex": auc - 0.03, "os-cindex-lower": auc - 0.1, "os-cindex-upper": auc + 0.04}


@pytest.fixture(scope="module")
def results() -> dict:
    test = {}
    for index, site in enumerate(SITES):
        figures = _figures(0.66 + 0.03 * index)
        figures |= {"sub:age:ge70:n": 20 + index, "sub:age:ge70:response-auc": 0.6 + 0.02 * index,
                    "sub:age:ge70:response-auc-lower": 0.45, "sub:age:ge70:response-auc-upper": 0.75 + 0.02 * index,
                    "sub:sex:female:n": 30, "sub:sex:female:os-cindex": 0.62, "sub:sex:female:os-cindex-lower": 0.5,
                    "sub:sex:female:os-cindex-upper": 0.74,
                    "n-shap-explained": 40, "shap:response:ecog": 0.1 + 0.01 * index, "shap:pfs:ecog": 40.0,
                    "shap:os:stage_group": 55.0}
        test[site] = figures
    cross = {GLOBAL_MODEL: test, **{local_model_label(s): {t: _figures(0.6 + (0.1 if s == t else 0)) for t in SITES}
                                    for s in SITES}}
    loso = [{"held_out_site": s, "trained_on": [t for t in SITES if t != s], "rounds": 2, "missing": {},
             "epsilon": {}, "held_out": _figures(0.63), "in_distribution": {t: _figures(0.68) for t in SITES if t != s}}
            for s in SITES]
    rounds = [{"round": r, "train": {s: {"epsilon": 0.5 * r, "delta": 1e-4, "noise-multiplier": 1.3} for s in SITES},
               "missing": {"east": "privacy budget exhausted"} if r == 2 else {}} for r in (1, 2)]
    return {"config": RunConfig().to_flower(), "rounds": rounds, "test": test, "test_missing": {},
            "validation": {"planned_training_rounds": 8, "budget_split": {}, "local": {"figures": {s: _figures(0.64) for s in SITES},
                                                                   "missing": {}},
                           "cross_site": cross, "leave_one_site_out": loso, "epsilon": {s: 2.9 for s in SITES}}}


def test_the_summary_holds_the_matrix_loso_subgroups_importance_and_absences(results):
    summary = summary_from_results(RunResult.model_validate(results), Path("runs/test-run"))
    assert [m.figure for m in summary.cross_site] == ["response_auc", "pfs_harrell_c", "os_harrell_c"]
    matrix = summary.cross_site[0]
    assert matrix.models[0] == GLOBAL_MODEL
    assert sorted(matrix.models[1:]) == [local_model_label(s) for s in sorted(SITES)]
    assert matrix.sites == sorted(SITES) and len(matrix.values) == 4 and all(len(r) == 3 for r in matrix.values)
    east_row = matrix.models.index(local_model_label("east"))
    assert matrix.values[east_row][matrix.sites.index("east")].value == pytest.approx(0.7)  # the diagonal
    assert [row.held_out_site for row in summary.leave_one_site_out] == list(SITES)
    assert all(row.held_out_site not in row.trained_on for row in summary.leave_one_site_out)
    assert {(s.group, s.level, s.figure) for s in summary.subgroups} == {("age", "ge70", "response_auc"),
                                                                          ("sex", "female", "os_harrell_c")}
    assert summary.importance.patients == {s: 40 for s in SITES}
    assert [(a.exchange, a.site_id) for a in summary.absences] == [("round 2", "east")]
    assert all(site.privacy.epsilon == 2.9 for site in summary.sites)  # ε after every phase, not the last round's
    assert summary.references[0].label == "Local only"


def test_the_consortium_report_from_a_run_renders_every_plot_in_headless_chromium(results, tmp_path):
    summary = summary_from_results(RunResult.model_validate(results), tmp_path / "run")
    out = write_consortium_report(tmp_path / "consortium_report.html", summary)
    text = out.read_text(encoding="utf-8")
    for section in ("subgroups", "absences", "cross-site", "leave-one-site-out", "references", "importance",
                    "privacy"):
        assert f'id="{section}"' in text
    assert "8 planned training rounds" in text
    # 3 site forest plots (figures with intervals) + 3 heatmaps + 2 subgroup forest plots + global importance
    expected = 3 + 3 + 2 + 1
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == expected
    if find_chromium() is None:
        pytest.skip("Chromium is not installed (apt-get install -y chromium); CI installs it")
    page = check_page(out)
    assert page.errors == []
    assert len(page.images) == expected and page.broken_images == []


def test_a_remote_traceback_is_cut_to_its_message_in_the_absence_table():
    from server.consortium_summary import short_reason

    reason = "<class 'RayTaskError'>: Traceback (most recent call last):\n  File x\nMessage: Trying to add hooks twice"
    assert short_reason(reason) == "Trying to add hooks twice"
    assert short_reason("no reply within 120 s") == "no reply within 120 s"
    assert len(short_reason("x" * 1000)) == 240
