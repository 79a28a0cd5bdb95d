"""The shared multimodal network: a wide (linear) path, one encoder per dictionary modality, gated attention fusion, a
regimen-conditioned trunk, and low-rank regimen × patient interactions.

Only layers Opacus can clip per sample (Linear, LayerNorm, activations) are used: no BatchNorm, no
nn.MultiheadAttention. Sized for DP-SGD (docs/dp_tuning.md): DP noise grows with the number of parameters,
so every encoder is one bounded (tanh) layer, the attention is as wide as the embedding, and each survival
head is a shared baseline hazard per interval plus one covariate effect (a discrete-time proportional-odds
model) instead of a full hidden × intervals matrix.

Wide & deep (Cheng et al. 2016): each output (response logit, PFS and OS covariate effect) is one Linear over
[deep trunk features, the encoded inputs themselves, regimen × patient interaction products]. The network
therefore contains a logistic / discrete-time proportional-odds model on the inputs (zero the other columns),
and the deep and interaction columns start at zero, so DP-SGD starts from that linear model and adds depth
only where the data pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from shared.contract import MODALITIES
from shared.config import RunConfig
from shared.encoding import SurvivalGrid, input_sizes
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
    """Hazard logit of interval k = baseline_k + the patient's covariate effect: K + features + 1 parameters.

    The baseline starts at a 5% hazard per interval (data-independent), so DP-SGD need not spend its first
    rounds finding the time scale. The baseline is a bias-free Linear on a constant 1 (not a bare Parameter)
    so that Opacus computes its per-patient gradient.
    """

    def __init__(self, features: int, num_intervals: int) -> None:
        super().__init__()
        self.baseline = nn.Linear(1, num_intervals, bias=False)
        nn.init.constant_(self.baseline.weight, -3.0)
        self.effect = nn.Linear(features, 1)

    @property
    def out_features(self) -> int:
        return self.baseline.out_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.baseline(features.new_ones(features.shape[0], 1)) + self.effect(features)


class RegimenInteraction(nn.Module):
    """Low-rank bilinear regimen × patient terms: product r = (U·patient)_r · (V·treatment)_r.

    A full regimen × feature interaction matrix would cost patient × treatment parameters (thousands, each
    paying DP noise); rank r costs r · (patient + treatment). The products feed the output layers, whose
    columns for them start at zero, so the terms are learnt only as far as they lower the loss.
    """

    def __init__(self, patient_features: int, treatment_features: int, rank: int) -> None:
        super().__init__()
        self.patient = nn.Linear(patient_features, rank, bias=False)
        self.treatment = nn.Linear(treatment_features, rank, bias=False)

    def forward(self, patient: torch.Tensor, treatment: torch.Tensor) -> torch.Tensor:
        return self.patient(patient) * self.treatment(treatment)


class OncoFedNet(nn.Module):
    """Patient + regimen → response logit, PFS hazard logits, OS hazard logits (one per time interval).

    `wide` adds the encoded inputs as output-layer features (the linear model inside); `interaction_rank`
    the number of regimen × patient products (0: none); `deep` keeps the encoder/attention/trunk path. The
    defaults are the ones chosen on validation (docs/dp_tuning.md); the others exist for that study and tests.
    """

    def __init__(self, num_intervals: int, hidden: int = 16, wide: bool = True, interaction_rank: int = 2,
                 deep: bool = True) -> None:
        super().__init__()
        if not (wide or deep):
            raise ValueError("OncoFedNet needs the wide or the deep path (or both)")
        sizes = input_sizes()
        self.wide, self.deep, self.interaction_rank = wide, deep, interaction_rank
        patient_features = sum(sizes[m] for m in MODALITIES) + len(MODALITIES)  # blocks + presence mask
        features = 0
        if deep:
            self.encoders = nn.ModuleDict({m: ModalityEncoder(sizes[m], hidden) for m in MODALITIES})
            self.fusion = GatedAttentionFusion(hidden)
            self.regimen = nn.Sequential(nn.Linear(sizes["treatment"], hidden), nn.Tanh())
            self.film = nn.Linear(hidden, 2 * hidden)  # regimen-specific scale and shift of the trunk
            self.trunk_in = nn.Linear(2 * hidden, hidden)
            self.trunk_norm = nn.LayerNorm(hidden)
            self.trunk_out = nn.Linear(hidden, hidden)
            features += hidden
        if wide:
            features += patient_features + sizes["treatment"]
        if interaction_rank:
            self.interaction = RegimenInteraction(patient_features, sizes["treatment"], interaction_rank)
            features += interaction_rank
        self.response_head = nn.Linear(features, 1)
        self.pfs_head = SurvivalHead(features, num_intervals)
        self.os_head = SurvivalHead(features, num_intervals)
        self.deep_features = hidden if deep else 0
        # start from the linear model: the interaction columns of every output begin at 0, and so do the deep
        # ones when the wide path is there to carry the first rounds
        with torch.no_grad():
            for layer in (self.response_head, self.pfs_head.effect, self.os_head.effect):
                layer.weight[:, features - interaction_rank:].zero_()
                if wide:
                    layer.weight[:, :self.deep_features].zero_()

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """inputs: one block per dictionary modality (MODALITIES order), the presence mask, the treatment
        (shared/encoding.py EncodedCohort.inputs())."""
        if len(inputs) != len(MODALITIES) + 2:
            raise ValueError(f"OncoFedNet takes {len(MODALITIES) + 2} inputs (blocks {', '.join(MODALITIES)}, "
                             f"the presence mask, the treatment), got {len(inputs)}")
        blocks = dict(zip(MODALITIES, inputs[:len(MODALITIES)], strict=True))
        modality_mask, treatment = inputs[len(MODALITIES):]
        parts = []
        if self.deep:
            embeddings = torch.stack([self.encoders[m](blocks[m]) for m in MODALITIES], dim=1)
            fused, _ = self.fusion(embeddings, modality_mask)
            regimen = self.regimen(treatment)
            scale, shift = self.film(regimen).chunk(2, dim=-1)
            hidden = torch.tanh(self.trunk_in(torch.cat([fused, regimen], dim=-1)))
            hidden = self.trunk_norm(hidden) * (1 + scale) + shift
            parts.append(torch.tanh(self.trunk_out(hidden)) + hidden)
        if self.wide or self.interaction_rank:
            # an absent modality's block is multiplied by its presence 0, so it cannot move the prediction
            patient = torch.cat([blocks[m] * modality_mask[:, i:i + 1] for i, m in enumerate(MODALITIES)]
                                + [modality_mask], dim=-1)
            if self.wide:
                parts.append(torch.cat([patient, treatment], dim=-1))
            if self.interaction_rank:
                parts.append(self.interaction(patient, treatment))
        features = torch.cat(parts, dim=-1)
        return self.response_head(features).squeeze(-1), self.pfs_head(features), self.os_head(features)


def build_model(num_intervals: int, hidden: int, seed: int, deep: bool = True, interaction_rank: int = 2
                ) -> OncoFedNet:
    """The same initial weights at every call with the same seed (the server's round-0 model)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = OncoFedNet(num_intervals, hidden, deep=deep, interaction_rank=interaction_rank)
    torch.random.set_rng_state(generator_state)
    return model


def model_for(config: RunConfig) -> OncoFedNet:
    """The run's initial network: grid, size, form (`network`, `interaction-rank`) and seed from the run
    configuration, so that the coordinator, every site and every reader of a checkpoint build the same one."""
    return build_model(SurvivalGrid.from_config(config).num_intervals, config.hidden_size, config.seed,
                       deep=config.network == "wide-deep", interaction_rank=config.interaction_rank)


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
