"""The synthetic consortium: determinism, the data contract, calibration, effect modifiers and the oracle."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sksurv.nonparametric import kaplan_meier_estimator

from shared.contract import CONTRACT_COLUMNS, GENOMIC, validate_frame
from shared.vocabulary import CancerType, regimens_for
from simulations.cohort import (
    CohortConfig,
    SiteCoding,
    SiteProfile,
    default_consortium,
    export_site_frame,
    generate_consortium,
    oracle_metrics,
    oracle_predictions,
    read_ground_truth,
    share_of_achievable,
    write_consortium,
)
from simulations.cohort.calibration import expected_presence, regimen_calibration, share_calibration
from simulations.cohort.cli import main as cli_main
from simulations.cohort.config import OutcomeModel
from simulations.cohort.generator import Consortium
from simulations.cohort.targets import POPULATIONS, REGIMEN_TARGETS, RESPONSE_CONTRASTS

LARGE = 100_000


@pytest.fixture(scope="module")
def default() -> Consortium:
    return generate_consortium(default_consortium())


@pytest.fixture(scope="module")
def large_timed() -> tuple[Consortium, float]:
    started = time.perf_counter()
    consortium = generate_consortium(default_consortium(LARGE))
    return consortium, time.perf_counter() - started


@pytest.fixture(scope="module")
def large(large_timed: tuple[Consortium, float]) -> Consortium:
    return large_timed[0]


@pytest.fixture(scope="module")
def written(default: Consortium, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_consortium(default, tmp_path_factory.mktemp("cohort") / "default")


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------- determinism
def test_same_seed_gives_byte_identical_files(written: Path, tmp_path: Path) -> None:
    again = write_consortium(generate_consortium(default_consortium()), tmp_path / "again")
    assert _files(again) == _files(written)


def test_different_seed_gives_different_patients(written: Path, tmp_path: Path) -> None:
    other = write_consortium(generate_consortium(default_consortium(seed=7)), tmp_path / "other")
    site = "metro_academic"
    assert (other / site / "patients.csv").read_bytes() != (written / site / "patients.csv").read_bytes()


def test_default_consortium_shape() -> None:
    config = default_consortium()
    sizes = sorted(s.n_patients for s in config.sites)
    assert len(config.sites) == 6
    assert 4000 <= config.n_patients <= 5000
    assert sizes[-1] >= 3 * sizes[0], "a few large sites and several small ones"
    assert {s.has_genomic_panel for s in config.sites} == {True, False}
    assert {s.has_pet_ct for s in config.sites} == {True, False}
    assert len({s.suv_scale for s in config.sites}) > 1


# ------------------------------------------------------------------------------------ the contract
def test_every_site_file_passes_the_contract(written: Path, default: Consortium) -> None:
    for cohort in default.sites:
        path = written / cohort.site_id / "patients.csv"
        frame = pd.read_csv(path)
        assert tuple(frame.columns) == CONTRACT_COLUMNS
        records = validate_frame(frame, path)
        assert len(records) == cohort.profile.n_patients
        assert all(r.patient_id.startswith(cohort.site_id + "-") for r in records)


def test_ground_truth_never_sits_in_a_site_folder(written: Path, default: Consortium) -> None:
    for cohort in default.sites:
        assert sorted(p.name for p in (written / cohort.site_id).iterdir()) == ["patients.csv", "site.json"]
        assert (written / "_ground_truth" / cohort.site_id / "regimen_truth.csv").is_file()
    summary = json.loads((written / "valley_community" / "site.json").read_text())
    assert summary["modalities"] == {"clinical": True, "pathology": True, "imaging": True, "pet_ct": False,
                                     "genomic": False}
    assert summary["n_patients"] == sum(summary["cancer_types"].values())
    assert summary["patients_with_modality"]["genomic"] == 0


def test_outcomes_are_consistent(default: Consortium) -> None:
    patients = default.patients
    assert (patients["pfs_days"] <= patients["os_days"]).all()
    assert (patients["pfs_days"] >= 1).all()
    # an OS event implies a PFS event (death ends progression-free survival)
    assert not (patients["os_event"] & ~patients["pfs_event"]).any()
    assert 0.1 < 1 - patients["os_event"].mean() < 0.6, "administrative censoring and loss to follow-up"
    assert patients["patient_id"].is_unique
    for cancer in CancerType:
        given = set(patients.loc[patients["cancer_type"] == cancer.value, "regimen"])
        assert given <= {r.code for r in regimens_for(cancer)}


def test_sex_and_biology_follow_the_cancer(large: Consortium) -> None:
    patients = large.complete_patients
    assert (patients.loc[patients["cancer_type"] == "ovarian", "sex"] == "female").all()
    lung = patients[patients["histology"] == "nsclc_adenocarcinoma"]
    egfr_by_race = lung.groupby(lung["race_ethnicity"] == "asian")["egfr"].mean()
    assert egfr_by_race[True] > 2.5 * egfr_by_race[False]
    breast = patients[patients["cancer_type"] == "breast"]
    assert breast["pdl1_tps_percent"].isna().all() and breast["her2_positive"].notna().all()


# ------------------------------------------------------------------------------------ calibration
def test_regimen_response_and_medians_meet_published_targets(large: Consortium) -> None:
    table = regimen_calibration(large)
    missed = table[~table["within"]]
    assert missed.empty, f"outside tolerance:\n{missed[['regimen', 'quantity', 'target', 'generated']]}"
    assert (table["n"] >= 200).all()


def test_prevalences_and_case_mix_meet_targets(large: Consortium) -> None:
    table = share_calibration(large)
    missed = table[~table["within"]]
    assert missed.empty, f"outside tolerance:\n{missed[['quantity', 'target', 'generated']]}"


def test_missingness_per_site_matches_profiles(large: Consortium) -> None:
    table = expected_presence(large)
    assert table["within"].all(), table[~table["within"]]
    for cohort in large.sites:
        patients = cohort.patients
        if not cohort.profile.has_genomic_panel:
            assert patients[list(GENOMIC)].isna().all().all()
        if not cohort.profile.has_pet_ct:
            assert patients[["suv_max", "mtv_ml"]].isna().all().all()
            assert patients["tumour_size_mm"].notna().mean() > 0.85


def test_scanner_factor_shifts_recorded_suv(large: Consortium) -> None:
    coastal = large.site("coastal_regional")
    recorded = coastal.patients["suv_max"].astype(float)
    true = coastal.complete_patients["suv_max"].astype(float)
    ratio = (recorded / true).dropna()
    assert ratio.median() == pytest.approx(coastal.profile.suv_scale, abs=0.02)


# ------------------------------------------------------------------------------- effect modifiers
def _counterfactual(consortium: Consortium, column: str = "p_response") -> pd.DataFrame:
    return consortium.truth.pivot(index="patient_id", columns="regimen", values=column)


def test_anti_her2_helps_her2_positive_only(large: Consortium) -> None:
    breast = large.complete_patients.query("cancer_type == 'breast'").set_index("patient_id")
    response = _counterfactual(large).loc[breast.index]
    gain = response["TCHP"] - response["AC-T"]
    her2 = breast["her2_positive"].astype(bool)
    assert gain[her2].mean() > 0.15
    assert gain[~her2].mean() < 0
    # and practice follows: HER2+ patients mostly get TCHP, HER2- almost never
    assert (breast.loc[her2, "regimen"] == "TCHP").mean() > 0.85
    assert (breast.loc[~her2, "regimen"] == "TCHP").mean() < 0.05


def test_cetuximab_helps_kras_wild_type_only(large: Consortium) -> None:
    crc = large.complete_patients.query("cancer_type == 'colorectal'").set_index("patient_id")
    kras = crc["kras"].astype(bool)
    response = _counterfactual(large).loc[crc.index]
    os_median = _counterfactual(large, "median_os_days").loc[crc.index]
    response_gain = response["FOLFIRI-CETUXIMAB"] - response["FOLFIRI"]
    os_gain = os_median["FOLFIRI-CETUXIMAB"] - os_median["FOLFIRI"]
    assert response_gain[~kras].mean() > 0.10 and os_gain[~kras].median() > 30
    assert response_gain[kras].mean() < 0 and os_gain[kras].median() < 0


def test_immunotherapy_gain_grows_with_pdl1_and_platinum_helps_brca(large: Consortium) -> None:
    patients = large.complete_patients.set_index("patient_id")
    driver = (patients["egfr"] | patients["alk"]).fillna(False)
    lung = patients[(patients["cancer_type"] == "nsclc").to_numpy() & ~driver.to_numpy()]
    response = _counterfactual(large).loc[lung.index]
    gain = response["CARBOPLATIN-PEMETREXED-PEMBROLIZUMAB"] - response["CARBOPLATIN-PEMETREXED"]
    tps = lung["pdl1_tps_percent"].astype(float)
    assert gain[tps >= 50].mean() > gain[tps < 1].mean() + 0.1
    her2 = patients["her2_positive"].fillna(False).to_numpy(dtype=bool)
    breast = patients[(patients["cancer_type"] == "breast").to_numpy() & ~her2]
    response = _counterfactual(large).loc[breast.index]
    brca = (breast["brca1"] | breast["brca2"]).fillna(False).astype(bool)
    platinum_gain = response["PACLITAXEL-CARBOPLATIN"] - response["TC"]
    assert platinum_gain[brca].mean() > platinum_gain[~brca].mean() + 0.1


def test_frailty_worsens_outcomes(large: Consortium) -> None:
    given = large.truth[large.truth["given"]].set_index("patient_id")
    patients = large.complete_patients.set_index("patient_id").loc[given.index]
    ecog = patients["ecog"].astype(int)
    assert given.loc[ecog >= 2, "p_response"].mean() < given.loc[ecog == 0, "p_response"].mean() - 0.1
    assert given.loc[ecog >= 2, "median_os_days"].median() < 0.7 * given.loc[ecog == 0, "median_os_days"].median()
    charlson = patients["charlson_index"].astype(int)
    assert given.loc[charlson >= 3, "median_os_days"].median() < given.loc[charlson == 0, "median_os_days"].median()
    # confounding by indication: frail patients get fewer intensive regimens
    intensive = patients["regimen"].isin(["AC-T", "TCHP", "CARBOPLATIN-PEMETREXED-PEMBROLIZUMAB",
                                          "FOLFOX-BEVACIZUMAB", "FOLFIRI-CETUXIMAB",
                                          "CARBOPLATIN-PACLITAXEL-BEVACIZUMAB"])
    assert intensive[ecog >= 2].mean() < intensive[ecog == 0].mean() - 0.15


# ------------------------------------------------------------------------------------------ oracle
def test_oracle_survival_matches_the_sampled_outcomes(large: Consortium) -> None:
    """The closed-form S(t) and the sampler describe the same model (Kaplan-Meier vs mean true curve)."""
    given = large.truth[large.truth["given"] & (large.truth["regimen"] == "FOLFOX")]
    predicted = oracle_predictions(given, days=(180, 365, 730))
    for endpoint in ("pfs", "os"):
        times, km = kaplan_meier_estimator(given[f"{endpoint}_event"].astype(bool).to_numpy(),
                                           given[f"{endpoint}_days"].astype(float).to_numpy())
        for day in (180, 365, 730):
            observed = km[np.searchsorted(times, day, side="right") - 1]
            assert predicted[f"{endpoint}_survival_{day}d"].mean() == pytest.approx(observed, abs=0.03)


def test_oracle_predictions_cover_every_candidate_regimen(default: Consortium) -> None:
    truth = default.truth
    ids = default.patients.query("cancer_type == 'colorectal'")["patient_id"].head(50).tolist()
    given = oracle_predictions(truth, patient_ids=ids)
    cetuximab = oracle_predictions(truth, regimen="FOLFIRI-CETUXIMAB", patient_ids=ids, days=(0, 365, 3650))
    assert list(given.index) == ids and list(cetuximab.index) == ids
    assert (cetuximab["os_survival_0d"] == 1.0).all()
    assert (cetuximab["os_survival_365d"] >= cetuximab["pfs_survival_365d"]).all()
    assert (cetuximab["os_survival_365d"] > cetuximab["os_survival_3650d"]).all()
    assert ((cetuximab["p_response"] > 0) & (cetuximab["p_response"] < 1)).all()
    with pytest.raises(ValueError, match="not found"):
        oracle_predictions(truth, regimen="TCHP", patient_ids=ids)


def test_oracle_beats_an_ecog_only_baseline_at_every_site(default: Consortium) -> None:
    for cohort in default.sites:
        patients = cohort.patients.dropna(subset=["best_response"])
        responder = patients["best_response"].isin(["CR", "PR"]).to_numpy()
        ecog = patients[["ecog"]].astype(float).to_numpy()
        baseline = roc_auc_score(responder, LogisticRegression().fit(ecog, responder).predict_proba(ecog)[:, 1])
        oracle = oracle_metrics(cohort.truth, patient_ids=patients["patient_id"].tolist())
        assert oracle.response_auc > baseline + 0.05, cohort.site_id
        assert 0.6 < oracle.pfs_c_index < 0.95 and 0.6 < oracle.os_c_index < 0.95
        assert share_of_achievable(baseline, oracle.response_auc) < 1


def test_oracle_from_files_equals_oracle_in_memory(written: Path, default: Consortium) -> None:
    site = default.site("southside_public")
    test_ids = site.patients["patient_id"].iloc[::3].tolist()
    from_files = oracle_metrics(read_ground_truth(written, ["southside_public"]), patient_ids=test_ids)
    in_memory = oracle_metrics(site.truth, patient_ids=test_ids)
    assert from_files.n_patients == len(test_ids)
    assert from_files.response_auc == pytest.approx(in_memory.response_auc, abs=1e-9)
    assert from_files.os_c_index == pytest.approx(in_memory.os_c_index, abs=1e-6)
    outcomes = pd.read_csv(written / "southside_public" / "patients.csv")
    with_site_labels = oracle_metrics(read_ground_truth(written), patient_ids=test_ids, outcomes=outcomes)
    assert with_site_labels.pfs_c_index == pytest.approx(from_files.pfs_c_index, abs=1e-6)


# --------------------------------------------------------------------------- configuration, export
def test_configuration_rejects_inconsistent_sites() -> None:
    site = default_consortium().sites[0]
    with pytest.raises(ValidationError, match="duplicated site_id"):
        CohortConfig(sites=[site, site])
    with pytest.raises(ValidationError, match="unknown regimen codes"):
        SiteProfile(**{**site.model_dump(), "regimen_preference": {"FOLFOXIRI": 1.0}})
    with pytest.raises(ValidationError, match="not contract columns"):
        SiteCoding(column_names={"tumor_size": "size"})


def test_site_coding_renames_and_rescales_in_the_export_step(default: Consortium) -> None:
    patients = default.sites[0].patients
    coding = SiteCoding(column_names={"tumour_size_mm": "tumour_size_cm", "her2_positive": "HER2"},
                        tumour_size_unit="cm", boolean_codes=("1", "0"))
    exported = export_site_frame(patients, coding)
    assert "tumour_size_cm" in exported.columns and "tumour_size_mm" not in exported.columns
    assert exported["tumour_size_cm"].astype(float).median() == pytest.approx(
        patients["tumour_size_mm"].astype(float).median() / 10)
    assert set(exported["HER2"].dropna()) <= {"1", "0"}


def test_scaling_and_speed_of_a_large_cohort(large_timed: tuple[Consortium, float]) -> None:
    consortium, seconds = large_timed
    print(f"\n{LARGE:,} patients (with the truth under every regimen) in {seconds:.1f} s")
    assert abs(consortium.config.n_patients - LARGE) <= len(consortium.sites)
    assert seconds < 30


def test_console_command_writes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["--out", str(tmp_path / "cohort"), "--patients", "600", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "metro_academic" in printed and "womens_institute" in printed
    assert (tmp_path / "cohort" / "metro_academic" / "patients.csv").is_file()
    with pytest.raises(FileExistsError):
        (tmp_path / "busy").mkdir()
        (tmp_path / "busy" / "notes.txt").write_text("keep me")
        cli_main(["--out", str(tmp_path / "busy"), "--patients", "600"])


def test_the_published_tables_give_every_calibrated_regimen_a_target_in_a_named_subgroup():
    calibrated = {(cancer, code) for cancer, by_code in OutcomeModel().regimens.items() for code in by_code}
    targets = [(t.cancer, t.regimen) for t in REGIMEN_TARGETS]
    assert len(set(targets)) == len(targets) and set(targets) == calibrated  # each calibrated regimen once
    assert all(0 < t.response_rate < 1 and 0 < t.median_pfs_months < t.median_os_months and t.source
               for t in REGIMEN_TARGETS)
    assert all(c.regimen in {r.code for r in regimens_for(c.cancer)} and c.population in POPULATIONS.values()
               for c in RESPONSE_CONTRASTS)
    assert len({p.label for p in POPULATIONS.values()}) == len(POPULATIONS)
