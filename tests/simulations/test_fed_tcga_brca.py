"""Fed-TCGA-BRCA: the packaged data and FLamby's split, its integrity and contract checks, the C-index, the benchmark."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from lifelines.utils import concordance_index

from shared.contract import DataContractError
from simulations.benchmarks.brca_training import cox_nll, harrell_c, risk_set_mask
from simulations.datasets.fed_tcga_brca.loader import (
    CHECKSUMS,
    DATA_DIR,
    FEATURE_COLUMNS,
    DataIntegrityError,
    SurvivalArrays,
    arrays_of,
    load_centers,
)

# PROVENANCE.md: train/test sizes and test-set deaths per center
TRAIN_SIZES = (248, 156, 164, 129, 129, 40)
TEST_SIZES = (63, 40, 42, 33, 33, 11)
TEST_DEATHS = (14, 4, 8, 3, 2, 1)


def test_the_six_centers_keep_flambys_split():
    centers = load_centers()
    assert [len(c.train) for c in centers] == list(TRAIN_SIZES)
    assert [len(c.test) for c in centers] == list(TEST_SIZES)
    assert sum(TRAIN_SIZES) == 866 and sum(TEST_SIZES) == 222
    assert [int(c.test["E"].sum()) for c in centers] == list(TEST_DEATHS)
    ids = [set(c.train["pid"]) | set(c.test["pid"]) for c in centers]
    assert sum(len(i) for i in ids) == len(set().union(*ids)) == 1088  # no patient in two places
    assert arrays_of(centers[0].train).features.shape == (248, len(FEATURE_COLUMNS)) == (248, 39)


def _copy(tmp_path):
    target = tmp_path / "brca"
    shutil.copytree(DATA_DIR, target, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return target


def test_an_altered_file_fails_the_checksum_with_a_clear_error(tmp_path):
    folder = _copy(tmp_path)
    text = (folder / "brca.csv").read_text()
    (folder / "brca.csv").write_text(text.replace("TCGA-E2-A9RU,90,", "TCGA-E2-A9RU,89,", 1))
    with pytest.raises(DataIntegrityError, match=r"brca\.csv: sha256 .* differs from the published"):
        load_centers(folder)
    (folder / "train_test_split.csv").unlink()
    with pytest.raises(DataIntegrityError, match=r"train_test_split\.csv: missing"):
        load_centers(folder)


def _sums(folder):
    return {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in CHECKSUMS}


def test_contract_errors_name_row_column_and_rule(tmp_path):
    folder = _copy(tmp_path)
    lines = (folder / "brca.csv").read_text().splitlines()
    cells = lines[1].split(",")
    cells[1] = "abc"  # age
    cells[3] = "2"  # a one-hot column
    lines[1] = ",".join(cells)
    lines[2] = lines[2].rsplit(",", 1)[0] + ",-5.0"  # negative time
    (folder / "brca.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataContractError) as caught:
        load_centers(folder, checksums=_sums(folder))
    found = {(v.row, v.column) for v in caught.value.violations}
    assert {(1, "age_at_index"), (1, "ethnicity_not reported"), (2, "T")} <= found
    assert all("brca.csv" in v.source for v in caught.value.violations)


def test_a_missing_column_and_an_unknown_split_are_refused(tmp_path):
    folder = _copy(tmp_path)
    frame = pd.read_csv(folder / "brca.csv").drop(columns=["race_asian"])
    frame.to_csv(folder / "brca.csv", index=False)
    with pytest.raises(DataContractError, match="race_asian"):
        load_centers(folder, checksums=_sums(folder))
    folder = _copy(tmp_path / "second")
    split = (folder / "train_test_split.csv").read_text().replace("train,train_0", "train,train_7", 1)
    (folder / "train_test_split.csv").write_text(split)
    with pytest.raises(DataContractError, match="fold2"):
        load_centers(folder, checksums=_sums(folder))


def test_harrell_c_agrees_with_lifelines_and_a_hand_count():
    rng = np.random.default_rng(3)
    n = 120
    data = SurvivalArrays(features=np.zeros((n, 1), np.float32), event=rng.random(n) < 0.4,
                          time=rng.integers(1, 400, n).astype(float))  # integer days: ties in time, too
    risk = rng.normal(size=n)
    assert harrell_c(data, risk) == pytest.approx(concordance_index(data.time, -risk, data.event), abs=1e-9)
    # 3 patients: deaths at 1 and 2, censored at 3; risk orders (1, 2) right, (1, 3) right, (2, 3) wrong
    tiny = SurvivalArrays(np.zeros((3, 1), np.float32), np.array([True, True, False]), np.array([1.0, 2.0, 3.0]))
    assert harrell_c(tiny, np.array([3.0, 1.0, 2.0])) == pytest.approx(2 / 3)


def test_cox_partial_likelihood_by_hand():
    time, event = np.array([1.0, 2.0, 2.0, 5.0]), np.array([1.0, 1.0, 0.0, 1.0], np.float32)
    risk = torch.tensor([0.5, -0.2, 0.1, 0.3])
    r = risk.numpy().astype(float)
    expected = -((r[0] - np.log(np.exp(r).sum())) + (r[1] - np.log(np.exp(r[1:]).sum()))
                 + (r[3] - r[3])) / 3
    got = cox_nll(risk, risk_set_mask(time), torch.from_numpy(event))
    assert float(got) == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
def test_a_tiny_benchmark_run_writes_its_table(tmp_path):
    from simulations.benchmarks.fed_tcga_brca import main

    report = main(["--seeds", "42", "--rounds", "2", "--dp", "none", "8", "--methods", "fedadam", "pooled",
                   "--no-tune", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "fed_tcga_brca.json").read_text())
    assert [(r["method"], r["epsilon"]) for r in saved["rows"]] == [
        ("fedadam", None), ("pooled", None), ("fedadam", 8.0), ("pooled", 8.0)]
    assert saved["reference_cox"]["client_mean"] == pytest.approx(0.820, abs=0.002)
    assert saved["reference_cox"]["pooled"] == pytest.approx(0.843, abs=0.002)
    for row in report["rows"]:
        assert len(row["summary"]["centers"]) == 6 and 0.0 <= row["summary"]["pooled"]["mean"] <= 1.0
        if row["epsilon"] is not None:
            assert row["epsilon_spent_max"] <= 8.0 * 1.001
    table = (tmp_path / "fed_tcga_brca.md").read_text()
    assert "| FedAdam | 8 |" in table and "Pooled Cox (lifelines" in table


@pytest.mark.slow
def test_in_process_grid_gives_the_model_flowers_simulation_gives():
    """The benchmark drives ClientApp and strategy in process; Flower's own engine must reach the same model."""
    from simulations.benchmarks.brca_federation import BenchmarkPlan, run_in_process, run_with_flower_simulation

    plan = BenchmarkPlan(method="fedadam", seed=42, rounds=2, epochs=2, weight_decay=0.01)
    here = run_in_process(plan, load_centers())
    there = run_with_flower_simulation(plan)
    assert here.keys() == there.keys()
    for name in here:
        np.testing.assert_allclose(here[name], there[name], rtol=1e-5, atol=1e-6)
