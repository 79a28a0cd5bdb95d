"""What an evaluation takes and gives: its settings, the predictions it scores and every result model."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from scipy import special, stats

from shared.config import RunConfig

MIN_CELL_SIZE = 10
ENDPOINTS: tuple[str, ...] = ("pfs", "os")
ENDPOINT_NAMES: dict[str, str] = {"pfs": "Progression-free survival", "os": "Overall survival"}
RESPONDER_CODES = frozenset({"CR", "PR"})


class EvaluationSettings(BaseModel):
    """How a site is evaluated; the defaults are the ones the consortium reports with."""

    model_config = ConfigDict(frozen=True)

    min_cell_size: int = Field(default=MIN_CELL_SIZE, ge=1,
                               description="fewer patients, events or non-events than this: figure suppressed")
    n_bootstrap: int = Field(default=RunConfig.model_fields["bootstrap_samples"].default, ge=20,
                             description="bootstrap resamples per interval (the run configuration's default)")
    confidence: float = Field(default=0.95, gt=0, lt=1)
    response_threshold: float = Field(default=0.5, gt=0, lt=1,
                                      description="predicted response probability at which a patient is "
                                                  "called a responder (balanced accuracy)")
    horizons_days: tuple[float, ...] = Field(default=(365.0, 730.0, 1095.0),
                                             description="1, 2 and 3 years")
    calibration_bins: int = Field(default=10, ge=2)
    decision_thresholds: tuple[float, ...] = tuple(np.round(np.arange(0.05, 0.96, 0.01), 2).tolist())

    @classmethod
    def from_config(cls, config: RunConfig, min_cell_size: int) -> EvaluationSettings:
        """A site's settings in a run: the run's bootstrap samples, the site's own minimum cell size."""
        return cls(min_cell_size=min_cell_size, n_bootstrap=config.bootstrap_samples)


def _to_scale(value: float, scale: str) -> float:
    if scale == "logit":
        clipped = min(max(value, 1e-6), 1 - 1e-6)
        return float(special.logit(clipped))
    return float(value)

def _from_scale(value: float, scale: str) -> float:
    return float(special.expit(value)) if scale == "logit" else float(value)


class Estimate(BaseModel):
    """One figure, its interval and the counts it rests on; all None when the cell is suppressed.

    `events` counts responders for response figures and progressions/deaths (or cases by the horizon) for
    survival figures.
    """

    model_config = ConfigDict(frozen=True)

    value: float | None
    lower: float | None = None
    upper: float | None = None
    n: int | None = None
    events: int | None = None
    suppressed: bool = False
    note: str | None = None

    @property
    def available(self) -> bool:
        return self.value is not None and not self.suppressed

    def standard_error(self, scale: Literal["identity", "logit"] = "identity",
                       confidence: float = 0.95) -> float | None:
        """Standard error implied by the interval (normal approximation), for meta-analysis."""
        if not self.available or self.lower is None or self.upper is None:
            return None
        z = stats.norm.ppf(0.5 + confidence / 2)
        lower, upper = _to_scale(self.lower, scale), _to_scale(self.upper, scale)
        spread = (upper - lower) / (2 * z)
        return float(spread) if spread > 0 else None


class Curve(BaseModel):
    """Points of a curve (ROC, calibration, net benefit, survival) ready to plot."""

    x: list[float]
    y: list[float]


class CalibrationCurve(BaseModel):
    predicted: list[float] = Field(description="mean predicted probability per bin")
    observed: list[float] = Field(description="observed response rate per bin")
    bins: int = Field(description="quantile bins, each holding at least the minimum cell size")


class DecisionCurve(BaseModel):
    """Net benefit of acting on the prediction at each threshold probability, with treat-all for reference."""

    thresholds: list[float]
    net_benefit: list[float]
    treat_all: list[float]


class ResponseEvaluation(BaseModel):
    n: int | None
    responders: int | None
    auc: Estimate
    balanced_accuracy: Estimate
    threshold: float
    brier: Estimate
    calibration_slope: Estimate
    calibration_intercept: Estimate
    roc: Curve | None = None
    calibration: CalibrationCurve | None = None
    decision_curve: DecisionCurve | None = None


