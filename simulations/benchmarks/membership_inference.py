"""Membership-inference audit: can an attacker tell a site's training patients from its held-out patients?

On one site of the default consortium, target models are trained the way a site trains in the federation
(client.training.dp_sgd.train_locally, round after round, with the ClientApp's noise calibration from
client.training.privacy): with DP-SGD at ε = 3 (the project default), without DP, and deliberately over-fitted without
DP (to show the attacks have teeth). Members = the target's training patients; non-members = the same site's
held-out (validation + test) patients. Two attacks score every patient:

* loss threshold (Yeom et al. 2018): a lower per-patient loss means "member";
* LiRA (Carlini et al. 2022, online and offline, fixed variance): shadow models trained the same way on
  random halves of the site's patients give, for each patient, the distribution of its loss when it was
  in the training set and when it was not; the score is the Gaussian likelihood ratio (offline: how unusually
  low the loss is for a non-member).

The attack statistic is the per-patient multitask log-likelihood (response + PFS + OS, shared.losses), the
quantity the model is trained on. Reported: attack AUC (sklearn roc_auc_score, with a bootstrap interval),
TPR at 1% FPR, and for DP targets the ceiling that (ε, δ)-DP puts on any attack's ROC curve. The target is a
single site training alone for every round — no other site's update dilutes its patients' influence — so
this is the attacker's best case within the federation's training recipe.

    python -m simulations.benchmarks.membership_inference                   # southside_public, 16 shadows, seed 42
    python -m simulations.benchmarks.membership_inference --seeds 42 43 44  # mean ± std over 3 seeds
    python -m simulations.benchmarks.membership_inference --shadows 8 --site valley_community

A seed sets the site's split (who is a member), the models' initialisation and training noise, and the shadows'
halves; the summary gives each attack's AUC and TPR at 1% FPR as mean ± std over the seeds.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from rich.console import Console
from rich.table import Table
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve

from client.data.loader import load_contract_csv
from client.data.site import assign_splits, simulated_site_dirs
from client.evaluation.cohort import evaluate_cohort
from client.training.dp_sgd import LocalTrainingPlan, PrivacyPlan, train_locally
from client.training.privacy import calibrate_noise, default_delta, steps_per_round
from shared.config import RunConfig
from shared.encoding import EncodedCohort, SurvivalGrid, encode_cohort
from shared.harmonisation import pool_summaries, summarise_site
from shared.losses import patient_losses
from shared.model import OncoFedNet, model_for
from simulations.benchmarks.output import finish
from simulations.main_job import parse_overrides

RESULTS_DIR = Path(__file__).parent / "results"
LOW_FPR = 0.01


@dataclass(frozen=True)
class TrainingRecipe:
    """How a target (and its shadows) is trained; everything else is the run configuration's default."""

    name: str
    label: str
    description: str
    epsilon: float | None  # None: no DP
    rounds: int
    local_epochs: int
    modality_dropout: float


def recipes(config: RunConfig, overfit_epochs: int) -> list[TrainingRecipe]:
    epsilon, rounds, epochs = config.target_epsilon, config.num_rounds, config.local_epochs
    return [
        TrainingRecipe("dp", f"DP ε = {epsilon:g}",
                       f"DP-SGD ε = {epsilon:g} (project default: {rounds} rounds × {epochs} epochs)",
                       epsilon, rounds, epochs, config.modality_dropout),
        TrainingRecipe("no-dp", "no DP", f"no DP ({rounds} rounds × {epochs} epochs)", None, rounds, epochs,
                       config.modality_dropout),
        TrainingRecipe("overfit", "no DP, over-fitted",
                       f"no DP, deliberately over-fitted (1 round × {overfit_epochs} epochs, no modality dropout)",
                       None, 1, overfit_epochs, 0.0),
    ]


@dataclass(frozen=True)
class SitePool:
    """One site's patients, encoded with the consortium's pooled scaling, and the target's membership."""

    site_id: str
    patients: pd.DataFrame
    cohort: EncodedCohort
    member: np.ndarray  # True: in the site's training split (the target trains on exactly these)


def load_site_pool(config: RunConfig, site_id: str) -> SitePool:
    """The site's patients via the project's loaders and splits; scaling pooled over every site's training split."""
    folders = simulated_site_dirs(config)
    names = [f.name for f in folders]
    if site_id not in names:
        raise ValueError(f"no site {site_id!r} in {folders[0].parent}; sites: {', '.join(names)}")
    frames = {f.name: load_contract_csv(f / "patients.csv") for f in folders}
    splits = {name: assign_splits(frame["patient_id"], config.seed, config.validation_fraction,
                                  config.test_fraction) for name, frame in frames.items()}
    stats = pool_summaries([summarise_site(frame.loc[splits[name] == "train"], min_cell_size=config.min_cell_size)
                            for name, frame in frames.items()])
    patients = frames[site_id]
    return SitePool(site_id=site_id, patients=patients, cohort=encode_cohort(patients, stats, grid_of(config)),
                    member=splits[site_id] == "train")


