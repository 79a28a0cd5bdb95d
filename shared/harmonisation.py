"""Federated harmonisation: each site sends counts and sums, the server pools them into shared statistics.

Features are standardised with one mean and standard deviation for the whole consortium, computed without
any row leaving a site: a site summarises its contract frame (`summarise_site`) into counts, sums and sums
of squares per numeric feature, histogram counts over FIXED bin edges (the same at every site, so they add
up), and counts per code for categorical features. Cells under the minimum cell size are suppressed or
coarsened before the summary leaves the site. `pool_summaries` adds the summaries up and gives the
NormalisationStats that the feature encoder consumes.

Skewed fields are summarised on the log1p scale; NUMERIC_TRANSFORMS is the one definition of that
transform, and the encoder must apply it before standardising with NormalisationStats.mean/std.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from shared.site_config import BOOLEAN_COLUMNS, CATEGORY_CODES
from shared.vocabulary import DICTIONARY

GRID_VERSION = 1  # bump when HISTOGRAM_EDGES or the feature lists change; sites and server must agree

# The model's numeric inputs (the dictionary's numeric fields, outcome times excluded), in the order their
# summaries are sent and pooled: the default dictionary's in their historical order, any others after them in the
# dictionary's order. log1p ones are the dictionary's `transform`.
_DEFAULT_ORDER = ("age_years", "charlson_index", "prior_lines", "ecog", "ki67_percent", "pdl1_tps_percent",
                  "tumour_size_mm", "suv_max", "mtv_ml", "lesion_count", "tmb_mut_per_mb", "line_of_therapy", "grade")
_NUMERIC_FIELDS = tuple(f.name for f in DICTIONARY.table_schema.fields
                        if f.type in ("number", "integer") and f.modality != "outcome")
NUMERIC_FEATURES: tuple[str, ...] = (*(f for f in _DEFAULT_ORDER if f in _NUMERIC_FIELDS),
                                     *(f for f in _NUMERIC_FIELDS if f not in _DEFAULT_ORDER))
LOG1P_FEATURES: tuple[str, ...] = tuple(f.name for f in DICTIONARY.table_schema.fields if f.transform == "log1p")


def _identity(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=float)


def _log1p(values: np.ndarray) -> np.ndarray:
    return np.log1p(np.asarray(values, dtype=float))


NUMERIC_TRANSFORMS: Mapping[str, Callable[[np.ndarray], np.ndarray]] = MappingProxyType(
    {feature: (_log1p if feature in LOG1P_FEATURES else _identity) for feature in NUMERIC_FEATURES})
TRANSFORM_NAMES: Mapping[str, str] = MappingProxyType(
    {feature: ("log1p" if feature in LOG1P_FEATURES else "identity") for feature in NUMERIC_FEATURES})

FLAG_FEATURES: tuple[str, ...] = tuple(c for c in BOOLEAN_COLUMNS if c not in ("pfs_event", "os_event"))
CATEGORICAL_FEATURES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    **{c: codes for c, codes in CATEGORY_CODES.items() if c != "best_response"},
    **{flag: ("false", "true") for flag in FLAG_FEATURES},
})
SUPPRESSED = "_suppressed"  # the pooled bucket of codes too rare to show on their own


def _integer_edges(low: int, high: int) -> tuple[float, ...]:
    return tuple(x - 0.5 for x in range(low, high + 2))


# Fixed bin edges in contract units (values outside are counted in the end bins).
_DEFAULT_EDGES: dict[str, tuple[float, ...]] = {
    "age_years": tuple(float(x) for x in range(18, 111, 4)),
    "charlson_index": _integer_edges(0, 24),
    "prior_lines": _integer_edges(0, 10),
    "ecog": _integer_edges(0, 4),
    "ki67_percent": tuple(float(x) for x in range(0, 101, 5)),
    "pdl1_tps_percent": (0.0, 1.0, *(float(x) for x in range(5, 101, 5))),
    "tumour_size_mm": (0.0, 5, 10, 15, 20, 25, 30, 40, 50, 60, 70, 80, 100, 120, 150, 200, 250, 300, 400),
    "suv_max": (0.0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 15, 20, 25, 30, 40, 50, 75, 100),
    "mtv_ml": (0.0, 1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000),
    "lesion_count": (*_integer_edges(0, 10), 15.5, 20.5, 30.5, 50.5, 100.5, 200.5),
    "tmb_mut_per_mb": (0.0, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 50, 100, 200, 500),
    "line_of_therapy": _integer_edges(1, 10),
    "grade": _integer_edges(1, 3),
}


def _edges_from_range(name: str) -> tuple[float, ...]:
    """Edges for a field the default grid does not know: its dictionary range in 20 bins (whole numbers: one
    bin per value when the range is short)."""
    spec = DICTIONARY.field(name)
    low = spec.constraints.minimum if spec.constraints.minimum is not None else spec.constraints.exclusive_minimum
    low, high = low if low is not None else 0.0, spec.constraints.maximum
    if high is None:
        high = low + 1000.0
    if spec.type == "integer" and high - low <= 30:
        return _integer_edges(int(low), int(high))
    return tuple(float(x) for x in np.linspace(low, high, 21))


HISTOGRAM_EDGES: Mapping[str, tuple[float, ...]] = MappingProxyType(
    {name: _DEFAULT_EDGES[name] if name in _DEFAULT_EDGES else _edges_from_range(name) for name in NUMERIC_FEATURES})


class NumericSummary(BaseModel):
    """One numeric feature at one site: moments on the transformed scale, histogram in contract units."""

    model_config = ConfigDict(extra="forbid")

    count: float = Field(ge=0, description="patients with a value; 0 when suppressed")
    sum: float
    sum_squares: float = Field(ge=0)
    histogram: list[float] = Field(description="counts per bin of HISTOGRAM_EDGES; small runs coarsened")


class FeatureSummary(BaseModel):
    """What a site sends for harmonisation: aggregates only, every cell at or above min_cell_size (or 0)."""

    model_config = ConfigDict(extra="forbid")

    n_patients: int = Field(ge=0)
    min_cell_size: int = Field(ge=1)
    numeric: dict[str, NumericSummary]
    categorical: dict[str, dict[str, float]]


class NormalisationStats(BaseModel):
    """Consortium-wide statistics for the feature encoder.

    mean/std are on the NUMERIC_TRANSFORMS scale (log1p for LOG1P_FEATURES); std is the sample standard
    deviation (ddof=1). A feature no site could share gets mean 0 and std 1 (count 0), and a constant one
    std 1, so standardising with them is always defined.
    """

    model_config = ConfigDict(extra="forbid")

    n_patients: int
    count: dict[str, float]
    mean: dict[str, float]
    std: dict[str, float]
    transform: dict[str, str]
    histogram: dict[str, list[float]]
    category_counts: dict[str, dict[str, float]]

    def quantile(self, feature: str, q: float) -> float:
        """Coarse quantile (contract units) from the pooled histogram, linear within a bin; NaN if empty."""
        counts = np.asarray(self.histogram[feature], dtype=float)
        edges = np.asarray(HISTOGRAM_EDGES[feature], dtype=float)
        total = counts.sum()
        if total <= 0:
            return math.nan
        cumulative = np.concatenate([[0.0], np.cumsum(counts)]) / total
        return float(np.interp(q, cumulative, edges))


def summarise_site(frame: pd.DataFrame, min_cell_size: int = 10) -> FeatureSummary:
    """A site's contract frame as a FeatureSummary that is safe to send (small cells suppressed/coarsened)."""
    n_patients = len(frame)
    if n_patients < min_cell_size:
        raise ValueError(f"the site has {n_patients} patients, fewer than the minimum cell size {min_cell_size}; "
                         f"it cannot share statistics")
    numeric: dict[str, NumericSummary] = {}
    for feature in NUMERIC_FEATURES:
        values = pd.to_numeric(frame[feature], errors="coerce").dropna().to_numpy(dtype=float)
        edges = np.asarray(HISTOGRAM_EDGES[feature])
        if len(values) < min_cell_size:
            numeric[feature] = NumericSummary(count=0, sum=0.0, sum_squares=0.0, histogram=[0.0] * (len(edges) - 1))
            continue
        transformed = NUMERIC_TRANSFORMS[feature](values)
        counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
        numeric[feature] = NumericSummary(count=float(len(values)), sum=float(transformed.sum()),
                                          sum_squares=float(np.square(transformed).sum()),
                                          histogram=coarsen_histogram(counts, min_cell_size))
    categorical: dict[str, dict[str, float]] = {}
    for feature, codes in CATEGORICAL_FEATURES.items():
        column = frame[feature]
        if feature in FLAG_FEATURES:
            column = column.map({1.0: "true", 0.0: "false", True: "true", False: "false"})
        observed = column.dropna().astype(str).value_counts()
        counts = {code: float(observed.get(code, 0)) for code in codes}
        categorical[feature] = suppress_small_counts(counts, min_cell_size)
    return FeatureSummary(n_patients=n_patients, min_cell_size=min_cell_size, numeric=numeric,
                          categorical=categorical)


