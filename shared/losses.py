"""Per-patient losses: every term is a function of one patient alone, so DP-SGD can clip per patient.

A Cox partial likelihood couples the patients of a batch through the risk set, which breaks per-sample
clipping; the discrete-time hazard likelihood below does not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def discrete_hazard_nll(hazard_logits: torch.Tensor, survived: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood per patient of a discrete-time hazard model, shape (batch,).

    survived[i, k] = 1 where patient i lived through interval k; event[i, k] = 1 in the interval of the
    event. Censored patients contribute only the intervals they completed.
    """
    log_survive = F.logsigmoid(-hazard_logits)
    log_hazard = F.logsigmoid(hazard_logits)
    return -(survived * log_survive + event * log_hazard).sum(dim=1)


def survival_curve(hazard_logits: torch.Tensor) -> torch.Tensor:
    """S(t_k) = prod_{j<=k} (1 - h_j) at the end of each interval, shape (batch, K)."""
    return torch.exp(torch.cumsum(F.logsigmoid(-hazard_logits), dim=1))


def patient_losses(response_logit: torch.Tensor, pfs_logits: torch.Tensor, os_logits: torch.Tensor,
                   responder: torch.Tensor, responder_known: torch.Tensor,
                   pfs_survived: torch.Tensor, pfs_event: torch.Tensor, pfs_known: torch.Tensor,
                   os_survived: torch.Tensor, os_event: torch.Tensor, os_known: torch.Tensor) -> torch.Tensor:
    """Multitask loss of each patient (batch,): response BCE + PFS and OS hazard NLL, unknown outcomes skipped."""
    response = F.binary_cross_entropy_with_logits(response_logit, responder, reduction="none") * responder_known
    pfs = discrete_hazard_nll(pfs_logits, pfs_survived, pfs_event) * pfs_known
    os_ = discrete_hazard_nll(os_logits, os_survived, os_event) * os_known
    return response + pfs + os_


def batch_loss(model_outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
               targets: tuple[torch.Tensor, ...], weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of per-patient losses (Opacus loss_reduction='mean'); 0 for an empty Poisson batch.

    `weights` (batch,): each patient's own weight (shared/propensity.py), a function of that patient alone, so
    each term still depends on one patient and per-sample clipping holds.
    """
    losses = patient_losses(*model_outputs, *targets)
    if weights is not None:
        losses = losses * weights
    if losses.numel() == 0:
        return losses.sum()
    return losses.mean()