def grid_of(config: RunConfig) -> SurvivalGrid:
    return SurvivalGrid.from_config(config)


def subset(cohort: EncodedCohort, rows: np.ndarray) -> EncodedCohort:
    index = torch.as_tensor(np.flatnonzero(rows))
    return EncodedCohort.from_tensors([tensor[index] for tensor in cohort.tensors()])


def train_like_a_site(cohort: EncodedCohort, recipe: TrainingRecipe, config: RunConfig, seed: int) -> OncoFedNet:
    """A site's training over all rounds, as the ClientApp does it: a fresh model per round from the last weights,
    noise calibrated so that every planned round together spends ε at δ = 0.1 / n_train."""
    privacy = None
    if recipe.epsilon is not None:
        sample_rate, steps = steps_per_round(len(cohort), config.batch_size, recipe.local_epochs)
        sigma = calibrate_noise(recipe.epsilon, default_delta(len(cohort)), sample_rate, steps * recipe.rounds)
        privacy = PrivacyPlan(noise_multiplier=sigma, max_grad_norm=config.max_grad_norm, secure_mode=False,
                              secret_noise=False)  # synthetic sites: seeded, so the audit can be reproduced
    weights = model_for(config).state_dict()
    for server_round in range(1, recipe.rounds + 1):
        model = model_for(config)
        model.load_state_dict(weights)
        plan = replace(LocalTrainingPlan.from_config(config, seed=seed * 1009 + server_round),
                       local_epochs=recipe.local_epochs, modality_dropout=recipe.modality_dropout)
        train_locally(model, cohort, plan, privacy)
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    final = model_for(config)
    final.load_state_dict(weights)
    return final


def per_patient_loss(model: OncoFedNet, cohort: EncodedCohort) -> np.ndarray:
    """The multitask negative log-likelihood of each patient under the model (what training minimises)."""
    model.eval()
    with torch.no_grad():
        tensors = cohort.tensors()
        return patient_losses(*model(*tensors[:len(cohort.inputs())]), *tensors[len(cohort.inputs()):]).numpy()


def shadow_membership(num_shadows: int, num_patients: int, seed: int) -> np.ndarray:
    """(shadows, patients): each patient is in the training set of exactly half the shadows (Carlini et al.)."""
    if num_shadows < 4 or num_shadows % 2:
        raise ValueError(f"--shadows must be even and at least 4 (each patient in half of them), got {num_shadows}")
    order = np.random.default_rng(seed).uniform(size=(num_shadows, num_patients)).argsort(axis=0)
    return order < num_shadows // 2


