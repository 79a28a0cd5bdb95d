"""SHAP explanations of the model's predictions, computed at the site on its own patients.

Per-patient values never leave the site: the tumour board shows one patient's drivers, the site report the
mean |SHAP| per feature, and only that mean (over at least the minimum cell size of patients) is shared.

We use shap's GradientExplainer (expected gradients, Erion et al. 2021): it explains any differentiable
torch model in seconds on CPU, where KernelExplainer would take minutes per site. Attributions are computed
on the encoded columns and summed back to the contract's fields (e.g. the five `stage_group=` columns and
`stage_group missing` become `stage_group`), which is what a clinician recognises; SHAP values are additive,
so the sum is the field's attribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shap
import torch
from torch import nn

from shared.contract import MODALITIES
from shared.encoding import NUM_INPUTS, SurvivalGrid, feature_names
from shared.losses import survival_curve
from shared.messages import SHAP_OUTPUT_UNITS
from shared.model import OncoFedNet

OUTPUTS = ("response", "pfs", "os")
OUTPUT_UNITS = SHAP_OUTPUT_UNITS  # one definition: the consortium report labels the pooled importance with it


def _field_of(column: str) -> str:
    """The contract field an encoded column comes from."""
    column = column.removesuffix(" missing")
    if column.startswith(("regimen=", "drug class=")):
        return "regimen"
    return column.split("=", 1)[0]


def _columns() -> tuple[list[str], list[str]]:
    """Encoded columns in model input order (modality blocks, then the treatment block) and their fields."""
    names = feature_names()
    columns = [c for block in (*MODALITIES, "treatment") for c in names[block]]
    return columns, [_field_of(c) for c in columns]


class _ExplainedOutputs(nn.Module):
    """The model as one input matrix → (response probability, expected PFS days, expected OS days).

    The presence mask is held as a buffer set per call: it gates which modalities the model looks at and
    is not itself a feature to attribute.
    """

    def __init__(self, model: OncoFedNet, grid: SurvivalGrid) -> None:
        super().__init__()
        self.model = model
        self.block_sizes = [len(v) for k, v in feature_names().items() if k in MODALITIES]
        self.register_buffer("interval_days", torch.full((grid.num_intervals,), float(grid.interval_days)))
        self.mask: torch.Tensor | None = None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        *blocks, treatment = torch.split(features, [*self.block_sizes, features.shape[1] - sum(self.block_sizes)],
                                         dim=1)
        mask = self.mask.expand(features.shape[0], -1) if self.mask.shape[0] == 1 else self.mask
        response_logit, pfs_logits, os_logits = self.model(*blocks, mask, treatment)
        # restricted mean survival time: the area under the survival curve up to the horizon
        expected = lambda logits: (survival_curve(logits) * self.interval_days).sum(dim=1)  # noqa: E731
        return torch.stack([torch.sigmoid(response_logit), expected(pfs_logits), expected(os_logits)], dim=1)


@dataclass(frozen=True)
class Explanation:
    """SHAP values per patient, per contract field, per output (response, pfs, os); stays at the site."""

    fields: list[str]
    values: np.ndarray  # (patients, fields, outputs)
    baseline: np.ndarray  # (patients, outputs) mean prediction over the background, with each patient's mask

    def mean_absolute(self, output: str) -> dict[str, float]:
        """Mean |SHAP| per field over these patients: the site's feature importance for one output."""
        index = OUTPUTS.index(output)
        return {f: float(v) for f, v in zip(self.fields, np.abs(self.values[:, :, index]).mean(axis=0), strict=True)}

    def top_drivers(self, patient: int, output: str, k: int = 5) -> list[tuple[str, float]]:
        """The k fields that moved this patient's prediction most, signed, largest |SHAP| first."""
        row = self.values[patient, :, OUTPUTS.index(output)]
        order = np.argsort(-np.abs(row))[:k]
        return [(self.fields[i], float(row[i])) for i in order]


def _flat(inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """(features without the mask, the mask) from the model's input tuple."""
    *blocks, mask, treatment = inputs[:NUM_INPUTS]
    return torch.cat([*blocks, treatment], dim=1), mask


def explain(model: OncoFedNet, grid: SurvivalGrid, background: tuple[torch.Tensor, ...],
            patients: tuple[torch.Tensor, ...], samples: int = 100, seed: int = 0) -> Explanation:
    """Expected-gradients SHAP values of each patient's three outputs against a background of site patients.

    Each patient is explained with its own presence mask (a patient without imaging is never credited with
    imaging findings), so the values add up to the prediction minus the background's mean prediction under
    that mask; background rows are drawn from the site's training patients.
    """
    wrapped = _ExplainedOutputs(model, grid).eval()
    background_features, _ = _flat(background)
    features, mask = _flat(patients)
    columns, fields = _columns()
    if features.shape[1] != len(columns):
        raise ValueError(f"inputs have {features.shape[1]} columns, the encoding has {len(columns)}")
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        per_column = np.zeros((len(features), len(columns), len(OUTPUTS)))
        baseline = np.zeros((len(features), len(OUTPUTS)))
        patterns, pattern_of = torch.unique(mask, dim=0, return_inverse=True)
        for index, pattern in enumerate(patterns):  # patients sharing a presence mask are explained together
            rows = torch.nonzero(pattern_of == index).squeeze(1)
            wrapped.mask = pattern.unsqueeze(0)
            with torch.no_grad():
                baseline[rows.numpy()] = wrapped(background_features).mean(dim=0).numpy()
            explainer = shap.GradientExplainer(wrapped, background_features, batch_size=samples)
            values = explainer.shap_values(features[rows], nsamples=samples, rseed=seed + index)
            per_column[rows.numpy()] = np.asarray(values).reshape(len(rows), len(columns), len(OUTPUTS))
    finally:
        torch.random.set_rng_state(torch_state)
    unique = list(dict.fromkeys(fields))
    grouping = np.zeros((len(columns), len(unique)))
    grouping[np.arange(len(columns)), [unique.index(f) for f in fields]] = 1.0
    return Explanation(fields=unique, values=np.einsum("pco,cf->pfo", per_column, grouping), baseline=baseline)
