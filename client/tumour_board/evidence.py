"""What the run says about one patient beyond the predictions: how far they lie from the consortium's training data,
and how the model did on their subgroups in validation (the site's own report and the federated figures).

Runs at the site on the site's own patients; nothing here is sent anywhere.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from pydantic import BaseModel

from client.tumour_board.run_bundle import RunBundle
from shared.contract import MODALITIES
from shared.encoding import modality_presence
from shared.harmonisation import (
    CATEGORICAL_FEATURES,
    FLAG_FEATURES,
    HISTOGRAM_EDGES,
    NUMERIC_FEATURES,
    NUMERIC_TRANSFORMS,
    SUPPRESSED,
)
from shared.messages import OS_CINDEX, PFS_CINDEX, RESPONSE_AUC, SUBGROUP_COUNT, interval_keys, subgroup_key
from shared.metrics import subgroup_masks

Z_LIMIT = 4.0


class OutOfDistribution(BaseModel):
    """An input the training data did not cover well; predictions for it are extrapolations."""

    field: str
    value: str
    kind: str  # "beyond-range", "extreme-z", "unseen-code", "rare-code", "unseen-modality-pattern"
    detail: str


class SubgroupFigure(BaseModel):
    """The patient's subgroup and how the model did on it in a validation report (None = not reported)."""

    source: str
    group: str
    level: str
    n: int | None
    response_auc: str
    pfs_cindex: str
    os_cindex: str


# ----------------------------------------------------------------------------------------------------------
# Out-of-distribution flags
# ----------------------------------------------------------------------------------------------------------

def _occupied_range(counts: list[float], edges: tuple[float, ...]) -> tuple[float, float] | None:
    """Lowest and highest edge of the pooled histogram's non-empty bins (coarsened bins make it approximate)."""
    occupied = [i for i, c in enumerate(counts) if c > 0]
    if not occupied:
        return None
    return edges[occupied[0]], edges[occupied[-1] + 1]


def out_of_distribution(patient: pd.Series, bundle: RunBundle, site_training: pd.DataFrame | None,
                        ) -> list[OutOfDistribution]:
    """Fields of one patient far from the consortium's pooled training statistics, and how far."""
    stats = bundle.stats
    flags: list[OutOfDistribution] = []
    for feature in NUMERIC_FEATURES:
        value = patient.get(feature)
        if value is None or pd.isna(value):
            continue
        value = float(value)
        if stats.count.get(feature, 0) == 0:
            flags.append(OutOfDistribution(field=feature, value=f"{value:g}", kind="unseen-code",
                                           detail="no site shared this field in training; the model never "
                                                  "learned from it"))
            continue
        z = (float(NUMERIC_TRANSFORMS[feature](np.array([value]))[0]) - stats.mean[feature]) / max(
            stats.std[feature], 1e-6)
        span = _occupied_range(stats.histogram[feature], HISTOGRAM_EDGES[feature])
        scale = f" ({stats.transform[feature]} scale)" if stats.transform[feature] != "identity" else ""
        if span is not None and not span[0] <= value <= span[1]:
            side = "below" if value < span[0] else "above"
            distance = span[0] - value if value < span[0] else value - span[1]
            flags.append(OutOfDistribution(
                field=feature, value=f"{value:g}", kind="beyond-range",
                detail=f"{distance:g} {side} the pooled training range {span[0]:g}–{span[1]:g}; z = {z:+.1f}"
                       f"{scale}"))
        elif abs(z) > Z_LIMIT:
            flags.append(OutOfDistribution(field=feature, value=f"{value:g}", kind="extreme-z",
                                           detail=f"z = {z:+.1f}{scale} from the pooled training mean "
                                                  f"(flagged beyond ±{Z_LIMIT:g})"))
    for feature in CATEGORICAL_FEATURES:
        if feature == "regimen":
            continue  # every candidate regimen is compared; regimen coverage is shown per regimen
        value = patient.get(feature)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            continue
        code = ("true" if float(value) > 0 else "false") if feature in FLAG_FEATURES else str(value)
        counts = stats.category_counts.get(feature, {})
        if counts.get(code, 0) > 0:
            continue
        if counts.get(SUPPRESSED, 0) > 0:
            flags.append(OutOfDistribution(field=feature, value=code, kind="rare-code",
                                           detail="seen in training only at sites where it was too rare to "
                                                  "report (below the minimum cell size)"))
        else:
            flags.append(OutOfDistribution(field=feature, value=code, kind="unseen-code",
                                           detail="this code never occurred in the consortium's training data"))
    if site_training is not None and len(site_training):
        pattern = modality_presence(patient.to_frame().T)[0]
        seen = modality_presence(site_training)
        if not (seen == pattern).all(axis=1).any():
            present = [m for m, p in zip(MODALITIES, pattern, strict=True) if p > 0]
            flags.append(OutOfDistribution(field="modalities", value="+".join(present), kind="unseen-modality-pattern",
                                           detail="no training patient at this site had exactly these modalities"))
    return flags


