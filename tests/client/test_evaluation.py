"""A site's evaluation figures leave out every figure that rests on fewer than the minimum cell size."""

from client.evaluation.cohort import evaluate_cohort
from client.flower import outbox
from shared.encoding import encode_cohort
from shared.harmonisation import pool_summaries, summarise_site
from tests.factories import GRID, patient_table, tiny_model


def test_figures_on_too_few_responders_or_events_are_suppressed_and_the_rest_may_leave():
    patients = patient_table(80, seed=3)
    patients["best_response"] = ["PR" if i < 6 else "PD" for i in range(80)]  # 6 responders
    patients["os_event"] = [i < 7 for i in range(80)]  # 7 deaths
    patients["pfs_event"] = [i < 65 for i in range(80)]  # 65 progressions, 15 censored
    stats = pool_summaries([summarise_site(patients, min_cell_size=1)])
    cohort = encode_cohort(patients, stats, GRID)

    figures = evaluate_cohort(tiny_model(), patients, cohort, GRID, min_cell_size=10, split="test")
    assert "response-auc" not in figures  # 6 responders < 10
    assert "os-cindex" not in figures  # 7 events < 10
    assert 0 < figures["pfs-cindex"] < 1 and figures["num-examples"] == 80
    outbox.check_metrics(figures, min_cell_size=10)  # what remains is allowed out

    everything = evaluate_cohort(tiny_model(), patients, cohort, GRID, min_cell_size=5, split="test")
    assert {"response-auc", "os-cindex", "pfs-cindex"} <= set(everything)  # the same data at a lower threshold

    patients["pfs_event"] = True  # 80 progressions, none censored: too few non-events (the one small-cell rule)
    no_censored = evaluate_cohort(tiny_model(), patients, encode_cohort(patients, stats, GRID), GRID, min_cell_size=10,
                                  split="test")
    assert "pfs-cindex" not in no_censored
