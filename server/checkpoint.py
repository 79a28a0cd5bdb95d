"""Checkpoints after every round: the global model, the strategy's state, the feature scaling, the history.

Written atomically (temporary file, then rename), so a coordinator killed mid-write resumes from the last
complete round and never repeats or loses an aggregation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel

from server.provenance import ModelProvenance, RunProvenance, checkpoint_provenance
from shared.atomic import write_atomically
from shared.config import RunConfig
from shared.encoding import SurvivalGrid
from shared.harmonisation import NormalisationStats
from shared.model import OncoFedNet, model_for
from shared.run_result import RoundRecord


class ServerState(BaseModel):
    """What the coordinator needs to continue a run from the next round."""

    completed_round: int
    normalisation: NormalisationStats
    history: list[RoundRecord]
    provenance: RunProvenance | None = None  # None: a checkpoint written before provenance was recorded
    # (a, b) of the response recalibration folded into this checkpoint's model (server/recalibration.py); None: none
    recalibration: tuple[float, float] | None = None


def _atomic_torch_save(payload: dict, path: Path) -> None:
    write_atomically(path, lambda stream: torch.save(payload, stream), mode=0o600)


def save_checkpoint(run_dir: Path, state: ServerState, model_state: dict[str, torch.Tensor],
                    strategy_state: dict[str, dict[str, np.ndarray]], round_file: bool = True) -> Path:
    """Write latest.pt and (round_file) round_NNN.pt. A round's file is written once and never changed: the
    recalibrated final model (state.recalibration) goes to latest.pt only."""
    path = run_dir / "checkpoints" / f"round_{state.completed_round:03d}.pt"
    payload = {
        "server_state": state.model_dump_json(),
        "model": {k: v.detach().cpu() for k, v in model_state.items()},
        "strategy": {name: {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
                     for name, arrays in strategy_state.items()},
    }
    if state.provenance is not None:  # the model's provenance, readable without the run's other files
        payload["provenance"] = checkpoint_provenance(state.provenance, state.completed_round,
                                                      state.history).model_dump_json()
    if round_file:
        _atomic_torch_save(payload, path)
    _atomic_torch_save(payload, run_dir / "checkpoints" / "latest.pt")
    return path if round_file else run_dir / "checkpoints" / "latest.pt"


def load_checkpoint(run_dir: Path) -> tuple[ServerState, dict[str, torch.Tensor], dict[str, dict[str, np.ndarray]]]:
    path = run_dir / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise FileNotFoundError(f"cannot resume: no checkpoint at {path}; start a new run instead "
                                f"(leave resume-from empty)")
    payload = torch.load(path, weights_only=True)
    state = ServerState.model_validate(json.loads(payload["server_state"]))
    strategy = {name: {k: v.numpy() for k, v in arrays.items()} for name, arrays in payload["strategy"].items()}
    return state, payload["model"], strategy


def load_final_model(run_dir: Path) -> tuple[RunConfig, ServerState, SurvivalGrid, OncoFedNet]:
    """A finished run's configuration, server state, survival grid and last model, for studies of its output."""
    config = RunConfig.from_mapping(json.loads((run_dir / "config.json").read_text()))
    state, weights, _ = load_checkpoint(run_dir)
    grid = SurvivalGrid.from_config(config)
    model = model_for(config)
    model.load_state_dict(weights)
    return config, state, grid, model


def load_provenance(path: Path) -> ModelProvenance | None:
    """The provenance a checkpoint file records; None for a checkpoint written without it."""
    payload = torch.load(path, weights_only=True)
    return ModelProvenance.model_validate_json(payload["provenance"]) if "provenance" in payload else None