# ----------------------------------------------------------------------------------------------------------
# Subgroup performance
# ----------------------------------------------------------------------------------------------------------

def _format_estimate(value: float | None, lower: float | None, upper: float | None) -> str:
    if value is None:
        return "not reported"
    if lower is None or upper is None:
        return f"{value:.2f}"
    return f"{value:.2f} ({lower:.2f}–{upper:.2f})"


def _from_report(report: dict, wanted: set[tuple[str, str]]) -> list[SubgroupFigure]:
    rows = []
    for subgroup in report.get("subgroups", []):
        if (subgroup["group"], subgroup["level"]) not in wanted:
            continue
        shown = {name: _format_estimate(subgroup[name]["value"], subgroup[name].get("lower"),
                                        subgroup[name].get("upper"))
                 for name in ("response_auc", "pfs_harrell_c", "os_harrell_c")}
        rows.append(SubgroupFigure(source=f"site report ({report.get('site_id', 'this site')}, test patients)",
                                   group=subgroup["group"], level=subgroup["level"], n=subgroup.get("n"),
                                   response_auc=shown["response_auc"], pfs_cindex=shown["pfs_harrell_c"],
                                   os_cindex=shown["os_harrell_c"]))
    return rows


def _from_metrics(figures: dict[str, float], site: str, group: str, level: str) -> SubgroupFigure:
    """The subgroup's figures as the site sent them (keys from shared.messages, the one message schema)."""

    def figure(name: str) -> str:
        key = subgroup_key(group, level, name)
        lower, upper = interval_keys(key)
        return _format_estimate(figures.get(key), figures.get(lower), figures.get(upper))

    n = figures.get(subgroup_key(group, level, SUBGROUP_COUNT))
    return SubgroupFigure(source=f"federated validation ({site})", group=group, level=level,
                          n=int(n) if n is not None else None, response_auc=figure(RESPONSE_AUC),
                          pfs_cindex=figure(PFS_CINDEX), os_cindex=figure(OS_CINDEX))


def subgroup_performance(patient: pd.Series, bundle: RunBundle, site_id: str | None,
                         site_report: dict | None) -> list[SubgroupFigure]:
    """The patient's subgroups, with the figures of the site's own report and of the federated validation."""
    frame = patient.to_frame().T.reset_index(drop=True)
    memberships = [(group, level) for group, level, rows in subgroup_masks(frame) if bool(rows[0])]
    rows: list[SubgroupFigure] = []
    if site_report is not None:
        rows += _from_report(site_report, set(memberships))
    reported = {(r.group, r.level) for r in rows}
    test = bundle.metrics.test if bundle.metrics is not None else {}
    for site in ([site_id] if site_id in test else sorted(test)):
        for group, level in memberships:
            row = _from_metrics(test[site], site, group, level)
            if row.n is not None or (group, level) not in reported:
                rows.append(row)
    if not rows:
        rows = [SubgroupFigure(source="no validation report found", group=g, level=lv, n=None,
                               response_auc="not reported", pfs_cindex="not reported", os_cindex="not reported")
                for g, lv in memberships]
    return rows
