"""An evaluation-only run: a registered model evaluated at the connected sites, with no training round.

A registered model is a global checkpoint that carries its provenance (server/provenance.py): the sites whose
data trained it (their data fingerprints), its app and dictionary hashes, its DP settings. Every connected site
evaluates it on its own patients and writes its site report; a site that trained the model reports on its
held-out test split (internal), any other site on all its patients (external; client/evaluation/evaluation_only.py). The
consortium report sets internal against external performance. No weights are trained, so no ε is spent on them.

Run it with the same ServerApp and the run-config key `evaluate-model` (a run directory or a checkpoint file),
or `oncofed-evaluate` in simulation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp import Grid
from pydantic import BaseModel, ConfigDict, Field

from server.checkpoint import ServerState
from server.evaluation_report import write_evaluation_report
from server.coordinator import collect, wait_for_sites
from server.federation import weighted_means
from server.provenance import ModelProvenance
from server.validation import headline_only
from shared.atomic import write_atomically
from shared.run_result import RESULTS_FILE
from shared.config import ConfigError, RunConfig
from shared.messages import (
    EVALUATION_KEY,
    EXTERNAL_EVALUATION,
    MODEL_ARRAYS_KEY,
    NORMALISATION_KEY,
    PLAN_KEY,
    evaluation_record,
    instruction_records,
)
from shared.model import model_for

Progress = Callable[[str], None]
Figures = dict[str, float]  # one site's figures under the keys of shared/messages.py


class EvaluationResult(BaseModel):
    """An evaluation-only run's metrics.json: written once, read by `oncofed-evaluate` and the report."""

    model_config = ConfigDict(extra="forbid")

    evaluation_only: bool = True
    config: dict = Field(description="the run configuration (RunConfig.to_flower)")
    model: dict = Field(description="the registered model: its path, provenance and training sites (trained_on)")
    internal: dict[str, Figures] = Field(description="training sites' figures on their held-out test splits")
    external: dict[str, Figures] = Field(description="other sites' figures on all their patients")
    internal_mean: Figures
    external_mean: Figures
    missing: dict[str, str] = Field(default_factory=dict, description="sites without figures, and why")
    epsilon_for_weights: float = Field(default=0.0, description="ε spent on the model's weights: none, no training")
    seconds: dict[str, float] = Field(default_factory=dict)

    def write(self, run_dir: Path) -> Path:
        return write_atomically(run_dir / RESULTS_FILE, self.model_dump_json(indent=2))

    @classmethod
    def read(cls, run_dir: Path) -> EvaluationResult:
        return cls.model_validate_json((run_dir / RESULTS_FILE).read_text(encoding="utf-8"))


class RegisteredModel:
    """A checkpoint's weights, the feature scaling it was trained with, and its provenance."""

    def __init__(self, path: Path, state: ServerState, weights: dict[str, torch.Tensor],
                 provenance: ModelProvenance) -> None:
        self.path, self.state, self.weights, self.provenance = path, state, weights, provenance

    @property
    def training_sites(self) -> list[str]:
        """The sites whose data trained the model: those that sent a data fingerprint or spent ε on it."""
        return sorted(set(self.provenance.data_fingerprints) | set(self.provenance.epsilon_by_site))


def checkpoint_path(model: str) -> Path:
    """`model` as a checkpoint file: a run directory means its checkpoints/latest.pt (the recalibrated model)."""
    path = Path(model).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "latest.pt"
    if not path.is_file():
        raise FileNotFoundError(f"evaluate-model: no checkpoint at {path}; give a run directory (its "
                                f"checkpoints/latest.pt is used) or a checkpoint file")
    return path


def load_registered_model(model: str) -> RegisteredModel:
    path = checkpoint_path(model)
    payload = torch.load(path, weights_only=True)
    if "provenance" not in payload:
        raise ValueError(f"evaluate-model: {path} records no provenance (written before provenance was kept); "
                         f"a registered model must say which sites and settings produced it — retrain it")
    state = ServerState.model_validate(json.loads(payload["server_state"]))
    provenance = ModelProvenance.model_validate_json(payload["provenance"])
    return RegisteredModel(path, state, payload["model"], provenance)