def coarsen_histogram(counts: Iterable[float], min_cell_size: int) -> list[float]:
    """Merge runs of adjacent small bins until each run holds at least min_cell_size, reported in its middle bin.

    The bins stay the shared fixed grid (so sites still add up) and the total is kept; every value sent is 0
    or at least min_cell_size, so a receiver never sees a small count (client/flower/outbox.py checks exactly this).
    """
    counts = [float(c) for c in counts]
    if sum(counts) < min_cell_size:
        return [0.0] * len(counts)
    runs: list[list[int]] = []  # bin indices per emitted run
    current: list[int] = []
    for index, count in enumerate(counts):
        if not current and (count == 0 or count >= min_cell_size):
            runs.append([index])
            continue
        current.append(index)
        if sum(counts[i] for i in current) >= min_cell_size:
            runs.append(current)
            current = []
    if current:  # a small tail joins the last run that holds patients
        last = max(i for i, run in enumerate(runs) if sum(counts[j] for j in run) > 0)
        runs[last:] = [[j for run in runs[last:] for j in run] + current]
    coarse = [0.0] * len(counts)
    for run in runs:
        coarse[run[len(run) // 2]] = sum(counts[i] for i in run)
    return coarse


def suppress_small_counts(counts: Mapping[str, float], min_cell_size: int) -> dict[str, float]:
    """Codes seen fewer than min_cell_size times (but not zero) go into one SUPPRESSED bucket.

    If that bucket is itself small, the next smallest codes join it, so no shown count, nor the bucket,
    is between 1 and min_cell_size - 1 (a small difference could otherwise be recovered from the total).
    """
    shown = {code: float(c) for code, c in counts.items()}
    bucket = 0.0
    for code, count in list(shown.items()):
        if 0 < count < min_cell_size:
            bucket += count
            shown[code] = 0.0
    while 0 < bucket < min_cell_size:
        remaining = [code for code, c in shown.items() if c > 0]
        if not remaining:
            return {code: 0.0 for code in shown}
        smallest = min(remaining, key=lambda code: shown[code])
        bucket += shown[smallest]
        shown[smallest] = 0.0
    if bucket:
        shown[SUPPRESSED] = bucket
    return shown


def pool_summaries(summaries: Iterable[FeatureSummary]) -> NormalisationStats:
    """Add the sites' summaries up into consortium mean/std per numeric feature and pooled category counts."""
    summaries = list(summaries)
    if not summaries:
        raise ValueError("pool_summaries needs at least one site summary")
    count, mean, std, histogram = {}, {}, {}, {}
    for feature in NUMERIC_FEATURES:
        parts = [s.numeric[feature] for s in summaries]
        n = sum(p.count for p in parts)
        total = sum(p.sum for p in parts)
        squares = sum(p.sum_squares for p in parts)
        count[feature] = n
        histogram[feature] = [float(x) for x in np.sum([p.histogram for p in parts], axis=0)]
        if n == 0:
            mean[feature], std[feature] = 0.0, 1.0
            continue
        mean[feature] = total / n
        variance = max(squares - total * total / n, 0.0) / (n - 1) if n > 1 else 0.0
        std[feature] = math.sqrt(variance) if variance > 0 else 1.0
    category_counts: dict[str, dict[str, float]] = {}
    for feature in CATEGORICAL_FEATURES:
        pooled: dict[str, float] = {}
        for summary in summaries:
            for code, value in summary.categorical[feature].items():
                pooled[code] = pooled.get(code, 0.0) + value
        category_counts[feature] = pooled
    return NormalisationStats(n_patients=sum(s.n_patients for s in summaries), count=count, mean=mean, std=std,
                              transform=dict(TRANSFORM_NAMES), histogram=histogram, category_counts=category_counts)


def to_metric_record_dict(summary: FeatureSummary) -> dict[str, float]:
    """A flat dict[str, float] (keys like "n:age_years", "sum:age_years") that fits a Flower MetricRecord."""
    record = {"site:n_patients": float(summary.n_patients), "site:min_cell_size": float(summary.min_cell_size),
              "site:grid_version": float(GRID_VERSION)}
    for feature, part in summary.numeric.items():
        record[f"n:{feature}"] = part.count
        record[f"sum:{feature}"] = part.sum
        record[f"sumsq:{feature}"] = part.sum_squares
        for index, value in enumerate(part.histogram):
            record[f"hist:{feature}:{index}"] = value
    for feature, counts in summary.categorical.items():
        for code, value in counts.items():
            record[f"cat:{feature}:{code}"] = value
    return record


def from_metric_record_dict(record: Mapping[str, float]) -> FeatureSummary:
    """Inverse of to_metric_record_dict; refuses a summary built on a different bin grid."""
    version = record.get("site:grid_version")
    if version != GRID_VERSION:
        raise ValueError(f"feature summary uses histogram grid version {version}, this code uses {GRID_VERSION}; "
                         f"update the site and the server to the same OncoFed release")
    numeric = {f: {"count": 0.0, "sum": 0.0, "sum_squares": 0.0, "histogram": [0.0] * (len(HISTOGRAM_EDGES[f]) - 1)}
               for f in NUMERIC_FEATURES}
    categorical: dict[str, dict[str, float]] = {f: {} for f in CATEGORICAL_FEATURES}
    fields = {"n": "count", "sum": "sum", "sumsq": "sum_squares"}
    for key, value in record.items():
        kind, _, rest = key.partition(":")
        value = float(value)
        if kind == "site":
            continue
        if kind in fields and rest in numeric:
            numeric[rest][fields[kind]] = value
        elif kind == "hist" and rest.rpartition(":")[0] in numeric:
            feature, _, index = rest.rpartition(":")
            bins = numeric[feature]["histogram"]
            if not index.isdigit() or int(index) >= len(bins):
                raise ValueError(f"feature summary key {key!r}: bin index outside the grid of {len(bins)} bins")
            bins[int(index)] = value
        elif kind == "cat" and rest.partition(":")[0] in categorical:
            feature, _, code = rest.partition(":")
            categorical[feature][code] = value
        else:
            raise ValueError(f"feature summary key {key!r} is not one this OncoFed release writes")
    return FeatureSummary(n_patients=int(record["site:n_patients"]), min_cell_size=int(record["site:min_cell_size"]),
                          numeric={f: NumericSummary(**v) for f, v in numeric.items()}, categorical=categorical)
