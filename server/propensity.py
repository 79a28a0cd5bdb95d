"""The propensity model's federation: FedAvg rounds before the outcome model's, then its release to the sites.

The global propensity model is sent with every training instruction of the federated phase; each site weights
its patients' outcome loss by it (client/flower/app.py, shared/propensity.py). It is saved beside the checkpoints so a
resumed run weights with the same model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg

from shared.config import RunConfig
from shared.harmonisation import NormalisationStats
from shared.messages import MODEL_ARRAYS_KEY, NORMALISATION_KEY, PLAN_KEY, SERVER_ROUND_KEY, instruction_records
from shared.propensity import PROPENSITY_TRAINING, build_propensity_model

PROPENSITY_FILE = "propensity.pt"


def propensity_phase(grid: Grid, config: RunConfig, stats: NormalisationStats, names: dict[int, str],
                     collect: Callable, run_dir: Path, progress: Callable[[str], None]) -> ArrayRecord | None:
    """The released global propensity model (None when propensity-weighting is off); trained once per run."""
    if not config.propensity_weighting:
        return None
    path = run_dir / "checkpoints" / PROPENSITY_FILE
    if config.resume_from and path.is_file():  # a resumed run keeps the model its earlier rounds were weighted with
        return ArrayRecord(torch.load(path, weights_only=True))
    arrays = ArrayRecord(build_propensity_model(config.seed).state_dict())
    strategy = FedAvg(fraction_train=1.0, min_train_nodes=config.min_sites, min_available_nodes=config.min_sites)
    for server_round in range(1, config.propensity_rounds + 1):
        records = instruction_records(config, stats, **{SERVER_ROUND_KEY: server_round})
        messages = [Message(RecordDict({MODEL_ARRAYS_KEY: arrays, PLAN_KEY: records[PLAN_KEY],
                                        NORMALISATION_KEY: records[NORMALISATION_KEY]}),
                            dst_node_id=node, message_type=PROPENSITY_TRAINING) for node in grid.get_node_ids()]
        reference = {k: v.numpy() for k, v in arrays.items()}
        replies = collect(grid, messages, config.round_timeout_s, names, reference)
        if len(replies.accepted) < config.min_sites:
            raise RuntimeError(f"propensity round {server_round}: {len(replies.accepted)} site(s) usable, min-sites "
                               f"is {config.min_sites}; sites out: {replies.missing}")
        aggregated, _ = strategy.aggregate_train(server_round, replies.accepted)
        arrays = aggregated if aggregated is not None else arrays
        spent = [f["epsilon"] for f in replies.figures.values() if "epsilon" in f]
        progress(f"propensity model round {server_round}/{config.propensity_rounds}: {len(replies.accepted)} sites"
                 + (f" | max ε {max(spent):.2f}" if spent else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(arrays.to_torch_state_dict(), path)
    return arrays
