"""Build and train the network under the app's own dictionary (run in a copy of the app whose
shared/dictionaries/default.yaml declares one modality): `python -m tests.one_block_model`.

Prints the model's blocks, its encoders and the loss before and after one training step as one JSON line."""

from __future__ import annotations

import json

import torch

from client.training.dp_sgd import LocalTrainingPlan, PrivacyPlan, train_locally
from shared.contract import MODALITIES, validate_frame, with_every_endpoint
from shared.encoding import NUM_INPUTS, SurvivalGrid, encode_cohort, input_sizes
from shared.harmonisation import pool_summaries, summarise_site
from shared.losses import batch_loss
from shared.model import build_model
from shared.vocabulary import DICTIONARY
from tests.dictionary_cohort import dictionary_export


def main() -> None:
    torch.set_num_threads(1)
    frame = dictionary_export(DICTIONARY, 64, seed=0, site="s0")
    validate_frame(frame, "one-block export")
    frame = with_every_endpoint(frame)
    grid = SurvivalGrid(180, 1800)
    cohort = encode_cohort(frame, pool_summaries([summarise_site(frame, min_cell_size=1)]), grid)
    model = build_model(grid.num_intervals, 8, seed=0)

    def loss() -> float:
        with torch.no_grad():
            return float(batch_loss(model(*cohort.inputs()), cohort.tensors()[NUM_INPUTS:]))

    before = loss()
    plan = LocalTrainingPlan(local_epochs=1, batch_size=64, learning_rate=0.05, proximal_mu=0.0,
                             modality_dropout=0.0, seed=0)
    train_locally(model, cohort, plan, PrivacyPlan(noise_multiplier=0.5, max_grad_norm=1.0, secure_mode=False))
    print(json.dumps({"modalities": list(MODALITIES), "blocks": list(cohort.blocks), "inputs": len(cohort.inputs()),
                      "encoders": sorted(model.encoders), "sizes": input_sizes(),
                      "mask_columns": int(cohort.modality_mask.shape[1]),
                      "parameters": sum(p.numel() for p in model.parameters()),
                      "loss_before": before, "loss_after": loss()}))


if __name__ == "__main__":
    main()
