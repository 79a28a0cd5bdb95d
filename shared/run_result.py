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


class RunResult(BaseModel):
    """Everything a run found; each site's figures are those it sent (aggregate, above the minimum cell size)."""

    model_config = ConfigDict(extra="forbid")

    config: dict[str, Any] = Field(description="the run configuration (RunConfig.to_flower)")
    rounds: list[dict[str, Any]] = Field(description="per round: train/validation figures by site, update "
                                                     "distances, validation means, sites out and why, seconds")
    test: dict[str, Figures] = Field(description="each site's final test figures (headline, subgroups, SHAP)")
    test_mean: Figures = Field(default_factory=dict, description="headline test figures weighted by patients")
    test_missing: dict[str, str] = Field(default_factory=dict, description="sites without test figures, and why")
    epsilon: dict[str, float] = Field(default_factory=dict, description="each site's ε after the whole run")
    budget_split: dict[str, Any] | None = None
    recalibration: dict[str, Any] | None = None
    validation: dict[str, Any] | None = Field(default=None, description="local-only figures, the cross-site "
                                              "matrix, leave-one-site-out rows, ε after every phase")
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
