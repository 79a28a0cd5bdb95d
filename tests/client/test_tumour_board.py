"""The tumour-board comparison: every regimen, sane numbers, honest limits, clear refusals of bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from client.tumour_board.run_bundle import RunNotUsable, load_run
from client.tumour_board.board import (
    PatientInputError,
    compare_frame,
    median_days,
    open_board_site,
    out_of_distribution,
    patients_from_records,
    read_patients,
)
from client.evaluation.validation import subgroup_metrics
from client.tumour_board.cli import main
from shared.contract import DataContractError
from shared.metrics import Estimate, SubgroupEvaluation, subgroup_masks
from shared.vocabulary import CancerType, regimens_for
from tests.client.board_run import SITE, breast_patient, make_run
from tests.factories import patient_table

SHAP_SAMPLES = 16


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir, _ = make_run(tmp_path_factory.mktemp("board"))
    return run_dir


@pytest.fixture(scope="module")
def bundle(run: Path):
    return load_run(run, last_rounds=3)


@pytest.fixture(scope="module")
def site(bundle):
    return open_board_site(bundle, SITE)


def _check_comparison(comparison, cancer_type: str) -> None:
    assert [r.regimen for r in comparison.regimens] == [r.code for r in regimens_for(CancerType(cancer_type))]
    assert len(comparison.ensemble) == 3
    for row in comparison.regimens:
        p = row.response_probability
        assert 0.0 <= p.lower <= p.value <= p.upper <= 1.0
        assert p.upper > p.lower, "three different rounds must not agree to the last digit"
        for endpoint in (row.pfs, row.os):
            mean, lower, upper = (np.array(endpoint.survival), np.array(endpoint.lower), np.array(endpoint.upper))
            assert len(mean) == len(comparison.time_grid_days)
            for curve in (mean, lower, upper):
                assert np.all((curve >= 0) & (curve <= 1))
                assert np.all(np.diff(curve) <= 1e-12), "survival curves never rise"
            assert np.all(lower <= mean + 1e-12) and np.all(mean <= upper + 1e-12)
            median = endpoint.median_days
            if median.value is not None:
                assert median.lower is not None and median.lower <= median.value
                assert median.upper is None or median.value <= median.upper
        for output in ("response", "pfs", "os"):
            assert 1 <= len(row.drivers[output]) <= 5
            magnitudes = [abs(d.shap) for d in row.drivers[output]]
            assert magnitudes == sorted(magnitudes, reverse=True)
    assert "not causal" in comparison.notice


def test_one_patient_every_regimen_sane_numbers(bundle, site) -> None:
    patients = patients_from_records([breast_patient()], "patient.json")
    [comparison] = compare_frame(bundle, site, patients, shap_samples=SHAP_SAMPLES)
    _check_comparison(comparison, "breast")
    assert not any(r.given_in_record for r in comparison.regimens), "a prospective patient was given nothing yet"
    breast = [s for s in comparison.subgroup_performance if (s.group, s.level) == ("Cancer type", "breast")]
    assert breast and breast[0].response_auc == "0.64 (0.41–0.85)" and breast[0].n == 20
    age = [s for s in comparison.subgroup_performance if s.group == "Age"]
    assert age and age[0].response_auc == "not reported"


def test_csv_of_patients_each_cancer_type(bundle, site, tmp_path: Path) -> None:
    frame = patient_table(40, seed=11, site="board")
    chosen = frame.groupby("cancer_type").head(1)
    chosen.to_csv(tmp_path / "patients.csv", index=False)
    patients = read_patients(tmp_path / "patients.csv")
    comparisons = compare_frame(bundle, site, patients, top_k=3, shap_samples=SHAP_SAMPLES)
    assert sorted(c.cancer_type for c in comparisons) == sorted(c.value for c in CancerType)
    for comparison, (_, row) in zip(comparisons, chosen.iterrows(), strict=True):
        _check_comparison(comparison, row["cancer_type"])
        given = [r.regimen for r in comparison.regimens if r.given_in_record]
        assert given == [row["regimen"]], "the regimen the patient actually received is marked"


def test_cli_json_output(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    patient = tmp_path / "p.json"
    patient.write_text(json.dumps(breast_patient(patient_id="cli-1")))
    out = tmp_path / "comparison.json"
    code = main(["compare", str(patient), "--run", str(run), "--site", SITE, "--format", "json", "--json", str(out),
                 "--shap-samples", str(SHAP_SAMPLES), "--ensemble-rounds", "2"])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert printed[0]["patient_id"] == "cli-1" and len(printed[0]["ensemble"]) == 2
    assert {r["regimen"] for r in printed[0]["regimens"]} == {r.code for r in regimens_for(CancerType.BREAST)}


def test_cli_table_output(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    patient = tmp_path / "p.json"
    patient.write_text(json.dumps(breast_patient()))
    assert main(["compare", str(patient), "--run", str(run), "--site", SITE, "--shap-samples", "8"]) == 0
    shown = capsys.readouterr().out
    for code in (r.code for r in regimens_for(CancerType.BREAST)):
        assert code in shown
    assert "not causal" in shown and "subgroups" in shown


@pytest.mark.parametrize(("change", "field", "rule"), [
    ({"regimen": "FOLFOX"}, "regimen", "not a breast regimen"),
    ({"regimen": "MAGIC-CURE"}, "regimen", "unknown code"),
    ({"cancer_type": "melanoma"}, "cancer_type", "melanoma"),
    ({"age_years": 150}, "age_years", "less than or equal to 110"),
    ({"ki67_percent": -5}, "ki67_percent", "greater than or equal to 0"),
    ({"age_years": None}, "age_years", "required column is missing"),
    ({"tumour_size": 30}, "tumour_size", "not in the data contract"),
    ({"pfs_days": 400, "os_days": 200, "pfs_event": True, "os_event": False}, "pfs_days", "cannot outlast"),
])
def test_bad_patient_rejected_naming_field_and_rule(change: dict, field: str, rule: str) -> None:
    with pytest.raises(DataContractError) as raised:
        patients_from_records([breast_patient(**change)], "patient.json")
    message = str(raised.value)
    assert f"column '{field}'" in message and rule in message, message
    assert message.count("patient.json") == 1


def test_cli_rejects_bad_input_with_exit_2(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(breast_patient(age_years=7)))
    assert main(["compare", str(bad), "--run", str(run), "--site", SITE]) == 2
    assert "age_years" in capsys.readouterr().out
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert main(["compare", str(broken), "--run", str(run), "--site", SITE]) == 2
    assert "not valid JSON" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "missing.json"), "--run", str(run), "--site", SITE]) == 2
    assert "no such file" in capsys.readouterr().out
    assert main(["compare", str(bad), "--run", str(tmp_path), "--site", SITE]) == 2
    assert "no config.json" in capsys.readouterr().out
    assert main(["compare", str(bad), "--run", str(run), "--site", "nowhere"]) == 2
    assert "known sites: hospital_a" in capsys.readouterr().out


def test_not_a_json_object_is_refused() -> None:
    with pytest.raises(DataContractError, match="JSON object"):
        patients_from_records([["age_years", 50]], "patient.json")  # type: ignore[list-item]
    with pytest.raises(DataContractError, match="no patient"):
        patients_from_records([], "patient.json")
    with pytest.raises(PatientInputError, match="no such file"):
        read_patients("/nonexistent/p.json")


def test_run_without_checkpoints_is_refused(run: Path, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text((run / "config.json").read_text())
    with pytest.raises(RunNotUsable, match="no checkpoints"):
        load_run(tmp_path)


def test_out_of_distribution_flags(bundle, site) -> None:
    row = patients_from_records([breast_patient(tumour_size_mm=399, charlson_index=20)], "p.json").iloc[0]
    flags = {f.field: f for f in out_of_distribution(row, bundle, site.background)}
    assert flags["tumour_size_mm"].kind == "beyond-range" and "above the pooled training range" in \
        flags["tumour_size_mm"].detail
    assert flags["charlson_index"].kind in ("beyond-range", "extreme-z")
    assert "age_years" not in flags
    typical = patients_from_records([breast_patient()], "p.json").iloc[0]
    assert out_of_distribution(typical, bundle, site.background) == []
    # a code no site reported, and a modality pattern the site never trained on
    counts = {**bundle.stats.category_counts, "race_ethnicity": {**bundle.stats.category_counts["race_ethnicity"],
                                                                 "white": 0.0}}
    unseen = replace(bundle, stats=bundle.stats.model_copy(update={"category_counts": counts}))
    only_clinical = site.background.copy()
    only_clinical.loc[:, ["grade", "er_positive", "pr_positive", "her2_positive", "ki67_percent", "msi_high",
                          "pdl1_tps_percent"]] = np.nan
    only_clinical.loc[:, ["tumour_size_mm", "suv_max", "mtv_ml", "lesion_count"]] = np.nan
    flags = {f.field: f for f in out_of_distribution(typical, unseen, only_clinical)}
    assert flags["race_ethnicity"].kind == "unseen-code"
    assert flags["modalities"].kind == "unseen-modality-pattern" and flags["modalities"].value == \
        "clinical+pathology+imaging"


def test_median_days() -> None:
    grid = np.array([90.0, 180.0, 270.0])
    assert median_days(np.array([0.8, 0.6, 0.4]), grid) == pytest.approx(225.0)
    assert median_days(np.array([0.5, 0.4, 0.3]), grid) == pytest.approx(90.0)
    assert median_days(np.array([0.9, 0.8, 0.7]), grid) is None
    assert median_days(np.array([0.2, 0.1, 0.0]), grid) == pytest.approx(90 * 0.5 / 0.8)


def test_the_board_finds_the_federated_figures_a_site_sent_for_each_of_the_patients_subgroups(bundle, site) -> None:
    """Age ≥ 70 and comorbidity levels carry symbols; the site's outgoing keys and the board's lookup must agree."""
    patients = patients_from_records([breast_patient(age_years=74, charlson_index=3)], "p.json")
    memberships = [(g, lv) for g, lv, rows in subgroup_masks(patients) if bool(rows[0])]
    assert ("Age", "≥ 70") in memberships and ("Comorbidity (Charlson)", "≥ 3") in memberships
    figure = Estimate(value=0.7, lower=0.6, upper=0.8, n=40)
    sent = subgroup_metrics([SubgroupEvaluation(group=g, level=lv, n=40, response_auc=figure, response_brier=figure,
                                                pfs_harrell_c=figure, os_harrell_c=figure)
                             for g, lv in memberships], min_cell_size=10)
    federated = replace(bundle, metrics=bundle.metrics.model_copy(update={"test": {SITE: sent}}))
    [comparison] = compare_frame(federated, replace(site, report=None), patients, top_k=1, shap_samples=4)
    found = {(s.group, s.level): s for s in comparison.subgroup_performance if s.source.startswith("federated")}
    assert set(memberships) <= set(found)
    for group_level in (("Age", "≥ 70"), ("Comorbidity (Charlson)", "≥ 3")):
        assert found[group_level].n == 40 and found[group_level].response_auc == "0.70 (0.60–0.80)"


def test_subgroups_from_site_report(bundle, site) -> None:
    report = {"site_id": SITE, "subgroups": [
        {"group": "Sex", "level": "female", "n": 31,
         "response_auc": {"value": 0.7, "lower": 0.55, "upper": 0.83},
         "pfs_harrell_c": {"value": 0.6, "lower": 0.5, "upper": 0.7},
         "os_harrell_c": {"value": None, "suppressed": True}},
        {"group": "Sex", "level": "male", "n": 12, "response_auc": {"value": 0.9},
         "pfs_harrell_c": {"value": 0.9}, "os_harrell_c": {"value": 0.9}}]}
    with_report = replace(site, report=report)
    patients = patients_from_records([breast_patient()], "p.json")
    [comparison] = compare_frame(bundle, with_report, patients, top_k=1, shap_samples=4)
    sex = [s for s in comparison.subgroup_performance if s.group == "Sex"]
    assert sex[0].source.startswith("site report") and sex[0].level == "female" and sex[0].n == 31
    assert sex[0].response_auc == "0.70 (0.55–0.83)" and sex[0].os_cindex == "not reported"
    assert all(s.level == "female" for s in sex)


def test_csv_frame_keeps_contract_dtypes(tmp_path: Path) -> None:
    frame = pd.DataFrame([breast_patient()])
    frame.to_csv(tmp_path / "one.csv", index=False)
    patients = read_patients(tmp_path / "one.csv")
    assert patients.loc[0, "er_positive"] == 1.0 and patients.loc[0, "regimen"] == "AC-T"


def test_the_ensemble_carries_the_final_models_response_recalibration_to_the_earlier_rounds(tmp_path):
    """The coordinator folds (a, b) into latest.pt only (round files never change); every member gets it."""
    from server.checkpoint import ServerState, save_checkpoint
    from shared.model import fold_response_recalibration

    run_dir, _ = make_run(tmp_path, rounds=3)
    plain = load_run(run_dir, last_rounds=3)
    final = torch.load(run_dir / "checkpoints" / "round_003.pt", weights_only=True)
    state = ServerState.model_validate_json(final["server_state"]).model_copy(update={"recalibration": (0.5, -0.2)})
    save_checkpoint(run_dir, state, fold_response_recalibration(final["model"], 0.5, -0.2), {}, round_file=False)
    assert torch.load(run_dir / "checkpoints" / "round_003.pt", weights_only=True)["server_state"] == \
        final["server_state"]
    recalibrated = load_run(run_dir, last_rounds=3)
    for before, after in zip(plain.members, recalibrated.members):
        torch.testing.assert_close(after.model.response_head.weight, before.model.response_head.weight * 0.5)
        torch.testing.assert_close(after.model.response_head.bias, before.model.response_head.bias * 0.5 - 0.2)
        torch.testing.assert_close(after.model.pfs_head.effect.weight, before.model.pfs_head.effect.weight)
