"""The shared multimodal network: modality encoders, gated attention fusion, a regimen-conditioned trunk.

Only layers Opacus can clip per sample (Linear, LayerNorm, activations) are used: no BatchNorm, no
nn.MultiheadAttention. Sized for DP-SGD (docs/dp_tuning.md): DP noise grows with the number of parameters,
so every encoder is one bounded (tanh) layer, the attention is as wide as the embedding, and each survival
head is a shared baseline hazard per interval plus one covariate effect (a discrete-time proportional-odds
model) instead of a full hidden × intervals matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from shared.contract import MODALITIES
from shared.encoding import input_sizes
from shared.losses import survival_curve


class ModalityEncoder(nn.Module):
    """Maps one modality's features to a shared embedding space."""

    def __init__(self, in_features: int, hidden: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(in_features, hidden), nn.Tanh())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class GatedAttentionFusion(nn.Module):
    """Attention over the modalities present (Ilse et al. 2018 gated attention); absent ones get weight 0."""

    def __init__(self, hidden: int, attention: int | None = None) -> None:
        super().__init__()
        attention = attention or hidden
        self.value = nn.Linear(hidden, attention)
        self.gate = nn.Linear(hidden, attention)
        self.score = nn.Linear(attention, 1)

    def forward(self, embeddings: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # embeddings (batch, modalities, hidden); mask (batch, modalities), clinical always present
        scores = self.score(torch.tanh(self.value(embeddings)) * torch.sigmoid(self.gate(embeddings))).squeeze(-1)
        scores = scores.masked_fill(mask < 0.5, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        return (weights.unsqueeze(-1) * embeddings).sum(dim=1), weights


class SurvivalHead(nn.Module):
    """Hazard logit of interval k = baseline_k + the patient's covariate effect: K + hidden + 1 parameters.

    The baseline starts at a 5% hazard per interval (data-independent), so DP-SGD need not spend its first
    rounds finding the time scale. The baseline is a bias-free Linear on a constant 1 (not a bare Parameter)
    so that Opacus computes its per-patient gradient.
    """

    def __init__(self, hidden: int, num_intervals: int) -> None:
        super().__init__()
        self.baseline = nn.Linear(1, num_intervals, bias=False)
        nn.init.constant_(self.baseline.weight, -3.0)
        self.effect = nn.Linear(hidden, 1)

    @property
    def out_features(self) -> int:
        return self.baseline.out_features

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.baseline(hidden.new_ones(hidden.shape[0], 1)) + self.effect(hidden)


class OncoFedNet(nn.Module):
    """Patient + regimen → response logit, PFS hazard logits, OS hazard logits (one per time interval)."""

    def __init__(self, num_intervals: int, hidden: int = 64) -> None:
        super().__init__()
        sizes = input_sizes()
        self.encoders = nn.ModuleDict({m: ModalityEncoder(sizes[m], hidden) for m in MODALITIES})
        self.fusion = GatedAttentionFusion(hidden)
        self.regimen = nn.Sequential(nn.Linear(sizes["treatment"], hidden), nn.Tanh())
        self.film = nn.Linear(hidden, 2 * hidden)  # regimen-specific scale and shift of the trunk
        self.trunk_in = nn.Linear(2 * hidden, hidden)
        self.trunk_norm = nn.LayerNorm(hidden)
        self.trunk_out = nn.Linear(hidden, hidden)
        self.response_head = nn.Linear(hidden, 1)
        self.pfs_head = SurvivalHead(hidden, num_intervals)
        self.os_head = SurvivalHead(hidden, num_intervals)

    def forward(self, clinical: torch.Tensor, pathology: torch.Tensor, imaging: torch.Tensor,
                genomic: torch.Tensor, modality_mask: torch.Tensor, treatment: torch.Tensor,
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        blocks = {"clinical": clinical, "pathology": pathology, "imaging": imaging, "genomic": genomic}
        embeddings = torch.stack([self.encoders[m](blocks[m]) for m in MODALITIES], dim=1)
        fused, _ = self.fusion(embeddings, modality_mask)
        regimen = self.regimen(treatment)
        scale, shift = self.film(regimen).chunk(2, dim=-1)
        hidden = torch.tanh(self.trunk_in(torch.cat([fused, regimen], dim=-1)))
        hidden = self.trunk_norm(hidden) * (1 + scale) + shift
        hidden = torch.tanh(self.trunk_out(hidden)) + hidden
        return self.response_head(hidden).squeeze(-1), self.pfs_head(hidden), self.os_head(hidden)


def build_model(num_intervals: int, hidden: int, seed: int) -> OncoFedNet:
    """The same initial weights at every call with the same seed (the server's round-0 model)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = OncoFedNet(num_intervals=num_intervals, hidden=hidden)
    torch.random.set_rng_state(generator_state)
    return model


def fold_response_recalibration(model_state: dict[str, torch.Tensor], a: float, b: float
                                ) -> dict[str, torch.Tensor]:
    """The same model with p = σ(a·logit + b) built into its response head (weight·a, bias·a + b): identical
    outputs without a new layer, so every reader of a checkpoint sees the recalibrated model
    (server/recalibration.py). Folding (1/a, −b/a) undoes it."""
    folded = dict(model_state)
    folded["response_head.weight"] = model_state["response_head.weight"] * a
    folded["response_head.bias"] = model_state["response_head.bias"] * a + b
    return folded


@dataclass(frozen=True)
class Predictions:
    """Per-patient outputs; they stay at the site that computed them."""

    response_prob: np.ndarray  # (n,)
    pfs_survival: np.ndarray  # (n, K) at the end of each interval
    os_survival: np.ndarray


def predict(model: OncoFedNet, inputs: tuple[torch.Tensor, ...]) -> Predictions:
    """Response probability and PFS/OS survival curves at the end of each time interval."""
    model.eval()
    with torch.no_grad():
        response_logit, pfs_logits, os_logits = model(*inputs)
    return Predictions(torch.sigmoid(response_logit).numpy(), survival_curve(pfs_logits).numpy(),
                       survival_curve(os_logits).numpy())