def lira_scores(target_loss: np.ndarray, shadow_losses: np.ndarray, shadow_in: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(online, offline) LiRA scores per patient; higher = more likely a member.

    The statistic is the log-likelihood φ = −loss. Per patient, the mean of φ over shadows that trained on it
    (IN) and that did not (OUT); one variance per side pooled over patients (the fixed-variance variant,
    advised for few shadows). Online: log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out).
    Offline: log P_out(Φ ≤ φ).
    Written by hand: the attack is these few lines; ART/privacy-meter expect a single-label classifier wrapper.
    """
    phi, shadow_phi = -target_loss, -shadow_losses
    inside = np.where(shadow_in, shadow_phi, np.nan)
    outside = np.where(~shadow_in, shadow_phi, np.nan)
    mu_in, mu_out = np.nanmean(inside, axis=0), np.nanmean(outside, axis=0)
    sigma_in = float(np.nanstd(inside - mu_in)) + 1e-8
    sigma_out = float(np.nanstd(outside - mu_out)) + 1e-8
    online = norm.logpdf(phi, mu_in, sigma_in) - norm.logpdf(phi, mu_out, sigma_out)
    offline = norm.logcdf(phi, mu_out, sigma_out)
    return online, offline


def attack_figures(member: np.ndarray, score: np.ndarray, rng: np.random.Generator, resamples: int = 200
                   ) -> dict[str, float]:
    """AUC (with a 95% percentile-bootstrap interval over patients) and TPR at 1% FPR of one attack."""
    fpr, tpr, _ = roc_curve(member, score)
    aucs = []
    for _ in range(resamples):
        rows = rng.integers(0, len(member), len(member))
        if 0 < member[rows].sum() < len(rows):
            aucs.append(roc_auc_score(member[rows], score[rows]))
    return {"auc": float(roc_auc_score(member, score)), "auc_lower": float(np.percentile(aucs, 2.5)),
            "auc_upper": float(np.percentile(aucs, 97.5)), "tpr_at_1pct_fpr": float(tpr[fpr <= LOW_FPR].max())}


def yeom_advantage(member: np.ndarray, loss: np.ndarray) -> float:
    """Yeom et al.'s threshold attack at the target's mean training loss: TPR − FPR (membership advantage)."""
    guess = loss <= loss[member].mean()
    return float(guess[member].mean() - guess[~member].mean())


def dp_roc_ceiling(epsilon: float, delta: float) -> dict[str, float]:
    """The best ROC any attack can reach against an (ε, δ)-DP mechanism: TPR ≤ min(1, e^ε·FPR + δ,
    1 − e^−ε·(1 − δ − FPR)) (Kairouz et al. 2015); its AUC and its TPR at 1% FPR."""
    fpr = np.linspace(0, 1, 200_001)
    tpr = np.minimum.reduce([np.ones_like(fpr), math.exp(epsilon) * fpr + delta,
                             1 - math.exp(-epsilon) * (1 - delta - fpr)])
    tpr = np.clip(tpr, 0, 1)
    return {"auc": float(np.sum((tpr[1:] + tpr[:-1]) / 2 * np.diff(fpr))),
            "tpr_at_1pct_fpr": float(min(1.0, math.exp(epsilon) * LOW_FPR + delta))}


def audit_recipe(pool: SitePool, recipe: TrainingRecipe, config: RunConfig, num_shadows: int, seed: int,
                 console: Console) -> dict[str, Any]:
    """Train the target and the shadows with one recipe and run both attacks."""
    started = time.perf_counter()
    target = train_like_a_site(subset(pool.cohort, pool.member), recipe, config, seed)
    target_loss = per_patient_loss(target, pool.cohort)
    holdout = ~pool.member
    utility = evaluate_cohort(target, pool.patients.loc[holdout].reset_index(drop=True),  # non-members: a test split
                              subset(pool.cohort, holdout), grid_of(config), config.min_cell_size, split="test")
    shadow_in = shadow_membership(num_shadows, len(pool.cohort), seed + 1)
    shadow_losses = np.empty((num_shadows, len(pool.cohort)))
    for index in range(num_shadows):
        shadow = train_like_a_site(subset(pool.cohort, shadow_in[index]), recipe, config, seed + 100 + index)
        shadow_losses[index] = per_patient_loss(shadow, pool.cohort)
        console.print(f"  {recipe.name}: shadow {index + 1}/{num_shadows} "
                      f"({time.perf_counter() - started:.0f} s)", highlight=False)
    online, offline = lira_scores(target_loss, shadow_losses, shadow_in)
    rng = np.random.default_rng(seed)
    result: dict[str, Any] = {
        "recipe": asdict(recipe),
        "n_members": int(pool.member.sum()), "n_non_members": int(holdout.sum()),
        "mean_loss_members": float(target_loss[pool.member].mean()),
        "mean_loss_non_members": float(target_loss[holdout].mean()),
        "holdout_utility": {k: utility[k] for k in ("response-auc", "pfs-cindex", "os-cindex") if k in utility},
        "attacks": {"loss_threshold": attack_figures(pool.member, -target_loss, rng) |
                                      {"yeom_advantage": yeom_advantage(pool.member, target_loss)},
                    "lira_online": attack_figures(pool.member, online, rng),
                    "lira_offline": attack_figures(pool.member, offline, rng)},
        "seconds": round(time.perf_counter() - started, 1),
    }
    if recipe.epsilon is not None:
        delta = default_delta(int(pool.member.sum()))
        result["dp_ceiling"] = dp_roc_ceiling(recipe.epsilon, delta) | {"epsilon": recipe.epsilon, "delta": delta}
    return result


ATTACKS = {"loss_threshold": "Loss threshold", "lira_offline": "LiRA offline", "lira_online": "LiRA online"}


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per recipe, each attack's AUC and TPR at 1% FPR (and the held-out utility) as mean and std over the seeds."""
    def spread(values: list[float]) -> dict[str, float | None]:
        return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None}

    rows = []
    for name in dict.fromkeys(r["recipe"]["name"] for run in runs for r in run["results"]):
        chosen = [r for run in runs for r in run["results"] if r["recipe"]["name"] == name]
        row: dict[str, Any] = {"recipe": chosen[0]["recipe"], "seeds": len(chosen),
                               "attacks": {key: {figure: spread([r["attacks"][key][figure] for r in chosen])
                                                 for figure in ("auc", "tpr_at_1pct_fpr")} for key in ATTACKS},
                               "yeom_advantage": spread([r["attacks"]["loss_threshold"]["yeom_advantage"]
                                                         for r in chosen]),
                               "holdout_utility": {key: spread([r["holdout_utility"][key] for r in chosen])
                                                   for key in chosen[0]["holdout_utility"]  # a suppressed figure
                                                   if all(key in r["holdout_utility"] for r in chosen)}}
        if "dp_ceiling" in chosen[0]:
            row["dp_ceiling"] = chosen[0]["dp_ceiling"]
        rows.append(row)
    return rows


