"""Which regimen a patient gets: guideline-like rules plus each site's habits (confounding by indication).

A multinomial logit over the regimens of the patient's cancer. Scores follow how oncologists choose:
HER2+ gets anti-HER2 therapy, squamous lung cancer does not get pemetrexed, RAS-mutant colorectal cancer
does not get cetuximab, frail patients get less intensive regimens, recurrent ovarian cancer gets
carboplatin-PLD. Biomarkers are known to the treating team (standard-of-care testing) even where the
site's research export lacks the genomic panel, so those sites carry unmeasured confounding.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from shared.vocabulary import CancerType, regimens_for
from simulations.cohort.config import SiteProfile

# Regimens that add a biologic/immunotherapy or a third cytotoxic: what a site's intensity knob moves.
INTENSIVE_REGIMENS = frozenset({"AC-T", "TCHP", "CARBOPLATIN-PEMETREXED-PEMBROLIZUMAB", "FOLFOX-BEVACIZUMAB",
                                "FOLFIRI-CETUXIMAB", "CARBOPLATIN-PACLITAXEL-BEVACIZUMAB"})


def frailty_flags(patients: pd.DataFrame) -> np.ndarray:
    """Count of ECOG >= 2, age >= 70 and Charlson >= 3: what makes a clinician de-escalate."""
    return ((patients["ecog"].to_numpy() >= 2).astype(int) + (patients["age_years"].to_numpy() >= 70)
            + (patients["charlson_index"].to_numpy() >= 3))


def _clinical_scores(cancer: CancerType, patients: pd.DataFrame) -> dict[str, np.ndarray]:
    """Log-odds of each regimen from the patient's own features (before site habits)."""
    frail = frailty_flags(patients)
    prior = patients["prior_lines"].to_numpy()
    ecog2 = patients["ecog"].to_numpy() >= 2

    def flag(name: str) -> np.ndarray:
        return patients[name].to_numpy(dtype=float) == 1

    if cancer == CancerType.BREAST:
        her2 = flag("her2_positive")
        triple_negative = ~flag("er_positive") & ~flag("pr_positive") & ~her2
        brca = flag("brca1") | flag("brca2")
        return {
            "TCHP": np.where(her2, 4.0, -4.0) - 0.3 * frail,
            "AC-T": 0.8 - 0.7 * frail - 1.2 * (prior >= 1),
            "TC": 0.0 + 0.5 * frail,
            "PACLITAXEL-CARBOPLATIN": -1.2 + 2.0 * triple_negative + 1.0 * brca + 0.6 * (prior >= 1),
        }
    if cancer == CancerType.NSCLC:
        squamous = patients["histology"].to_numpy() == "nsclc_squamous"
        driver = flag("egfr") | flag("alk")
        tps = patients["pdl1_tps_percent"].to_numpy(dtype=float)
        return {
            "CARBOPLATIN-PEMETREXED-PEMBROLIZUMAB": (0.6 + 1.0 * (tps >= 50) + 0.3 * ((tps >= 1) & (tps < 50))
                                                     - 3.0 * squamous - 2.5 * driver - 1.0 * ecog2),
            "CARBOPLATIN-PEMETREXED": 0.0 - 2.5 * squamous + 0.8 * driver,
            "CARBOPLATIN-PACLITAXEL": -0.5 + 2.0 * squamous + 0.3 * frail,
        }
    if cancer == CancerType.COLORECTAL:
        kras = flag("kras")
        braf = flag("braf")
        return {
            "FOLFOX": 0.5 + 0.3 * frail,
            "FOLFIRI": 0.0 + 0.8 * (prior >= 1),
            "FOLFOX-BEVACIZUMAB": 0.5 + 0.5 * kras - 0.4 * frail,
            "FOLFIRI-CETUXIMAB": np.where(kras, -3.0, np.where(braf, -0.5, 1.0)) - 0.5 * frail,
        }
    # Ovarian: first line is carboplatin-paclitaxel with or without bevacizumab (more with stage IV);
    # platinum-sensitive relapse is mostly carboplatin-PLD.
    relapsed = prior >= 1
    stage_iv = patients["stage_group"].to_numpy() == "IV"
    return {
        "CARBOPLATIN-PACLITAXEL": np.where(relapsed, 0.3, 0.5) + 0.2 * frail,
        "CARBOPLATIN-PACLITAXEL-BEVACIZUMAB": np.where(relapsed, -0.5, 0.0 + 0.8 * stage_iv) - 0.5 * frail,
        "CARBOPLATIN-PLD": np.where(relapsed, 1.0, -2.5),
    }


def rows_by_cancer(patients: pd.DataFrame) -> Iterator[tuple[CancerType, np.ndarray, pd.DataFrame]]:
    """Each cancer type present among `patients`, in the vocabulary's order: its row positions and those rows."""
    cancer_of = patients["cancer_type"].to_numpy()
    for cancer in CancerType:
        rows = np.flatnonzero(cancer_of == cancer.value)
        if len(rows):
            yield cancer, rows, patients.iloc[rows]


def assign_regimens(patients: pd.DataFrame, site: SiteProfile, rng: np.random.Generator) -> np.ndarray:
    """The regimen code given to each patient (rows of `patients`, complete features)."""
    given = np.empty(len(patients), dtype=object)
    for cancer, rows, subset in rows_by_cancer(patients):
        scores = _clinical_scores(cancer, subset)
        codes = [r.code for r in regimens_for(cancer)]
        frail = frailty_flags(subset)
        logits = np.column_stack([
            scores[code] + site.regimen_preference.get(code, 0.0)
            + (site.intensity_preference - 0.3 * frail) * (code in INTENSIVE_REGIMENS)
            for code in codes])
        gumbel = rng.gumbel(size=logits.shape)
        given[rows] = np.array(codes)[np.argmax(logits + gumbel, axis=1)]
    return given
