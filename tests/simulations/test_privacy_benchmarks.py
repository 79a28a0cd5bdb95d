"""The privacy benchmarks: the attacks measure what they claim, and both scripts run end to end on tiny settings."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from simulations.benchmarks import membership_inference as mia
from simulations.benchmarks import privacy_utility as pu
from tests.factories import patient_table

TINY = ["--set", "hidden-size=16", "--set", "num-rounds=1", "--set", "local-epochs=1",
        "--set", "survival-interval-days=180"]


@pytest.fixture(scope="module")
def tiny_cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    for index, size in enumerate((160, 120)):
        folder = root / f"site_{index}"
        folder.mkdir()
        patient_table(size, seed=20 + index, site=f"s{index}").to_csv(folder / "patients.csv", index=False)
    return root


def test_every_patient_is_in_exactly_half_the_shadow_models():
    membership = mia.shadow_membership(8, 50, seed=1)
    assert membership.shape == (8, 50) and (membership.sum(axis=0) == 4).all()
    with pytest.raises(ValueError, match="even and at least 4"):
        mia.shadow_membership(5, 50, seed=1)


def test_lira_finds_members_that_a_global_loss_threshold_misses():
    """Patients differ a lot in how hard they are; being trained on lowers each one's loss a little.

    A global loss threshold mostly sees the hardness; LiRA compares each patient with their own shadows."""
    rng = np.random.default_rng(3)
    patients, shadows = 400, 16
    hardness = rng.normal(3.0, 1.5, patients)
    shadow_in = mia.shadow_membership(shadows, patients, seed=4)
    shadow_losses = hardness + 0.1 * rng.normal(size=(shadows, patients)) - 0.3 * shadow_in
    member = rng.random(patients) < 0.5
    target_loss = hardness + 0.1 * rng.normal(size=patients) - 0.3 * member
    online, offline = mia.lira_scores(target_loss, shadow_losses, shadow_in)
    assert roc_auc_score(member, online) > 0.95
    assert roc_auc_score(member, offline) > 0.9
    assert roc_auc_score(member, -target_loss) < 0.65
    figures = mia.attack_figures(member, online, rng)
    assert figures["auc_lower"] <= figures["auc"] <= figures["auc_upper"] and figures["tpr_at_1pct_fpr"] > 0.5


def test_attack_figures_and_yeom_advantage_on_clear_cases():
    member = np.array([True] * 50 + [False] * 50)
    loss = np.concatenate([np.full(50, 0.25), np.full(50, 2.0)])
    figures = mia.attack_figures(member, -loss, np.random.default_rng(0))
    assert figures["auc"] == 1.0 and figures["tpr_at_1pct_fpr"] == 1.0
    assert mia.yeom_advantage(member, loss) == 1.0
    assert mia.yeom_advantage(member, np.ones(100)) == 0.0  # nothing to tell apart


def test_the_dp_ceiling_on_any_attack():
    assert mia.dp_roc_ceiling(1e-6, 0.0)["auc"] == pytest.approx(0.5, abs=1e-4)  # ε → 0: chance
    ceiling = mia.dp_roc_ceiling(3.0, 0.0)
    assert ceiling["tpr_at_1pct_fpr"] == pytest.approx(math.exp(3) * 0.01)
    # the trade-off curve's area for ε = 3 (two line segments meeting at FPR = (1 − e^−3) / (e^3 − e^−3))
    corner = (1 - math.exp(-3)) / (math.exp(3) - math.exp(-3))
    area = 0.5 * corner * math.exp(3) * corner + (1 - corner) * (1 - math.exp(-3) * (1 - corner) / 2)
    assert ceiling["auc"] == pytest.approx(area, abs=1e-6)
    assert mia.dp_roc_ceiling(3.0, 1e-3)["auc"] > ceiling["auc"]


@pytest.mark.slow
def test_the_membership_inference_audit_runs_end_to_end(tiny_cohort, tmp_path):
    out = tmp_path / "mia.json"
    assert mia.main(["--site", "site_0", "--shadows", "4", "--overfit-epochs", "3", "--data-dir", str(tiny_cohort),
                     "--seeds", "1", "2", "--out", str(out), *TINY]) == 0
    result = json.loads(out.read_text())
    assert [run["seed"] for run in result["runs"]] == [1, 2]
    assert [r["recipe"]["name"] for r in result["summary"]] == ["dp", "no-dp", "overfit"]
    assert all(r["seeds"] == 2 and r["attacks"]["lira_online"]["auc"]["std"] is not None for r in result["summary"])
    for record in result["runs"][1]["results"]:
        assert record["n_members"] + record["n_non_members"] == 160
        for attack in ("loss_threshold", "lira_online", "lira_offline"):
            assert 0 <= record["attacks"][attack]["auc"] <= 1
    assert "dp_ceiling" in result["runs"][0]["results"][0] and "dp_ceiling" not in result["runs"][0]["results"][1]
    assert out.with_suffix(".png").stat().st_size > 5_000
    with pytest.raises(ValueError, match="no site 'elsewhere'"):
        mia.main(["--site", "elsewhere", "--data-dir", str(tiny_cohort), "--out", str(out), *TINY])


def test_membership_audit_summary_is_the_mean_and_std_over_seeds(tmp_path):
    def audit(seed_shift: float) -> dict:
        attack = lambda auc: {"auc": auc + seed_shift, "tpr_at_1pct_fpr": 0.01, "yeom_advantage": 0.1}  # noqa: E731
        return {"recipe": {"name": "dp", "label": "DP"}, "holdout_utility": {"response-auc": 0.6},
                "attacks": {"loss_threshold": attack(0.52), "lira_online": attack(0.50), "lira_offline": attack(0.51)},
                "dp_ceiling": {"auc": 0.95, "tpr_at_1pct_fpr": 0.2}}
    (row,) = mia.summarise([{"seed": 1, "results": [audit(0.0)]}, {"seed": 2, "results": [audit(0.04)]}])
    assert row["seeds"] == 2 and row["dp_ceiling"]["auc"] == 0.95
    assert row["attacks"]["lira_online"]["auc"]["mean"] == pytest.approx(0.52)
    assert row["attacks"]["lira_online"]["auc"]["std"] == pytest.approx(np.std([0.50, 0.54], ddof=1))
    assert row["holdout_utility"]["response-auc"] == {"mean": pytest.approx(0.6), "std": pytest.approx(0.0)}
    assert mia.plot([row], tmp_path / "mia.png").stat().st_size > 5_000
    assert mia.table([row]).row_count == 1


def test_privacy_utility_configurations_summary_and_plot(tmp_path, tiny_cohort):
    assert pu.run_config(math.inf, 7, tmp_path, {}).dp is False
    overrides = {"num-rounds": 2, "data-dir": str(tiny_cohort)}
    config = pu.run_config(0.5, 7, tmp_path, overrides, phases="main-job")
    assert (config.dp, config.target_epsilon, config.seed, config.num_rounds, config.site_reports) == (
        True, 0.5, 7, 2, False)
    # the main job's validation phases, so the deployed model gets the default split's share of ε
    assert (config.share_local_models, config.leave_one_site_out, config.loso_rounds) == (True, True, 2)
    # phases off: only the deployed model trains, at the ε the default split leaves it (less than the site's whole ε)
    deployed = pu.deployed_model_epsilons(config)
    assert set(deployed) == {"site_0", "site_1"} and all(0.4 < e < 0.5 for e in deployed.values())
    alone = pu.run_config(0.5, 7, tmp_path, overrides)
    assert (alone.share_local_models, alone.leave_one_site_out, alone.local_references) == (False, False, False)
    assert alone.target_epsilon == pytest.approx(min(deployed.values()))
    with pytest.raises(ValueError, match="phases must be"):
        pu.run_config(0.5, 7, tmp_path, overrides, phases="some")
    # another file's points fill the pairs this one lacks, marked with their phases
    here = [{"epsilon": "3", "seed": 1}]
    other = {"overrides": {}, "phases": "main-job", "points": [{"epsilon": "3", "seed": 1}, {"epsilon": "3", "seed": 2},
                                                               {"epsilon": "3", "seed": 9}]}
    assert pu.added_points(other, {}, here, [1, 2]) == [{"epsilon": "3", "seed": 2, "phases": "main-job"}]
    with pytest.raises(ValueError, match="not comparable"):
        pu.added_points(other, {"num-rounds": 2}, here, [1, 2])
    points = [{"epsilon": eps, "seed": seed, "test_mean": {"response-auc": auc, "pfs-cindex": 0.6, "os-cindex": None},
               "epsilon_spent": {"a": float(eps) if eps != "inf" else 0.0}}
              for eps, seed, auc in (("1", 1, 0.60), ("1", 2, 0.64), ("inf", 1, 0.70), ("0.5", 1, 0.55))]
    summary = pu.summarise(points)
    assert [row["epsilon"] for row in summary] == ["0.5", "1", "inf"]
    assert summary[1]["response-auc"]["mean"] == pytest.approx(0.62)
    assert summary[1]["response-auc"]["std"] == pytest.approx(np.std([0.60, 0.64], ddof=1))
    assert summary[0]["response-auc"]["std"] is None and summary[2]["os-cindex"]["mean"] is None
    assert pu.plot(summary, tmp_path / "curve.png").stat().st_size > 5_000
    assert pu.table(summary).row_count == 3


@pytest.mark.slow
def test_the_privacy_utility_benchmark_runs_a_real_federation(tiny_cohort, tmp_path):
    out = tmp_path / "pu.json"
    assert pu.main(["--epsilons", "4", "--seeds", "1", "--out", str(out), "--set", f"data-dir={tiny_cohort}",
                    "--set", "round-timeout-s=120", *TINY]) == 0
    result = json.loads(out.read_text())
    (point,) = result["points"]
    assert point["epsilon"] == "4" and set(point["test"]) == {"site_0", "site_1"}
    assert 0 < max(point["epsilon_spent"].values()) <= 4 * 1.001
    assert out.with_suffix(".png").is_file()
    assert pu.main(["--epsilons", "4", "--seeds", "1", "--out", str(out), "--set", f"data-dir={tiny_cohort}",
                    "--set", "round-timeout-s=120", *TINY]) == 0  # already there: skipped, not run again
    assert json.loads(out.read_text())["points"] == [point]
