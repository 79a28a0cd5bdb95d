"""The propensity model (which regimen a patient was given, from what the site records) and its weights.

Regimens are given by guideline, site habit and biomarkers (confounding by indication), so an outcome model of
associations ranks regimens partly by who received them. Weighting each patient's outcome loss by the inverse
probability of the regimen they were given makes the training population look like one where the regimen did
not depend on the recorded features (a randomised comparison with equal allocation among the candidates).

DP-SGD clips each patient's gradient, so a weight must depend on that patient's record and public quantities
only, never on other patients: weight = (1 / number of candidates) / e(given regimen | features), with the
propensity e from the released (DP-trained, federated) global propensity model, truncated at a bound. What the
site does not record (e.g. biomarkers at a site without a genomic panel) it cannot adjust for: the comparison
stays associational for that part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.contract import MODALITIES
from shared.encoding import feature_names, input_sizes
from shared.vocabulary import REGIMEN_CODES, CancerType, regimens_for

CANCER_TYPES: tuple[str, ...] = tuple(c.value for c in CancerType)
_CLINICAL = feature_names()["clinical"]
CANCER_COLUMNS: tuple[int, ...] = tuple(_CLINICAL.index(f"cancer_type={c}") for c in CANCER_TYPES)
PROPENSITY_INPUTS = len(MODALITIES) + 1  # the modality blocks and the presence mask: the network's first inputs
PROPENSITY_ARRAYS_KEY = "propensity"  # train instructions: the released global propensity model's arrays
PROPENSITY_TRAINING = "train.propensity"  # message type: one round of the propensity model's federation


def candidate_matrix() -> torch.Tensor:
    """(cancer types, regimens) 1 where the regimen is a candidate for the cancer type (shared/vocabulary.py)."""
    return torch.tensor([[float(code in {r.code for r in regimens_for(CancerType(c))}) for code in REGIMEN_CODES]
                         for c in CANCER_TYPES])


class PropensityModel(nn.Module):
    """Multinomial logistic regression of the regimen given, one linear head per cancer type.

    Each patient's probabilities cover the candidate regimens of its own cancer type only (others get 0); the
    head is picked by the patient's cancer-type indicator, so Opacus's per-sample gradients stay per patient.
    """

    def __init__(self) -> None:
        super().__init__()
        sizes = input_sizes()
        features = sum(sizes[m] for m in MODALITIES) + len(MODALITIES)
        self.heads = nn.ModuleList([nn.Linear(features, len(REGIMEN_CODES)) for _ in CANCER_TYPES])
        self.register_buffer("candidates", candidate_matrix(), persistent=False)

    def forward(self, *blocks_and_mask: torch.Tensor) -> torch.Tensor:
        """Log-probabilities (batch, regimens); −inf outside the patient's candidates. Inputs: the modality blocks
        (MODALITIES order, clinical first) and the presence mask."""
        features = torch.cat(blocks_and_mask, dim=1)
        cancer = blocks_and_mask[0][:, list(CANCER_COLUMNS)]  # one-hot (batch, cancer types) of the clinical block
        logits = sum(cancer[:, [k]] * head(features) for k, head in enumerate(self.heads))
        allowed = cancer @ self.candidates > 0.5
        return torch.log_softmax(logits.masked_fill(~allowed, float("-inf")), dim=1)


def build_propensity_model(seed: int) -> PropensityModel:
    """The same initial weights at every call with the same seed (the coordinator's round-0 model)."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = PropensityModel()
    torch.random.set_rng_state(state)
    return model


def given_regimen(treatment: torch.Tensor) -> torch.Tensor:
    """Index (batch,) of the regimen given, from the treatment block's regimen one-hot (its first columns)."""
    return treatment[:, :len(REGIMEN_CODES)].argmax(dim=1)


def propensity_losses(log_probabilities: torch.Tensor, treatment: torch.Tensor) -> torch.Tensor:
    """Per-patient negative log-likelihood of the regimen given (batch,)."""
    return F.nll_loss(log_probabilities, given_regimen(treatment), reduction="none")


def inverse_probability_weights(model: PropensityModel, inputs: tuple[torch.Tensor, ...], bound: float
                                ) -> torch.Tensor:
    """Stabilised, truncated weight of each patient: (1 / candidates) / e(given | features), at most `bound`.

    `inputs` are the network's inputs (shared/encoding.py EncodedCohort.inputs()); each weight is a function of
    that patient's row and the model only.
    """
    model.eval()
    with torch.no_grad():
        log_probabilities = model(*inputs[:PROPENSITY_INPUTS])
    treatment = inputs[PROPENSITY_INPUTS]
    propensity = log_probabilities.gather(1, given_regimen(treatment)[:, None]).squeeze(1).exp()
    candidates = torch.isfinite(log_probabilities).sum(dim=1).float()
    weights = (1.0 / candidates) / propensity.clamp_min(1e-12)
    return weights.clamp(max=bound)
