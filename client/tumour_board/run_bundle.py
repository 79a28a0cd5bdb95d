"""A trained run as the site sees it: the run configuration, the global models of the last rounds, the scaling.

The checkpoint files are written by the coordinator (server/checkpoint.py); the layer rule keeps client/ from
importing server/, so this reads the same format with torch directly: `server_state` (JSON of the round, the
pooled NormalisationStats and the history) and `model` (the global state dict). Only tensors are unpickled
(`weights_only=True`), so a checkpoint cannot run code at the site.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from shared.config import RunConfig
from shared.encoding import SurvivalGrid
from shared.harmonisation import NormalisationStats
from shared.model import OncoFedNet, model_for, fold_response_recalibration
from shared.run_result import RESULTS_FILE, RunResult

_ROUND_FILE = re.compile(r"round_(\d{3,})\.pt$")


class RunNotUsable(ValueError):
    """A run directory that cannot serve predictions, with what is missing and what to do."""


@dataclass(frozen=True)
class EnsembleMember:
    """One global model of the ensemble and where it came from (shown in outputs and the model card)."""

    source: str  # "<run name> round <n>"
    model: OncoFedNet


@dataclass(frozen=True)
class RunBundle:
    run_dir: Path
    config: RunConfig
    grid: SurvivalGrid
    stats: NormalisationStats
    members: list[EnsembleMember]  # last member = the run's final global model
    metrics: RunResult | None  # metrics.json (None while a run has not finished)

    @property
    def final_model(self) -> OncoFedNet:
        return self.members[-1].model


def round_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(round, path) of every per-round checkpoint, oldest first."""
    found = []
    for path in (run_dir / "checkpoints").glob("round_*.pt"):
        match = _ROUND_FILE.search(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def _read_checkpoint(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
        return json.loads(payload["server_state"]), payload["model"]
    except (OSError, RuntimeError, KeyError, json.JSONDecodeError, EOFError) as error:
        raise RunNotUsable(f"cannot read checkpoint {path}: {error}. Copy the run directory again from the "
                           f"coordinator") from None


def read_config(run_dir: Path) -> RunConfig:
    path = run_dir / "config.json"
    if not path.is_file():
        raise RunNotUsable(f"{run_dir} is not a run directory: no config.json. Pass the folder that "
                           f"`oncofed-simulate` (or the coordinator) wrote, e.g. runs/<run-name>")
    return RunConfig.from_mapping(json.loads(path.read_text(encoding="utf-8")))


def read_metrics(run_dir: Path) -> RunResult | None:
    return RunResult.read(run_dir) if (run_dir / RESULTS_FILE).is_file() else None


def load_members(run_dir: Path, config: RunConfig, grid: SurvivalGrid, last_rounds: int,
                 ) -> tuple[NormalisationStats, list[EnsembleMember]]:
    """The global models of the run's last `last_rounds` rounds and the scaling of its final round."""
    checkpoints = round_checkpoints(run_dir)
    if not checkpoints:
        raise RunNotUsable(f"{run_dir} has no checkpoints/round_NNN.pt; the run did not complete a round")
    members, stats = [], None
    # the response recalibration the coordinator folded into the final model (latest.pt; server/recalibration.py),
    # applied to every round's model, so the ensemble shows the calibrated output the run deploys
    latest = run_dir / "checkpoints" / "latest.pt"
    final_recalibration = _read_checkpoint(latest)[0].get("recalibration") if latest.is_file() else None
    for server_round, path in checkpoints[-last_rounds:]:
        state, weights = _read_checkpoint(path)
        if final_recalibration is not None and state.get("recalibration") is None:
            weights = fold_response_recalibration(weights, *final_recalibration)
        model = model_for(config)
        try:
            model.load_state_dict(weights)
        except RuntimeError as error:
            raise RunNotUsable(f"{path} does not fit this release's model ({error}); use the OncoFed release "
                               f"the run was trained with") from None
        model.eval()
        members.append(EnsembleMember(source=f"{run_dir.name} round {server_round}", model=model))
        stats = NormalisationStats.model_validate(state["normalisation"])
    assert stats is not None
    return stats, members


def load_run(run_dir: str | Path, last_rounds: int = 5, extra_runs: tuple[str | Path, ...] = ()) -> RunBundle:
    """The run's final scaling and an ensemble: its last rounds, plus the final model of each extra run.

    Extra runs must be federations of the same consortium and configuration with another seed (same time
    grid and model size); their scaling must equal this run's, or the encoded inputs would not match.
    """
    if last_rounds < 1:
        raise RunNotUsable("the ensemble needs at least one round (--ensemble-rounds >= 1)")
    run_dir = Path(run_dir).expanduser()
    config = read_config(run_dir)
    grid = SurvivalGrid.from_config(config)
    stats, members = load_members(run_dir, config, grid, last_rounds)
    for extra in extra_runs:
        extra_dir = Path(extra).expanduser()
        extra_config = read_config(extra_dir)
        if (extra_config.survival_interval_days, extra_config.survival_horizon_days, extra_config.hidden_size) != \
                (config.survival_interval_days, config.survival_horizon_days, config.hidden_size):
            raise RunNotUsable(f"{extra_dir} has another time grid or model size than {run_dir}; an ensemble "
                               f"needs runs of the same configuration (only the seed may differ)")
        extra_stats, extra_members = load_members(extra_dir, extra_config, grid, 1)
        if extra_stats.mean != stats.mean or extra_stats.std != stats.std:
            raise RunNotUsable(f"{extra_dir} was harmonised on other data than {run_dir}; ensemble only runs of "
                               f"the same consortium")
        members = extra_members + members
    return RunBundle(run_dir=run_dir, config=config, grid=grid, stats=stats, members=members,
                     metrics=read_metrics(run_dir))
