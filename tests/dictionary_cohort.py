"""Random exports that satisfy any data dictionary (for tests of consortia other than the default one)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.dictionary import DataDictionary


def dictionary_export(dictionary: DataDictionary, n: int, seed: int, site: str) -> pd.DataFrame:
    """`n` patients with every field drawn inside its constraints, optional ones sometimes empty, histology and
    treatment of the patient's cancer type, and progression never after death; risk grows with age and stage."""
    rng = np.random.default_rng(seed)
    cancers = [c.code for c in dictionary.cancer_types]
    cancer = rng.choice(cancers, size=n)
    columns: dict[str, object] = {}
    for spec in dictionary.table_schema.fields:
        limits = spec.constraints
        if spec.name == dictionary.table_schema.primary_key:
            values = np.array([f"{site}-{i:05d}" for i in range(n)], dtype=object)
        elif spec.name == "cancer_type":
            values = cancer.astype(object)
        elif spec.vocabulary == "histologies":
            by_cancer = {c.code: c.histologies for c in dictionary.cancer_types}
            values = np.array([rng.choice(by_cancer[c]) for c in cancer], dtype=object)
        elif spec.vocabulary == "treatments":
            by_cancer = {c: [t.code for t in dictionary.treatments if c in t.cancer_types] for c in cancers}
            values = np.array([rng.choice(by_cancer[c]) for c in cancer], dtype=object)
        elif spec.modality == "outcome":
            continue
        elif spec.type in ("number", "integer"):
            low = limits.minimum if limits.minimum is not None else 0.0
            high = limits.maximum if limits.maximum is not None else low + 100.0
            values = rng.uniform(low, min(high, low + 100.0), size=n)
            values = np.floor(values) if spec.type == "integer" else np.round(values, 1)
        elif spec.type == "boolean":
            values = rng.random(n) < 0.3
        else:
            values = rng.choice(dictionary.codes(spec), size=n).astype(object)
        values = pd.Series(values, dtype=object)
        if not limits.required:
            values[rng.random(n) < 0.15] = None
        columns[spec.name] = values
    frame = pd.DataFrame(columns)
    risk = 0.02 * (pd.to_numeric(frame["age_years"]) - 60)
    if "stage_group" in frame:
        risk = risk + 0.3 * frame["stage_group"].map({"I": 0, "II": 1, "III": 2, "IV": 3}).fillna(1)
    hazard = np.exp(risk.to_numpy(dtype=float)) / 500.0
    os_days = np.round(rng.exponential(1.0 / hazard))
    pfs_days = np.round(os_days * rng.uniform(0.2, 1.0, size=n))
    for endpoint, days in (("pfs", pfs_days), ("os", os_days)):
        if endpoint in dictionary.endpoints:
            censor = rng.uniform(50, 1000, size=n)
            frame[f"{endpoint}_days"] = np.minimum(days, np.round(censor))
            frame[f"{endpoint}_event"] = days <= censor
    if {"pfs", "os"} <= set(dictionary.endpoints):
        frame["pfs_days"] = np.minimum(frame["pfs_days"], frame["os_days"])
    return frame.reindex(columns=list(dictionary.columns))
