"""An anchor beside the product's Fed-TCGA-BRCA figures: FLamby's model class (a linear Cox model, lifelines) fitted on
the pooled training splits, with its ridge penalty chosen on the product's own validation patients, tested once.

    python -m simulations.benchmarks.fed_tcga_brca_cox_anchor

Not the product path (no site folders, no federation): it answers how far a linear proportional-hazards model gets
on the same split and test sets, and how much of a client-mean C-index the test sets themselves move (1 to 14 deaths
per center): a bootstrap of each center's test patients under the fixed fitted model. Writes
results/fed_tcga_brca_cox_anchor.json.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from sksurv.exceptions import NoComparablePairException
from sksurv.metrics import concordance_index_censored

from client.data.site import assign_splits
from shared.atomic import write_atomically

DATA = Path(__file__).resolve().parents[1] / "datasets" / "fed_tcga_brca"
RESULTS = Path(__file__).resolve().parent / "results" / "fed_tcga_brca_cox_anchor.json"
PENALIZERS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
SEEDS = (42, 43, 44)  # the product's validation split at each run seed (client.data.site.assign_splits)
CENTERS = range(6)


def load() -> pd.DataFrame:
    frame = pd.read_csv(DATA / "brca.csv").merge(pd.read_csv(DATA / "train_test_split.csv"), on="pid")
    frame["center"] = frame["fold2"].str[-1].astype(int)
    frame["test"] = frame["fold"] == "test"
    return frame


def covariates(frame: pd.DataFrame, age_mean: float, age_sd: float) -> pd.DataFrame:
    """FLamby's 39 covariates, age standardised on the training patients (as the product's harmonisation does)."""
    columns = [c for c in frame.columns if c not in ("pid", "T", "E", "fold", "fold2", "center", "test")]
    out = frame[columns + ["T", "E"]].copy()
    out["age_at_index"] = (out["age_at_index"] - age_mean) / age_sd
    return out


def client_mean(model: CoxPHFitter, frame: pd.DataFrame, age: tuple[float, float]) -> tuple[float, list[float]]:
    """Harrell's C of each center's patients (centers without a comparable pair left out) and their mean."""
    per_center = []
    for center in CENTERS:
        part = frame[frame["center"] == center]
        if part["E"].sum() == 0:  # no death: no figure, as the product
            continue
        risk = model.predict_partial_hazard(covariates(part, *age)).to_numpy()
        try:
            per_center.append(float(concordance_index_censored(part["E"].astype(bool), part["T"], risk)[0]))
        except NoComparablePairException:  # no patient followed past a death: no figure, as the product
            continue
    return float(np.mean(per_center)), per_center


def fit(frame: pd.DataFrame, penalizer: float) -> tuple[CoxPHFitter, tuple[float, float]]:
    age = (float(frame["age_at_index"].mean()), float(frame["age_at_index"].std()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CoxPHFitter(penalizer=penalizer).fit(covariates(frame, *age), "T", "E"), age


def bootstrap_spread(model: CoxPHFitter, test: pd.DataFrame, age: tuple[float, float], draws: int = 1000) -> dict:
    """The client mean's spread from resampling each center's test patients alone (the model held fixed)."""
    rng = np.random.default_rng(0)
    parts = [test[test["center"] == c] for c in CENTERS]
    risks = [model.predict_partial_hazard(covariates(p, *age)).to_numpy() for p in parts]
    means = []
    for _ in range(draws):
        figures = []
        for part, risk in zip(parts, risks, strict=True):
            rows = rng.integers(0, len(part), len(part))
            event = part["E"].to_numpy()[rows].astype(bool)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # 0/0 for a resample without a comparable pair
                try:
                    figure = concordance_index_censored(event, part["T"].to_numpy()[rows], risk[rows])[0]
                except ValueError:  # a resample without a death or a comparable pair (sksurv's errors are ValueErrors)
                    continue
            if not np.isnan(figure):
                figures.append(figure)
        means.append(np.mean(figures))
    return {"std": float(np.std(means)), "interval_95": [float(np.percentile(means, q)) for q in (2.5, 97.5)]}


def main() -> None:
    frame = load()
    train = frame[~frame["test"]].reset_index(drop=True)
    validation = {p: [] for p in PENALIZERS}
    for seed in SEEDS:
        split = np.concatenate([assign_splits(train.loc[train["center"] == c, "pid"], seed, 0.2, 0.2, frozenset())
                                for c in CENTERS])
        ordered = pd.concat([train[train["center"] == c] for c in CENTERS], ignore_index=True)
        fitting, held = ordered[split == "train"], ordered[split == "validation"]
        for penalizer in PENALIZERS:
            model, age = fit(fitting, penalizer)
            validation[penalizer].append(client_mean(model, held, age)[0])
    chosen = max(PENALIZERS, key=lambda p: float(np.mean(validation[p])))
    model, age = fit(train, chosen)
    test = frame[frame["test"]]
    mean_c, per_center = client_mean(model, test, age)
    report = {"validation_client_mean": {str(p): {"mean": float(np.mean(v)), "by_seed": dict(zip(map(str, SEEDS), v))}
                                         for p, v in validation.items()},
              "chosen_penalizer": chosen, "test_client_mean": mean_c, "test_per_center": per_center,
              "test_bootstrap_of_client_mean": bootstrap_spread(model, test, age)}
    write_atomically(RESULTS, json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "validation_client_mean"}, indent=2))


if __name__ == "__main__":
    main()
