"""Small contract-valid patient tables for unit tests that must not depend on the cohort generator."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.contract import CONTRACT_COLUMNS, GENES, IMAGING, PATHOLOGY
from shared.encoding import EncodedCohort, SurvivalGrid, encode_cohort
from shared.harmonisation import pool_summaries, summarise_site
from shared.model import OncoFedNet, build_model
from shared.vocabulary import HISTOLOGIES, CancerType, regimens_for

GRID = SurvivalGrid(interval_days=180, horizon_days=1800)


def patient_table(n: int, seed: int = 0, site: str = "site") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cancer = list(CancerType)[int(rng.integers(0, 4))]
        pfs = float(rng.exponential(300))
        os_ = pfs + float(rng.exponential(300))
        row = dict(patient_id=f"{site}-{i:04d}", age_years=float(rng.integers(30, 90)),
                   sex="female" if cancer in (CancerType.BREAST, CancerType.OVARIAN) else rng.choice(["female", "male"]),
                   race_ethnicity=rng.choice(["white", "black", "hispanic", "asian", "other", "unknown"]),
                   ecog=int(rng.integers(0, 3)), stage_group=rng.choice(["II", "III", "IV"]),
                   cancer_type=cancer.value, histology=rng.choice(HISTOLOGIES[cancer]),
                   charlson_index=int(rng.integers(0, 5)), prior_lines=int(rng.integers(0, 2)),
                   regimen=rng.choice([r.code for r in regimens_for(cancer)]), line_of_therapy=1,
                   best_response=rng.choice(["CR", "PR", "SD", "PD"]),
                   pfs_days=round(pfs), pfs_event=bool(rng.random() < 0.8),
                   os_days=round(os_), os_event=bool(rng.random() < 0.6))
        if rng.random() < 0.7:
            row |= dict(grade=int(rng.integers(1, 4)), her2_positive=bool(rng.random() < 0.2),
                        ki67_percent=float(rng.uniform(1, 90)), er_positive=bool(rng.random() < 0.6))
        if rng.random() < 0.6:
            row |= dict(tumour_size_mm=float(rng.uniform(5, 120)), suv_max=float(rng.uniform(1, 25)),
                        mtv_ml=float(rng.uniform(1, 300)), lesion_count=int(rng.integers(1, 12)))
        if rng.random() < 0.5:
            row |= {g: bool(rng.random() < 0.2) for g in GENES} | dict(tmb_mut_per_mb=float(rng.gamma(2, 3)))
        rows.append(row)
    frame = pd.DataFrame(rows).reindex(columns=list(CONTRACT_COLUMNS))
    assert set(PATHOLOGY) | set(IMAGING) <= set(frame.columns)
    return frame


def encoded_cohort(n: int, seed: int = 0) -> EncodedCohort:
    frame = patient_table(n, seed)
    stats = pool_summaries([summarise_site(frame, min_cell_size=1)])
    return encode_cohort(frame, stats, GRID)


def tiny_model(seed: int = 0) -> OncoFedNet:
    return build_model(GRID.num_intervals, hidden=16, seed=seed)
