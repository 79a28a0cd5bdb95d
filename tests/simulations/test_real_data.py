"""Real public data as site folders: Fed-TCGA-BRCA (FLamby's split) and NCCTG lung (sites by institution) are the
generators' output, keep their splits, pass `oncofed-check-site` under their own dictionaries, and federate through
the main job (slow)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from client.data.site import assign_splits, fixed_test_ids
from simulations.datasets.fed_tcga_brca import make_sites as brca
from simulations.datasets.ncctg_lung import make_sites as lung

REPO = Path(__file__).resolve().parents[2]
BRCA = REPO / "simulations" / "datasets" / "fed_tcga_brca"
LUNG = REPO / "simulations" / "datasets" / "ncctg_lung"
# PROVENANCE.md: FLamby's train/test sizes and test-set deaths per center
TRAIN_SIZES = (248, 156, 164, 129, 129, 40)
TEST_SIZES = (63, 40, 42, 33, 33, 11)
TEST_DEATHS = (14, 4, 8, 3, 2, 1)


@pytest.mark.parametrize(("module", "folder"), [(brca, BRCA), (lung, LUNG)])
def test_the_shipped_site_folders_are_the_generators_output(tmp_path: Path, module, folder: Path) -> None:
    module.write_sites(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    shipped = sorted(p.relative_to(folder) for p in (folder / "sites").rglob("*") if p.is_file())
    assert written == sorted([Path("dictionary.yaml"), *shipped])
    for path in written:
        assert (tmp_path / path).read_bytes() == (folder / path).read_bytes(), path


def test_the_brca_sites_keep_flambys_split() -> None:
    sites = [BRCA / "sites" / f"center_{k}" for k in range(6)]
    patients = [pd.read_csv(s / "patients.csv") for s in sites]
    tests = [fixed_test_ids(s / "test_patients.csv", p["pid"]) for s, p in zip(sites, patients, strict=True)]
    assert [len(t) for t in tests] == list(TEST_SIZES)
    assert [len(p) - len(t) for p, t in zip(patients, tests, strict=True)] == list(TRAIN_SIZES)
    assert [int(p.loc[p["pid"].isin(t), "E"].sum()) for p, t in zip(patients, tests, strict=True)] == list(TEST_DEATHS)
    assert sum(len(p) for p in patients) == len(set(pd.concat(patients)["pid"])) == 1088  # no patient twice


def test_a_fixed_test_set_is_the_test_split_and_the_rest_is_train_or_validation(tmp_path: Path) -> None:
    ids = pd.Series([f"p{i}" for i in range(200)])
    split = assign_splits(ids, seed=1, validation_fraction=0.2, test_fraction=0.2, test_ids=frozenset({"p3", "p50"}))
    assert set(ids[split == "test"]) == {"p3", "p50"}
    assert 0.1 < np.mean(split == "validation") < 0.3 and set(split) == {"train", "validation", "test"}
    listed = tmp_path / "test.csv"
    listed.write_text("patient_id\np3\nnobody\n")
    with pytest.raises(ValueError, match="1 test patient id.*not in the site's export, e.g. nobody"):
        fixed_test_ids(listed, ids)
    listed.write_text("pid\np3\n")
    with pytest.raises(ValueError, match="needs a column patient_id"):
        fixed_test_ids(listed, ids)


def test_lung_institutions_stay_whole_within_one_of_three_sites() -> None:
    frames = {s: pd.read_csv(LUNG / "sites" / s / "patients.csv") for s in lung.SITES}
    institutions = [set(f["inst"]) for f in frames.values()]
    assert sum(len(i) for i in institutions) == len(set().union(*institutions)) == 18
    assert sum(len(f) for f in frames.values()) == 227  # 228 less the patient without an institution
    assert max(len(f) for f in frames.values()) - min(len(f) for f in frames.values()) <= 5


def consortium_app(tmp_path: Path, folder: Path) -> tuple[Path, dict[str, str]]:
    """The data set's consortium app (docs/onboarding.md step 2): the packages with its dictionary as the app's."""
    app = tmp_path / "app"
    for package in ("shared", "client", "server", "simulations"):
        shutil.copytree(REPO / package, app / package, ignore=shutil.ignore_patterns("__pycache__", "results", "sites"))
    shutil.copy(folder / "dictionary.yaml", app / "shared" / "dictionaries" / "default.yaml")
    return app, os.environ | {"PYTHONPATH": str(app), "OMP_NUM_THREADS": "1"}


CHECK_EVERY_SITE = """
import contextlib, io, json, sys
from pathlib import Path
from client.data.check import main
results = {}
for toml in sys.argv[2:]:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = main(["--site-config", toml, "--dictionary", sys.argv[1]])
    results[Path(toml).parent.name] = [code, printed.getvalue()]
