"""The propensity model's federation: FedAvg rounds before the outcome model's, then its release to the sites.

Each round is the coordinator's round function (server/coordinator.py), so the propensity model's updates are
screened (shape, NaN/inf, size against the round's median) and aggregated robustly like the outcome model's.
The global propensity model is sent with every training instruction of the federated phase; each site weights
its patients' outcome loss by it (client/flower/app.py, shared/propensity.py). It is saved beside the checkpoints so a
resumed run weights with the same model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord

from server.coordinator import Coordinator
from server.strategies import build_propensity_strategy
from shared.atomic import write_atomically
from shared.messages import EPSILON_KEY, PhaseInstruction
from shared.propensity import PROPENSITY_TRAINING, build_propensity_model

PROPENSITY_FILE = "propensity.pt"


def propensity_phase(coordinator: Coordinator, run_dir: Path) -> ArrayRecord | None:
    """The released global propensity model (None when propensity-weighting is off); trained once per run."""
    config = coordinator.config
    if not config.propensity_weighting:
        return None
    path = run_dir / "checkpoints" / PROPENSITY_FILE
    if config.resume_from and path.is_file():  # a resumed run keeps the model its earlier rounds were weighted with
        return ArrayRecord(torch.load(path, weights_only=True))
    arrays = ArrayRecord(build_propensity_model(config.seed).state_dict())
    strategy = build_propensity_strategy(config)
    for server_round in range(1, config.propensity_rounds + 1):
        trained = coordinator.train_round(strategy, server_round, arrays, PhaseInstruction(),
                                          message_type=PROPENSITY_TRAINING)
        if not trained.aggregated:
            raise RuntimeError(f"propensity round {server_round}: {len(trained.replies.figures)} site(s) usable, "
                               f"min-sites is {config.min_sites}; sites out: {trained.replies.missing}")
        arrays = trained.arrays
        spent = [f[EPSILON_KEY] for f in trained.replies.figures.values() if EPSILON_KEY in f]
        coordinator.progress(f"propensity model round {server_round}/{config.propensity_rounds}: "
                             f"{len(trained.replies.figures)} sites" + (f" | max ε {max(spent):.2f}" if spent else ""))
    state = arrays.to_torch_state_dict()
    write_atomically(path, lambda stream: torch.save(state, stream))
    return arrays
