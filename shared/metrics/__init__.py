"""How well predictions agree with what happened to a site's patients: every figure with its interval and count.

Pure functions over numpy arrays. Each figure carries a percentile bootstrap interval (seeded Generator passed
in, no global RNG) and the counts it rests on; a figure resting on fewer than `min_cell_size` patients, events
or non-events is suppressed — never computed, never sent (`suppress_small_cells` is the one place that decides).

Libraries do the statistics: scikit-learn (AUC, balanced accuracy, Brier, calibration curve, ROC),
scikit-survival (Harrell's and Uno's C, cumulative/dynamic AUC, integrated Brier, Kaplan–Meier, log-rank),
scipy (calibration intercept root). Hand-written, because no kept library offers them: decision-curve net
benefit, and the DerSimonian–Laird random-effects meta-analysis (no meta-analysis package is installed).

One module per family: results (settings, inputs, result models), estimates (small cells, bootstrap),
response, survival, evaluation (a whole prediction set), subgroups, across_sites (meta-analysis). This package
re-exports their public names.
"""

from shared.metrics.results import (  # noqa: F401
    CalibrationCurve,
    Comparison,
    Curve,
    DecisionCurve,
    ENDPOINTS,
    ENDPOINT_NAMES,
    Estimate,
    EvaluationSettings,
    HorizonEvaluation,
    KaplanMeierByRisk,
    KaplanMeierGroup,
    MIN_CELL_SIZE,
    MetaAnalysis,
    OutcomePredictions,
    PredictionEvaluation,
    RESPONDER_CODES,
    ResponseEvaluation,
    SubgroupEvaluation,
    SurvivalEvaluation,
)
from shared.metrics.estimates import (  # noqa: F401
    bootstrap_interval,
    harrell_c_value,
    roc_auc,
    suppress_small_cells,
)
from shared.metrics.response import (  # noqa: F401
    calibration_intercept_value,
    calibration_slope_value,
    evaluate_response,
    net_benefit,
    response_auc,
    response_balanced_accuracy,
    response_brier,
    response_calibration,
    response_calibration_curve,
    response_decision_curve,
    response_roc,
)
from shared.metrics.survival import (  # noqa: F401
    evaluate_survival,
    harrell_c,
    kaplan_meier_by_risk,
    restricted_mean_survival_days,
    risk_score,
    survival_at,
    uno_c,
)
from shared.metrics.evaluation import (  # noqa: F401
    compare_with_baseline,
    evaluate_predictions,
    responder_labels,
    survival_outcomes,
)
from shared.metrics.subgroups import (  # noqa: F401
    FigureSpec,
    SITE_FIGURES,
    evaluate_subgroups,
    site_figures,
    subgroup_masks,
)
from shared.metrics.across_sites import (  # noqa: F401
    pool_site_estimates,
    random_effects_meta_analysis,
)

__all__ = ['CalibrationCurve', 'Comparison', 'Curve', 'DecisionCurve', 'ENDPOINTS', 'ENDPOINT_NAMES', 'Estimate', 'EvaluationSettings', 'HorizonEvaluation', 'KaplanMeierByRisk', 'KaplanMeierGroup', 'MIN_CELL_SIZE', 'MetaAnalysis', 'OutcomePredictions', 'PredictionEvaluation', 'RESPONDER_CODES', 'ResponseEvaluation', 'SubgroupEvaluation', 'SurvivalEvaluation', 'bootstrap_interval', 'harrell_c_value', 'roc_auc', 'suppress_small_cells', 'calibration_intercept_value', 'calibration_slope_value', 'evaluate_response', 'net_benefit', 'response_auc', 'response_balanced_accuracy', 'response_brier', 'response_calibration', 'response_calibration_curve', 'response_decision_curve', 'response_roc', 'evaluate_survival', 'harrell_c', 'kaplan_meier_by_risk', 'restricted_mean_survival_days', 'risk_score', 'survival_at', 'uno_c', 'compare_with_baseline', 'evaluate_predictions', 'responder_labels', 'survival_outcomes', 'FigureSpec', 'SITE_FIGURES', 'evaluate_subgroups', 'site_figures', 'subgroup_masks', 'pool_site_estimates', 'random_effects_meta_analysis']
