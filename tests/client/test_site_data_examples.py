"""Small, deterministic contract frames for the site-data tests, and checks that they are what they claim.

Values have at most two decimals so they survive every storage path (CSV text, Parquet, OMOP datetimes)
exactly; the other site-data tests import `example_contract_frame` from here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shared.contract import CONTRACT_COLUMNS, GENES, validate_frame
from shared.vocabulary import HISTOLOGIES, CancerType, regimens_for


def example_contract_frame(n: int = 60, seed: int = 0, prefix: str = "P") -> pd.DataFrame:
    """n valid patients in the load_site_frame dtypes: numbers and flags float64, codes str/None."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cancer = list(CancerType)[i % 4]
        flag = lambda p=0.5: float(rng.random() < p)  # noqa: E731 - a one-line coin
        has_pathology, has_imaging, has_genomic = rng.random(3) < (0.8, 0.7, 0.6)
        pfs = float(rng.integers(20, 900))
        os_days = pfs + float(rng.integers(0, 600))
        response = [None, "CR", "PR", "SD", "PD"][int(rng.integers(0, 5))]
        rows.append({
            "patient_id": f"{prefix}{i:04d}",
            "age_years": round(float(rng.uniform(30, 85)), 2),
            "sex": "female" if cancer in (CancerType.BREAST, CancerType.OVARIAN) or rng.random() < 0.5 else "male",
            "race_ethnicity": ["white", "black", "hispanic", "asian", "other", "unknown"][int(rng.integers(0, 6))],
            "ecog": float(rng.integers(0, 4)),
            "stage_group": ["I", "II", "III", "IV"][int(rng.integers(0, 4))],
            "cancer_type": cancer.value,
            "histology": HISTOLOGIES[cancer][int(rng.integers(0, len(HISTOLOGIES[cancer])))],
            "charlson_index": float(rng.integers(0, 6)),
            "prior_lines": float(rng.integers(0, 3)),
            "grade": float(rng.integers(1, 4)) if has_pathology else np.nan,
            "er_positive": flag(0.7) if has_pathology and cancer is CancerType.BREAST else np.nan,
            "pr_positive": flag(0.6) if has_pathology and cancer is CancerType.BREAST else np.nan,
            "her2_positive": flag(0.2) if has_pathology and cancer is CancerType.BREAST else np.nan,
            "ki67_percent": round(float(rng.uniform(1, 90)), 1) if has_pathology else np.nan,
            "msi_high": flag(0.1) if has_pathology and cancer is CancerType.COLORECTAL else np.nan,
            "pdl1_tps_percent": float(rng.integers(0, 100)) if has_pathology and cancer is CancerType.NSCLC
            else np.nan,
            "tumour_size_mm": round(float(rng.lognormal(3.2, 0.5)), 1) if has_imaging else np.nan,
            "suv_max": round(float(rng.uniform(2, 25)), 2) if has_imaging else np.nan,
            "mtv_ml": round(float(rng.lognormal(3.0, 1.0)), 2) if has_imaging else np.nan,
            "lesion_count": float(rng.integers(1, 12)) if has_imaging else np.nan,
            **{gene: flag(0.3) if has_genomic else np.nan for gene in GENES},
            "tmb_mut_per_mb": round(float(rng.lognormal(1.5, 0.8)), 2) if has_genomic else np.nan,
            "regimen": regimens_for(cancer)[int(rng.integers(0, len(regimens_for(cancer))))].code,
            "line_of_therapy": float(rng.integers(1, 4)),
            "best_response": response,
            "pfs_days": pfs,
            "pfs_event": flag(0.7),
            "os_days": os_days,
            "os_event": flag(0.5),
        })
    frame = pd.DataFrame(rows, columns=list(CONTRACT_COLUMNS))
    for column in frame.columns:
        if frame[column].dtype == object:
            frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def test_example_frame_is_valid_and_typed() -> None:
    frame = example_contract_frame(40, seed=3)
    assert len(validate_frame(frame, "example")) == 40
    assert list(frame.columns) == list(CONTRACT_COLUMNS)
    assert frame["er_positive"].dtype == np.float64 and frame["ecog"].dtype == np.float64
    assert frame["sex"].dtype == object


def test_example_frame_is_deterministic() -> None:
    pd.testing.assert_frame_equal(example_contract_frame(10, seed=1), example_contract_frame(10, seed=1))
