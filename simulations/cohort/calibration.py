"""How the generator measures against its calibration targets (simulations/cohort/targets.py), and the fit of
the per-regimen intercepts/scales.

Every "generated" figure is measured on a generated sample (observed best response, Kaplan-Meier medians
of the censored outcomes), never typed by hand:

    python -m simulations.cohort.calibration --patients 100000            # print the tables
    python -m simulations.cohort.calibration --patients 100000 --write    # refresh CALIBRATION.md
    python -m simulations.cohort.calibration --fit                        # re-fit RegimenOutcome defaults
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sksurv.nonparametric import kaplan_meier_estimator

from shared.contract import GENOMIC, IMAGING, PATHOLOGY
from shared.vocabulary import CancerType
from simulations.cohort.config import DAYS_PER_MONTH, CohortConfig, RegimenOutcome, default_consortium
from simulations.cohort.generator import Consortium, generate_consortium
from simulations.cohort.outcomes import SurvivalParameters, regimen_truth, survival
from simulations.cohort.targets import (
    MEDIAN_TOLERANCE,
    REGIMEN_TARGETS,
    RESPONSE_CONTRASTS,
    RESPONSE_TOLERANCE,
    SHARE_TARGETS,
    Selector,
)

CALIBRATION_DOC = Path(__file__).with_name("CALIBRATION.md")
TABLE_START, TABLE_END = "<!-- calibration-table:start -->", "<!-- calibration-table:end -->"


# ---------------------------------------------------------------------------------------- measures
def kaplan_meier_median(days: np.ndarray, event: np.ndarray) -> float:
    """Kaplan-Meier median (days); NaN when the curve never reaches 50 %."""
    if len(days) == 0 or not event.any():
        return float("nan")
    times, surv = kaplan_meier_estimator(event.astype(bool), days.astype(float))
    below = np.flatnonzero(surv <= 0.5)
    return float(times[below[0]]) if len(below) else float("nan")


def _given(patients: pd.DataFrame, cancer: CancerType, regimen: str, select: Selector) -> pd.DataFrame:
    """Patients of this cancer in the subgroup who were given the regimen."""
    return patients[(patients["cancer_type"].to_numpy() == cancer.value) & select(patients)
                    & (patients["regimen"].to_numpy() == regimen)]


def regimen_calibration(consortium: Consortium) -> pd.DataFrame:
    """Target vs generated response rate and Kaplan-Meier medians per regimen target."""
    patients = consortium.complete_patients
    rows = []
    for target in REGIMEN_TARGETS:
        given = _given(patients, target.cancer, target.regimen, target.population)
        responders = given["best_response"].isin(["CR", "PR"]).to_numpy()
        for quantity, wanted, generated, tolerance in (
            ("objective response rate", target.response_rate, responders.mean() if len(given) else np.nan,
             RESPONSE_TOLERANCE),
            ("median PFS (months)", target.median_pfs_months,
             kaplan_meier_median(given["pfs_days"].to_numpy(float), given["pfs_event"].to_numpy(bool))
             / DAYS_PER_MONTH, MEDIAN_TOLERANCE),
            ("median OS (months)", target.median_os_months,
             kaplan_meier_median(given["os_days"].to_numpy(float), given["os_event"].to_numpy(bool))
             / DAYS_PER_MONTH, MEDIAN_TOLERANCE),
        ):
            relative = quantity.startswith("median")
            within = abs(generated - wanted) <= (tolerance * wanted if relative else tolerance)
            rows.append({"regimen": target.regimen, "population": target.population.label, "quantity": quantity,
                         "target": wanted, "generated": float(generated),
                         "tolerance": f"±{tolerance:.0%}" if relative else f"±{tolerance:.2f}",
                         "within": bool(within), "n": len(given), "source": target.source})
    truth = consortium.truth
    for contrast in RESPONSE_CONTRASTS:
        in_contrast = contrast.population(patients)
        subgroup = patients[(patients["cancer_type"].to_numpy() == contrast.cancer.value) & in_contrast]
        rows_under = truth[(truth["regimen"] == contrast.regimen) & truth["patient_id"].isin(subgroup["patient_id"])]
        generated = float(rows_under["p_response"].mean())
        rows.append({"regimen": contrast.regimen, "population": contrast.population.label,
                     "quantity": "response rate if all were given it (ground truth; effect modifier, not fitted)",
                     "target": contrast.response_rate, "generated": generated,
                     "tolerance": f"±{contrast.tolerance:.2f}",
                     "within": bool(abs(generated - contrast.response_rate) <= contrast.tolerance),
                     "n": len(rows_under), "source": contrast.source})
    return pd.DataFrame(rows)


def share_calibration(consortium: Consortium) -> pd.DataFrame:
    """Target vs generated prevalences and case-mix shares (complete values, before missingness)."""
    patients = consortium.complete_patients
    rows = []
    for target in SHARE_TARGETS:
        base = target.denominator(patients)
        generated = float(target.numerator(patients)[base].mean())
        rows.append({"quantity": target.name, "target": target.target, "generated": generated,
                     "tolerance": f"±{target.tolerance:.3f}".rstrip("0"),
                     "within": abs(generated - target.target) <= target.tolerance, "n": int(base.sum()),
                     "source": target.source})
    return pd.DataFrame(rows)


def expected_presence(consortium: Consortium) -> pd.DataFrame:
    """Per site: share of patients with each modality / PET field recorded, expected from the profile."""
    rows = []
    for cohort in consortium.sites:
        site, patients = cohort.profile, cohort.patients
        gaps = site.missingness
        expected = {
            "pathology": 1 - gaps.pathology_rate,
            "imaging": (1 - gaps.imaging_rate) if site.has_imaging else 0.0,
            "suv_max": (1 - gaps.imaging_rate) * (1 - gaps.field_rate) if site.has_pet_ct else 0.0,
            "genomic": (1 - gaps.genomic_rate) if site.has_genomic_panel else 0.0,
            "best_response": 1 - gaps.response_not_evaluable_rate,
        }
        generated = {
            "pathology": patients[list(PATHOLOGY)].notna().any(axis=1).mean(),
            "imaging": patients[list(IMAGING)].notna().any(axis=1).mean(),
            "suv_max": patients["suv_max"].notna().mean(),
            "genomic": patients[list(GENOMIC)].notna().any(axis=1).mean(),
            "best_response": patients["best_response"].notna().mean(),
        }
        for field, wanted in expected.items():
            rows.append({"site_id": site.site_id, "recorded": field, "target": wanted,
                         "generated": float(generated[field]), "n": len(patients),
                         "within": abs(generated[field] - wanted) <= 0.03})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------- fit
def _population_median(params: SurvivalParameters, endpoint: str) -> float:
    """Day at which the subgroup's average true survival crosses 50 %."""
    low, high = 0.0, np.log(1e5)
    for _ in range(25):
        mid = (low + high) / 2
        s = survival(params, np.array([np.exp(mid)]), endpoint).mean()
        low, high = (mid, high) if s > 0.5 else (low, mid)
    return float(np.exp((low + high) / 2))


