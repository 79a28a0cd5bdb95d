"""Personalisation at the site: refit the consortium model's response head on the site's own training split.

At the end of the federation a site may fine-tune the response head (the output layer over the wide, interaction
and deep features; every feature extractor stays frozen) on its training patients, with an L2 pull towards the
consortium's head weights. With the features frozen this is a logistic regression with a Gaussian prior centred on
the consortium's head: convex, so it is solved to the optimum with L-BFGS rather than run for a number of epochs.
The personalised model stays at the site (its report only); nothing of it leaves through the outbox.

Privacy: like the clinic's own model (client/evaluation/baselines.py), it is fitted without DP on data that never
leaves, and none of its outputs is sent; the consortium's released figures are those of the consortium model.
"""

from __future__ import annotations

import copy

import pandas as pd
import torch
from torch import nn

from shared.encoding import SurvivalGrid, encode_cohort
from shared.harmonisation import NormalisationStats
from shared.model import OncoFedNet

PERSONALISED_NAME = "Personalised at site"
CONSORTIUM_NAME = "Consortium model"


def head_features(model: OncoFedNet, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """What the response head reads for each patient (the frozen part of the model), via a forward hook."""
    captured: list[torch.Tensor] = []
    hook = model.response_head.register_forward_hook(lambda _m, args, _out: captured.append(args[0].detach()))
    model.eval()
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        hook.remove()
    return captured[0]


def fit_head(features: torch.Tensor, responder: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
             ridge: float, intercept_only: bool = False, iterations: int = 200
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise mean log-loss + ridge/2 · ‖θ − θ_consortium‖² over the head's weight and bias (or bias alone).

    The penalty is per patient (the loss is a mean), so the same ridge pulls as hard at a small site as a large one;
    ridge → ∞ returns the consortium's head unchanged."""
    if ridge < 0:
        raise ValueError(f"the personalisation ridge must be ≥ 0, not {ridge}")
    anchor_w, anchor_b = weight.detach().double()[0], bias.detach().double()  # (features,), (1,)
    w = anchor_w.clone().requires_grad_(not intercept_only)
    b = anchor_b.clone().requires_grad_(True)
    params = [b] if intercept_only else [w, b]
    optimiser = torch.optim.LBFGS(params, lr=1.0, max_iter=iterations, tolerance_grad=1e-9,
                                  tolerance_change=1e-12, line_search_fn="strong_wolfe")
    x, y = features.double(), responder.double()

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(x @ w + b, y)
        loss = loss + ridge / 2 * (((w - anchor_w) ** 2).sum() + ((b - anchor_b) ** 2).sum())
        loss.backward()
        return loss

    optimiser.step(closure)
    return w.detach().to(weight.dtype).reshape(weight.shape), b.detach().to(bias.dtype)


def personalise_at_site(model: OncoFedNet, train: pd.DataFrame, stats: NormalisationStats, grid: SurvivalGrid,
                        mode: str, ridge: float, min_cell_size: int) -> OncoFedNet | None:
    """A copy of the model with its response head refitted on the training split; None when it cannot be fitted.

    mode "response-head": weight and bias; "response-intercept": the bias only. Only training patients with a known
    best response are used; too few of them (below the minimum cell size) or a single outcome leaves no model."""
    if mode not in ("response-head", "response-intercept"):
        raise ValueError(f"site personalisation must be 'response-head' or 'response-intercept', not {mode!r}")
    cohort = encode_cohort(train, stats, grid)
    known = cohort.responder_known > 0.5
    responder = cohort.responder[known]
    if int(known.sum()) < min_cell_size or responder.min() == responder.max():
        return None
    features = head_features(model, cohort.inputs())[known]
    personal = copy.deepcopy(model)
    weight, bias = fit_head(features, responder, personal.response_head.weight, personal.response_head.bias, ridge,
                            intercept_only=mode == "response-intercept")
    with torch.no_grad():
        personal.response_head.weight.copy_(weight)
        personal.response_head.bias.copy_(bias)
    return personal
