"""A run's results, as metrics.json holds them: one typed model, written once by the coordinator, read by everyone.

The coordinator (server/federation.py) builds it at the end of a run, with any reference rows an experiment adds
(simulations/references.py, through the ServerApp), and writes it once. The main job, the consortium report, the
model card and the tumour board read it with `RunResult.read`; nothing reads it back to rewrite it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.atomic import write_atomically

RESULTS_FILE = "metrics.json"
Figures = dict[str, float]  # one site's figures under the keys of shared/messages.py


class RoundRecord(BaseModel):
    """One federated round as the coordinator recorded it (also the checkpoint's history)."""

    model_config = ConfigDict(extra="forbid")

    round: int
    train: dict[str, Figures] = Field(description="each accepted site's training figures (ε, loss, counts)")
    validation: dict[str, Figures] = Field(default_factory=dict, description="each site's validation figures "
                                           "(empty when only the final test figures are released)")
    update_distance: dict[str, float] = Field(default_factory=dict, description="each screened update's distance "
                                              "from the round's global model")
    validation_mean: Figures = Field(default_factory=dict, description="validation figures weighted by patients")
    missing: dict[str, str] = Field(default_factory=dict, description="sites out of the round, and why")
    seconds: dict[str, float] = Field(default_factory=dict, description="train, aggregate and evaluate")


class LocalModels(BaseModel):
    """The local-only phase: each site's model trained on its data alone, tested on its own test patients."""

    model_config = ConfigDict(extra="forbid")

    figures: dict[str, Figures]
    missing: dict[str, str] = Field(default_factory=dict)
    shared_models: list[str] = Field(default_factory=list, description="sites whose model entered the cross-site "
                                     "matrix (share-local-models)")


class LeaveOneSiteOutRow(BaseModel):
    """One leave-one-site-out federation: trained without `held_out_site`, tested there."""

    model_config = ConfigDict(extra="forbid")

    held_out_site: str
    trained_on: list[str]
    rounds: int = Field(description="rounds completed (0: too few sites were usable)")
    missing: dict[str, str] = Field(default_factory=dict)
    epsilon: dict[str, float] = Field(default_factory=dict, description="each training site's ε after it")
    held_out: Figures | None = Field(default=None, description="the held-out site's test figures")
    in_distribution: dict[str, Figures] | None = Field(default=None, description="the training sites' own test "
                                                       "figures of the same model")


class ValidationResult(BaseModel):
    """The federated-validation phases after the run (server/validation.py)."""

    model_config = ConfigDict(extra="forbid")

    planned_training_rounds: int
    budget_split: dict[str, Any]
    local: LocalModels | None = None
    cross_site: dict[str, dict[str, Figures]] | None = Field(default=None, description="{model: {test site: "
                                                             "figures}}, the global model first")
    leave_one_site_out: list[LeaveOneSiteOutRow] | None = None
    epsilon: dict[str, float] = Field(default_factory=dict, description="each site's ε after every phase")


class RunResult(BaseModel):
    """Everything a run found; each site's figures are those it sent (aggregate, above the minimum cell size)."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(description="the run configuration (RunConfig.to_flower)")
    rounds: list[RoundRecord]
    test: dict[str, Figures] = Field(description="each site's final test figures (headline, subgroups, SHAP)")
    test_mean: Figures = Field(default_factory=dict, description="headline test figures weighted by patients")
    test_missing: dict[str, str] = Field(default_factory=dict, description="sites without test figures, and why")
    epsilon: dict[str, float] = Field(default_factory=dict, description="each site's ε after the whole run")
    budget_split: dict[str, Any] | None = None
    recalibration: dict[str, Any] | None = None
    validation: ValidationResult | None = None
    started_at: float | None = None
    seconds: dict[str, float] = Field(default_factory=dict, description="where the run's time went, by phase")
    provenance: dict[str, Any] | None = None
    central_dp: dict[str, Any] | None = Field(default=None, description="central DP's site-level ε with the patient "
                                              "weighting (server/central_privacy.py); absent without central noise")
    references: dict[str, dict[str, Figures]] | None = Field(default=None, description="simulation only: "
                                                             "pooled centralised and oracle figures by site")

    def write(self, run_dir: Path) -> Path:
        """metrics.json, all or nothing; fields a run did not produce are left out, not written as null."""
        return write_atomically(run_dir / RESULTS_FILE, json.dumps(self.model_dump(exclude_none=True), indent=2))

    @classmethod
    def read(cls, run_dir: Path) -> RunResult:
        path = run_dir / RESULTS_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist: the run has not finished (or this is not a run folder)")
        return cls.model_validate_json(path.read_text(encoding="utf-8"))