def fit_regimen_outcomes(config: CohortConfig,
                         total_patients: int = 200_000) -> dict[CancerType, dict[str, RegimenOutcome]]:
    """Fit each regimen's response intercept and progression/post-progression scales to its target.

    Uses the analytic truth on the trial-like subgroup of the patients who got the regimen (features
    and assignment do not depend on these parameters), so the fit is exact up to the sample of patients:
    the intercept matches the response rate, then alternating bisections match the PFS and OS medians.
    """
    consortium = generate_consortium(config.scaled(total_patients))
    patients = consortium.complete_patients
    model = config.outcome_model
    fitted = {cancer: dict(by_code) for cancer, by_code in model.regimens.items()}
    for target in REGIMEN_TARGETS:
        given = _given(patients, target.cancer, target.regimen, target.population)
        outcome = fitted[target.cancer][target.regimen]

        def params(candidate: RegimenOutcome) -> SurvivalParameters:
            regimens = {**fitted, target.cancer: {**fitted[target.cancer], target.regimen: candidate}}
            return regimen_truth(given, target.regimen, model.model_copy(update={"regimens": regimens}))

        logit = outcome.response_logit
        for _ in range(8):
            probability = params(outcome.model_copy(update={"response_logit": logit})).response_probability.mean()
            logit += np.log(target.response_rate / (1 - target.response_rate)) - np.log(probability / (1 - probability))
        outcome = outcome.model_copy(update={"response_logit": round(float(logit), 3)})
        for _ in range(3):
            for field, endpoint, months in (("progression_scale_days", "pfs", target.median_pfs_months),
                                            ("post_progression_scale_days", "os", target.median_os_months)):
                low, high = np.log(5.0), np.log(50_000.0)
                for _ in range(20):
                    mid = (low + high) / 2
                    median = _population_median(params(outcome.model_copy(update={field: np.exp(mid)})), endpoint)
                    low, high = (mid, high) if median < months * DAYS_PER_MONTH else (low, mid)
                outcome = outcome.model_copy(update={field: round(float(np.exp((low + high) / 2)), 1)})
        fitted[target.cancer][target.regimen] = outcome
    return fitted


