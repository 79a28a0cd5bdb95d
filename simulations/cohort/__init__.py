"""The synthetic multi-site oncology cohort with known ground truth: the project's embedded default data.

    from simulations.cohort import default_consortium, generate_consortium, write_consortium
    consortium = generate_consortium(default_consortium())          # 6 sites, 4,650 patients
    write_consortium(consortium, "runs/cohort")                      # <site>/patients.csv, _ground_truth/

    from simulations.cohort import read_ground_truth, oracle_metrics
    truth = read_ground_truth("runs/cohort", ["metro_academic"])
    oracle_metrics(truth, patient_ids=test_ids)                      # best achievable AUC / C-index
"""

from simulations.cohort.config import CohortConfig, SiteCoding, SiteProfile, SporadicMissingness, default_consortium
from simulations.cohort.generator import Consortium, SiteCohort, generate_consortium
from simulations.cohort.io import export_site_frame, read_ground_truth, write_consortium
from simulations.cohort.oracle import OracleMetrics, oracle_metrics, oracle_predictions, share_of_achievable

__all__ = [
    "CohortConfig", "Consortium", "OracleMetrics", "SiteCoding", "SiteCohort", "SiteProfile", "SporadicMissingness",
    "default_consortium", "export_site_frame", "generate_consortium", "oracle_metrics", "oracle_predictions",
    "read_ground_truth", "share_of_achievable", "write_consortium",
]