def plot(summary: list[dict[str, Any]], out_path: Path) -> Path:
    """Attack AUC per target and attack, mean ± std over seeds; 0.5 = the attacker does no better than chance."""
    figure = Figure(figsize=(7.2, 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    width = 0.8 / len(ATTACKS)
    for offset, (key, label) in enumerate(ATTACKS.items()):
        xs = np.arange(len(summary)) + (offset - 1) * width
        aucs = [r["attacks"][key]["auc"]["mean"] for r in summary]
        errors = [r["attacks"][key]["auc"]["std"] or 0.0 for r in summary]
        axes.bar(xs, aucs, width=width, yerr=errors, capsize=3, label=label)
    axes.axhline(0.5, color="#404040", linestyle=":", linewidth=1, label="chance")
    axes.set_xticks(range(len(summary)), [r["recipe"]["label"] for r in summary], fontsize=9)
    seeds = max(r["seeds"] for r in summary)
    axes.set(ylabel=f"Membership-inference AUC ({'mean ± std over ' + str(seeds) + ' seeds' if seeds > 1 else '1 seed'})",
             ylim=(0.4, 1.0), title="Membership inference against one site's model")
    axes.legend(fontsize=8, loc="upper left")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path)
    return out_path


def table(summary: list[dict[str, Any]]) -> Table:
    out = Table(title="Membership-inference attack AUC (members = training patients, non-members = held-out), "
                      "mean ± std over seeds")
    for column in ("target", "held-out resp. AUC", "loss AUC", "Yeom adv.", "LiRA off. AUC", "LiRA on. AUC",
                   "LiRA on. TPR@1%FPR", "DP ceiling AUC / TPR@1%"):
        out.add_column(column, justify="left" if column == "target" else "right")
    show = lambda s: f"{s['mean']:.3f}" + (f" ± {s['std']:.3f}" if s["std"] is not None else "")  # noqa: E731
    for r in summary:
        a = r["attacks"]
        ceiling = r.get("dp_ceiling")
        utility = r["holdout_utility"].get("response-auc")
        out.add_row(r["recipe"]["label"], "—" if utility is None else show(utility),
                    show(a["loss_threshold"]["auc"]), show(r["yeom_advantage"]), show(a["lira_offline"]["auc"]),
                    show(a["lira_online"]["auc"]), show(a["lira_online"]["tpr_at_1pct_fpr"]),
                    "—" if ceiling is None else f"{ceiling['auc']:.3f} / {ceiling['tpr_at_1pct_fpr']:.3f}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="southside_public", help="the site of the default consortium to attack")
    parser.add_argument("--shadows", type=int, default=16, help="shadow models per target (even, ≥ 4)")
    parser.add_argument("--overfit-epochs", type=int, default=100)
    parser.add_argument("--targets", nargs="+", default=["dp", "no-dp", "overfit"], choices=["dp", "no-dp", "overfit"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[42],
                        help="one audit per seed (the site's split, the models' training, the shadows' halves)")
    parser.add_argument("--data-dir", default="", help="folder of site folders (default: the default cohort)")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "membership_inference.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="run-config keys the sites' training uses, e.g. --set hidden-size=16")
    args = parser.parse_args(argv)
    console = Console(width=150)
    torch.set_num_threads(1)
    runs = []
    for seed in args.seeds:
        config = RunConfig.from_mapping({**parse_overrides(args.set), "data-dir": args.data_dir, "seed": seed})
        pool = load_site_pool(config, args.site)
        console.print(f"seed {seed}, site {pool.site_id}: {int(pool.member.sum())} training patients (members), "
                      f"{int((~pool.member).sum())} held-out (non-members); {args.shadows} shadow models per target")
        chosen = [r for r in recipes(config, args.overfit_epochs) if r.name in args.targets]
        runs.append({"seed": seed, "results": [audit_recipe(pool, recipe, config, args.shadows, seed, console)
                                               for recipe in chosen]})
    summary = summarise(runs)
    payload = {"site": args.site, "shadows": args.shadows, "seeds": args.seeds,
               "config": RunConfig.from_mapping({**parse_overrides(args.set), "data-dir": args.data_dir}).to_flower(),
               "command": "python -m simulations.benchmarks.membership_inference " + " ".join(argv or sys.argv[1:]),
               "summary": summary, "runs": runs}
    return finish(args.out, payload, summary, plot, table, console)

if __name__ == "__main__":
    sys.exit(main())