class HorizonEvaluation(BaseModel):
    """Time-dependent AUC at a horizon and integrated Brier score up to it."""

    requested_days: float
    evaluated_days: float | None
    note: str | None = None
    auc: Estimate
    integrated_brier: Estimate


class KaplanMeierGroup(BaseModel):
    label: str
    n: int | None
    events: int | None
    curve: Curve | None
    lower: list[float] | None = None
    upper: list[float] | None = None


class KaplanMeierByRisk(BaseModel):
    groups: list[KaplanMeierGroup]
    logrank_p: float | None
    note: str | None = None


class SurvivalEvaluation(BaseModel):
    endpoint: str
    n: int | None
    events: int | None
    harrell_c: Estimate
    uno_c: Estimate
    uno_tau_days: float | None
    horizons: list[HorizonEvaluation]
    kaplan_meier: KaplanMeierByRisk | None = None


class PredictionEvaluation(BaseModel):
    """Every figure for one set of predictions (the model's or a baseline's) on a site's test patients."""

    response: ResponseEvaluation
    survival: dict[str, SurvivalEvaluation]


class Comparison(BaseModel):
    """The model against a baseline on the same patients: paired-bootstrap difference and relative change."""

    metric: str
    model: Estimate
    baseline: Estimate
    difference: Estimate
    relative_improvement_percent: float | None


class SubgroupEvaluation(BaseModel):
    group: str
    level: str
    n: int | None
    response_auc: Estimate
    response_brier: Estimate
    pfs_harrell_c: Estimate
    os_harrell_c: Estimate


class MetaAnalysis(BaseModel):
    """DerSimonian–Laird random-effects summary of per-site figures."""

    pooled: float
    lower: float
    upper: float
    tau2: float = Field(description="between-site variance (on the pooling scale)")
    i2_percent: float = Field(description="share of variability due to between-site heterogeneity")
    q: float
    q_p_value: float | None
    sites: int
    scale: str = "identity"
    weights: list[float | None] = Field(description="random-effects weights in percent, in input order; None for "
                                                    "a site left out (figure suppressed or without interval)")


class OutcomePredictions(BaseModel):
    """Predictions for the rows of a site's test table, in the model's output interface.

    Baselines return the same shape, so every metric applies identically. Rows align with the test table;
    patients without a known outcome are dropped per endpoint at evaluation.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    response_prob: np.ndarray = Field(description="(n,) probability of response (CR or PR)")
    pfs_survival: np.ndarray = Field(description="(n, K) progression-free survival S(t_k)")
    os_survival: np.ndarray = Field(description="(n, K) overall survival S(t_k)")
    time_grid_days: np.ndarray = Field(description="(K,) increasing days at which survival is given")

    @field_validator("response_prob", "pfs_survival", "os_survival", "time_grid_days", mode="before")
    @classmethod
    def _as_float_array(cls, value: object) -> np.ndarray:
        return np.asarray(value, dtype=float)

    @model_validator(mode="after")
    def _shapes(self) -> OutcomePredictions:
        grid, n = self.time_grid_days, self.response_prob.shape[0]
        if self.response_prob.ndim != 1:
            raise ValueError("response_prob must be one probability per patient, shape (n,)")
        if grid.ndim != 1 or grid.size == 0 or np.any(np.diff(grid) <= 0) or grid[0] < 0:
            raise ValueError("time_grid_days must be a non-empty, strictly increasing array of days >= 0")
        for name in ("pfs_survival", "os_survival"):
            curve = getattr(self, name)
            if curve.shape != (n, grid.size):
                raise ValueError(f"{name} has shape {curve.shape}; expected (n patients, len(time_grid_days)) "
                                 f"= ({n}, {grid.size})")
        for name in ("response_prob", "pfs_survival", "os_survival"):
            values = getattr(self, name)
            if not np.all(np.isfinite(values)) or values.min(initial=0) < 0 or values.max(initial=0) > 1:
                raise ValueError(f"{name} must hold probabilities in [0, 1] with no NaN")
        return self

    def survival(self, endpoint: str) -> np.ndarray:
        return self.pfs_survival if endpoint == "pfs" else self.os_survival

    def subset(self, rows: np.ndarray) -> OutcomePredictions:
        return OutcomePredictions(response_prob=self.response_prob[rows], pfs_survival=self.pfs_survival[rows],
                                  os_survival=self.os_survival[rows], time_grid_days=self.time_grid_days)
