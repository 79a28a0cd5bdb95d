"""Screening of the sites' updates before aggregation: unusable (shape, NaN/inf) or implausibly large.

Hand-written because Flower's strategies assume well-formed updates and have no per-site rejection with a
reason; what is rejected here is left out of the round and recorded as that site's reason in metrics.json.
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord


def update_problem(arrays: ArrayRecord, reference: dict[str, np.ndarray]) -> str | None:
    """Why an update cannot be aggregated (wrong shape, NaN/inf), or None."""
    for name, expected in reference.items():
        if name not in arrays:
            return f"missing parameter {name}"
        value = arrays[name].numpy()
        if value.shape != expected.shape:
            return f"parameter {name} has shape {value.shape}, expected {expected.shape}"
        if not np.all(np.isfinite(value)):
            return f"parameter {name} holds NaN or infinite values"
    return None


def update_distance(arrays: ArrayRecord, reference: dict[str, np.ndarray]) -> float:
    """L2 norm of (site model − global model) over every parameter, in float64."""
    total = sum(float(np.sum((arrays[name].numpy().astype(np.float64) - expected) ** 2))
                for name, expected in reference.items())
    return float(np.sqrt(total))


def oversized_updates(distances: dict[str, float], ratio: float) -> dict[str, str]:
    """Sites whose update is farther than ratio × the round's median distance, with the figures as the reason.

    Needs at least three updates (with two, the median cannot tell which one is the outlier); ratio 0 = off.
    """
    if ratio <= 0 or len(distances) < 3:
        return {}
    median = float(np.median(list(distances.values())))
    if median <= 0:  # every update equal to the global model: nothing to compare a size with
        return {}
    return {site: (f"update rejected: its distance from the global model, {distance:.4g}, is "
                   f"{distance / median:.1f} × the round's median {median:.4g} (limit {ratio:g} ×, "
                   f"update-norm-ratio)")
            for site, distance in distances.items() if distance > ratio * median}
