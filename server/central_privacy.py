"""Central DP's ε: what the noise the coordinator adds to the aggregate (central-dp-noise-multiplier) guarantees.

Flower's DifferentialPrivacyServerSideFixedClipping clips each site's update to C (update-clip-norm) and adds
N(0, (z·C/m)²) to the aggregate, m = min-sites. Its own accountant (flwr 1.42, optional dp-accounting package, not
installed here) only accepts equal site weights; this project weights each site by its training patients, so the
ε is computed here: with the weights w_k = n_k / Σn taken as public (they are sent in the clear as num-examples),
one site's clipped update moves the weighted mean by at most w_max·C, so a round is a Gaussian mechanism with
noise multiplier z_eff = (z·C/m) / (w_max·C) = z / (m·w_max). Every site takes part in every round (no sampling
amplification), and the rounds compose under Opacus's RDP accountant. The unit of this guarantee is one site's
whole contribution (all its patients), not one patient: it is the consortium's statement, recorded beside the
sites' own per-patient ledgers and never added to them. δ = 0.1 / (sites), by the project's rule δ = 0.1 / n.

A coordinate-wise median or trimmed mean has no such bound from the clip norm (one site can move each coordinate
to a neighbouring order statistic independently), so RunConfig refuses central DP with robust aggregation.
"""

from __future__ import annotations

import warnings

import numpy as np

from shared.config import RunConfig
from shared.messages import COUNT_KEY
from shared.run_result import RoundRecord


def central_epsilon(config: RunConfig, history: list[RoundRecord]) -> dict | None:
    """The central guarantee of the rounds in `history` (each round's training figures per accepted site); None when
    the run adds no central noise."""
    if config.central_dp_noise_multiplier <= 0:
        return None
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    multipliers = []
    sites: set[str] = set()
    for record in history:
        weights = np.array([float(f.get(COUNT_KEY, 0.0)) for f in record.train.values()])
        if weights.sum() <= 0:
            continue
        sites |= set(record.train)
        multipliers.append(config.central_dp_noise_multiplier / (config.min_sites * weights.max() / weights.sum()))
    if not multipliers:
        return None
    delta = 0.1 / max(len(sites), 1)
    rdp = sum(np.asarray(rdp_analysis.compute_rdp(q=1.0, noise_multiplier=z, steps=1,
                                                  orders=RDPAccountant.DEFAULT_ALPHAS)) for z in multipliers)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        epsilon, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return {"unit": "one site's whole contribution (all its patients)", "epsilon": float(epsilon), "delta": delta,
            "rounds": len(multipliers), "noise_multiplier": config.central_dp_noise_multiplier,
            "clip_norm": config.update_clip_norm, "min_sites": config.min_sites,
            "effective_noise_multiplier": [float(z) for z in multipliers],
            "weighting": "by training patients (num-examples), weights taken as public"}