# ------------------------------------------------------------------------------------------ report
def _markdown(frame: pd.DataFrame, columns: list[str]) -> str:
    def cell(value: object) -> str:
        if isinstance(value, (bool, np.bool_)):
            return "yes" if value else "**no**"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 1 else f"{value:.1f}"
        return str(value)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for _, row in frame.iterrows()]
    return "\n".join(lines)


def calibration_markdown(consortium: Consortium) -> str:
    """The three calibration tables as markdown, measured on this consortium."""
    n = consortium.config.n_patients
    return "\n\n".join([
        f"Measured on the default consortium scaled to {n:,} patients (seed {consortium.config.seed}) by "
        f"`python -m simulations.cohort.calibration --patients {round(n, -3)} --write`.",
        "### Regimens (trial-like subgroups; observed best response, Kaplan-Meier medians)",
        _markdown(regimen_calibration(consortium),
                  ["regimen", "population", "quantity", "target", "generated", "tolerance", "within", "n", "source"]),
        "### Prevalences and case mix (complete values)",
        _markdown(share_calibration(consortium), ["quantity", "target", "generated", "tolerance", "within", "n",
                                                  "source"]),
        "### Recorded modalities per site (target from the site profile, tolerance ±0.03)",
        _markdown(expected_presence(consortium), ["site_id", "recorded", "target", "generated", "within", "n"]),
    ])


def write_calibration_doc(consortium: Consortium, path: Path = CALIBRATION_DOC) -> None:
    """Replace the measured tables between the markers of CALIBRATION.md."""
    text = path.read_text(encoding="utf-8")
    start, end = text.index(TABLE_START) + len(TABLE_START), text.index(TABLE_END)
    path.write_text(text[:start] + "\n" + calibration_markdown(consortium) + "\n" + text[end:], encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Measure (or re-fit) the cohort calibration.")
    parser.add_argument("--patients", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument("--write", action="store_true", help="refresh the tables in CALIBRATION.md")
    parser.add_argument("--fit", action="store_true", help="print re-fitted RegimenOutcome defaults")
    args = parser.parse_args(argv)
    config = default_consortium(args.patients, seed=args.seed)
    if args.fit:
        for cancer, by_code in fit_regimen_outcomes(config, args.patients).items():
            print(f"        CancerType.{cancer.name}: {{")
            for code, outcome in by_code.items():
                print(f'            "{code}": ({outcome.response_logit}, {outcome.progression_scale_days}, '
                      f'{outcome.post_progression_scale_days}),')
            print("        },")
        return 0
    consortium = generate_consortium(config)
    if args.write:
        write_calibration_doc(consortium)
    print(calibration_markdown(consortium))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