def check_architecture(registered: RegisteredModel, config: RunConfig) -> None:
    """The sites rebuild the network from the run configuration: it must be the registered model's."""
    expected = {k: tuple(v.shape) for k, v in model_for(config).state_dict().items()}
    actual = {k: tuple(v.shape) for k, v in registered.weights.items()}
    if expected != actual:
        different = sorted(set(expected.items()) ^ set(actual.items()))[:3]
        raise ConfigError(f"evaluate-model: {registered.path} does not fit the network of this run configuration "
                          f"({', '.join(f'{key}={config.to_flower()[key]}' for key in MODEL_KEYS[:5])}): {different}; "
                          f"run with the configuration the model was trained with (its run's config.json)")


# keys that must equal the training run's: the network's shape, its initial seed, and the splits that decide which
# patients of a training site are its held-out test patients
MODEL_KEYS = ("network", "interaction-rank", "hidden-size", "survival-interval-days", "survival-horizon-days", "seed",
              "validation-fraction", "test-fraction")


def training_configuration(path: Path) -> dict | None:
    """The registered model's run configuration (config.json beside its checkpoints/), None if not kept."""
    config = path.parent.parent / "config.json"
    return json.loads(config.read_text()) if config.is_file() else None


def check_same_splits(registered: RegisteredModel, config: RunConfig) -> None:
    """A training site's test split must be the one held out in training, or 'internal' figures are in-sample."""
    trained = training_configuration(registered.path)
    if trained is None:
        return
    ours = config.to_flower()
    different = [f"{key}={ours[key]} (the model's run: {trained[key]})" for key in MODEL_KEYS
                 if key in trained and trained[key] != ours[key]]
    if different:
        raise ConfigError(f"evaluate-model: this run's {', '.join(different)} differ from the run that trained "
                          f"{registered.path}; use its values ({registered.path.parent.parent / 'config.json'}), "
                          f"or a training site's 'test' patients would include patients that trained the model")


def run_evaluation_only(grid: Grid, config: RunConfig, run_dir: Path, progress: Progress = print
                        ) -> EvaluationResult:
    """Send the registered model to every connected site for evaluation; write metrics.json and the report."""
    started = time.perf_counter()
    registered = load_registered_model(config.evaluate_model)
    check_architecture(registered, config)
    check_same_splits(registered, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_flower(), indent=2))
    trained_on = registered.training_sites
    label = f"registered model {registered.path.name} ({registered.provenance.completed_round} federated rounds)"
    nodes = wait_for_sites(grid, config.min_sites, config.round_timeout_s)
    records = instruction_records(config, registered.state.normalisation)
    arrays = ArrayRecord(registered.weights)
    messages = [Message(RecordDict({MODEL_ARRAYS_KEY: arrays, PLAN_KEY: records[PLAN_KEY],
                                    NORMALISATION_KEY: records[NORMALISATION_KEY],
                                    EVALUATION_KEY: evaluation_record(trained_on, label,
                                                                      registered.provenance.completed_round)}),
                        dst_node_id=node, message_type=EXTERNAL_EVALUATION) for node in nodes]
    names: dict[int, str] = {}
    replies = collect(grid, messages, config.round_timeout_s, names)
    internal = {s: f for s, f in replies.figures.items() if s in trained_on}
    external = {s: f for s, f in replies.figures.items() if s not in trained_on}
    results = EvaluationResult(
        config=config.to_flower(),
        model={"path": str(registered.path), "provenance": registered.provenance.model_dump(),
               "trained_on": trained_on},
        internal=internal, external=external,
        internal_mean=weighted_means(headline_only(internal)), external_mean=weighted_means(headline_only(external)),
        missing=replies.missing, seconds={"evaluation and site reports": time.perf_counter() - started})
    results.write(run_dir)
    try:
        write_evaluation_report(run_dir / "consortium_report.html", results.model_dump())
    except Exception as error:  # the figures are saved; say what failed
        progress(f"consortium report not written: {type(error).__name__}: {error}")
    progress(f"evaluation-only run: {len(internal)} training site(s) on their test splits, {len(external)} "
             f"external site(s) on all their patients ({results.seconds['evaluation and site reports']:.1f} s)"
             + (f" | out: {', '.join(replies.missing)}" if replies.missing else ""))
    return results