print(json.dumps(results))
"""


@pytest.mark.parametrize("folder", [BRCA, LUNG], ids=["fed_tcga_brca", "ncctg_lung"])
def test_every_site_folder_passes_oncofed_check_site(tmp_path: Path, folder: Path) -> None:
    """`oncofed-check-site` (client.data.check main) on each site folder, in the data set's consortium app."""
    app, environment = consortium_app(tmp_path, folder)
    tomls = sorted(str(p) for p in (folder / "sites").glob("*/site.toml"))
    done = subprocess.run([sys.executable, "-c", CHECK_EVERY_SITE, str(folder / "dictionary.yaml"), *tomls],
                          cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(results) == (6 if folder == BRCA else 3)
    for site, (code, printed) in results.items():
        assert code == 0 and "Usable: yes" in printed, site + printed[-2000:]
        assert "OS: events" in printed and "Best response:" not in printed


@pytest.mark.slow
def test_fed_tcga_brca_federates_through_the_product(tmp_path: Path) -> None:
    """Two rounds without DP through the ClientApp and the coordinator (in process; the main job's runs are
    simulations/benchmarks/real_data.py's), FLamby's test sets: every center reports a test C-index."""
    app, environment = consortium_app(tmp_path, BRCA)
    shutil.copytree(BRCA / "sites", tmp_path / "sites", ignore=shutil.ignore_patterns("state"))
    shutil.copy(BRCA / "dictionary.yaml", tmp_path / "dictionary.yaml")  # each site.toml's copy: ../../dictionary.yaml
    shutil.copytree(REPO / "tests", app / "tests", ignore=shutil.ignore_patterns("__pycache__", "data"))
    done = subprocess.run([sys.executable, "-m", "tests.federation_of_site_folders", str(tmp_path / "sites"),
                           str(tmp_path / "runs")], cwd=app, env=environment, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert not result["test_missing"]
    assert [result["test"][f"center_{k}"]["num-examples"] for k in range(6)] == list(TEST_SIZES)
    assert all(0.0 <= result["test"][f"center_{k}"]["os-cindex"] <= 1.0 for k in range(6))


def test_tuning_runs_each_new_candidate_at_every_tuning_seed_and_says_so(tmp_path: Path, monkeypatch) -> None:
    """--tune: a candidate is measured at each of TUNING_SEEDS on validation (mean reported, each seed kept), without
    site reports; a record with the same settings and seeds is not rerun; a seed-42-only record is shown as such."""
    from simulations.benchmarks import real_data

    calls = []

    def fake_main_job(app, sites, name, seed, epsilon, settings, references):
        calls.append((seed, settings, references))
        figure = {42: 0.7, 43: 0.8, 44: 0.9}[seed]
        return {"rounds": [{"validation": {"a": {real_data.KEY: figure}, "b": {real_data.KEY: figure}, "c": {}}}]}

    monkeypatch.setattr(real_data, "main_job", fake_main_job)
    monkeypatch.setattr(real_data, "fresh_sites", lambda dataset, work, epsilon: work / "sites")
    monkeypatch.setitem(real_data.TUNING_GRID, "fed_tcga_brca", [{}, {"hidden-size": "8"}])
    done = [{"settings": {}, "validation_c_index": 0.6},
            {"settings": {"hidden-size": "8"}, "validation_by_seed": {"42": 0.1, "43": 0.2, "44": 0.3},
             "validation_c_index": 0.2}]
    trials = real_data.tune("fed_tcga_brca", tmp_path, tmp_path, done)
    assert [c[0] for c in calls] == [42, 43, 44]  # the seed-42-only record of {} is measured again; hidden 8 is not
    assert all(c[1] == {"site-reports": "false"} and not c[2] for c in calls)
    assert trials[-1] == {"settings": {}, "validation_by_seed": {"42": 0.7, "43": 0.8, "44": 0.9},
                          "validation_c_index": pytest.approx(0.8)}
    trials.append({"settings": {"learning-rate": "0.1"}, "validation_by_seed": {"42": 0.5, "43": 0.6},
                   "validation_c_index": 0.55})
    text = real_data.render_markdown({"title": "t", "description": "d", "table": [], "settings": {}, "tuning": trials,
                                      "meta": {"command": "c", "minutes": 1.0, "machine": "m", "load_average": "1"}})
    assert "- run-configuration defaults: 0.600 (seed 42)" in text
    assert "- run-configuration defaults: 0.800 (mean of seeds 42: 0.700, 43: 0.800, 44: 0.900)\n" in text
    # a candidate run at fewer seeds is set beside the chosen settings on its own seeds
    assert "0.550 (mean of seeds 42: 0.500, 43: 0.600; the chosen settings at these seeds: 0.750)" in text


def test_the_linear_cox_anchor_chooses_its_penalty_on_validation_and_tests_once(tmp_path: Path, monkeypatch) -> None:
    """simulations/benchmarks/fed_tcga_brca_cox_anchor.py: the ridge penalty is the best mean validation client C
    over the product's validation splits; the test figure is the mean of FLamby's six test sets' C-indices."""
    from simulations.benchmarks import fed_tcga_brca_cox_anchor as anchor

    monkeypatch.setattr(anchor, "RESULTS", tmp_path / "anchor.json")
    monkeypatch.setattr(anchor, "PENALIZERS", (0.03, 1.0))
    anchor.main()
    report = json.loads((tmp_path / "anchor.json").read_text())
    validation = {float(p): v["mean"] for p, v in report["validation_client_mean"].items()}
    assert report["chosen_penalizer"] == max(validation, key=validation.get)
    assert len(report["test_per_center"]) == 6
    assert report["test_client_mean"] == pytest.approx(np.mean(report["test_per_center"]))
    low, high = report["test_bootstrap_of_client_mean"]["interval_95"]
    assert low < report["test_client_mean"] < high and report["test_bootstrap_of_client_mean"]["std"] > 0
