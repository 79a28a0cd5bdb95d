"""The regimen-ranking benchmark end to end on a small generated cohort: the product's federation (with the
propensity-weighted loss) and the classical anchor, scored against the generator's truth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.config import RunConfig
from shared.vocabulary import CancerType, regimens_for
from simulations.benchmarks.regimen_ranking import main, candidate_table
from simulations.cohort import default_consortium, generate_consortium, write_consortium
from simulations.references import simulated_sites

pytestmark = pytest.mark.slow  # generates a 600-patient cohort and runs a one-round federation


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_consortium(generate_consortium(default_consortium(600)), tmp_path_factory.mktemp("cohort") / "c")


def test_every_test_patient_is_scored_under_every_candidate_of_its_cancer_type(cohort: Path) -> None:
    config = RunConfig.from_mapping({"data-dir": str(cohort)})
    sites = simulated_sites(config)
    candidates = candidate_table(sites, cohort)
    assert set(candidates["patient_id"]) == {p for s in sites for p in s.part("test")["patient_id"]}
    for patient, rows in candidates.groupby("patient_id"):
        expected = {r.code for r in regimens_for(CancerType(rows["cancer_type"].iloc[0]))}
        assert set(rows["regimen"]) == expected and len(rows) == len(expected), patient
        assert rows["given"].sum() == 1 and rows["true_response"].between(0, 1).all()


def test_the_benchmark_trains_through_the_product_and_scores_a_saved_run_the_same(cohort: Path,
                                                                                  tmp_path: Path) -> None:
    out, runs = tmp_path / "ranking.json", tmp_path / "runs"
    common = ["--set", f"data-dir={cohort}", "--set", "hidden-size=16", "--set", "survival-interval-days=180"]
    assert main(["--quick", "--rows", "federated-dp-ipw", "anchor", "--out", str(out), "--runs-dir", str(runs),
                 *common]) == 0
    results = json.loads(out.read_text())
    points = {p["row"]: p["figures"] for p in results["points"]}
    assert set(points) == {"federated-dp-ipw", "anchor"}
    for figures in points.values():
        assert 0 <= figures["response_concordance"] <= 1 and 0 <= figures["top1_agreement"] <= 1
        assert 0 <= figures["regret"] <= figures["regret_random"] + 0.5 and figures["response_pairs"] > 0
    assert out.with_suffix(".md").read_text().startswith("| model |")
    run_dir = runs / "federated-dp-ipw-seed-42"
    ledgers = list((run_dir / "sites").glob("*/privacy_ledger.json"))
    assert ledgers
    for path in ledgers:
        entries = json.loads(path.read_text())["entries"]
        assert any(e["run_id"].endswith(":propensity") for e in entries)
        assert entries[-1]["epsilon_after"] <= 3.0 * 1.001
    assert (run_dir / "checkpoints" / "propensity.pt").is_file()
    # --run scores the run's saved final model: the same figures as when the benchmark trained it
    assert main(["--run", str(run_dir), "--out", str(tmp_path / "run.json")]) == 0
    saved = json.loads((tmp_path / "run.json").read_text())["points"][0]["figures"]
    assert saved == pytest.approx(points["federated-dp-ipw"])
