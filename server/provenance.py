"""A model's provenance: which app, configuration, data dictionary and site data produced it, under what privacy.

Recorded in every checkpoint (the round's ε per site and validation figures) and in metrics.json (the final test
figures); `oncofed-model-card` prints it. The sites' data fingerprints are the keyed hashes each site computed of
its own export (client/data/fingerprint.py) and sent with its feature statistics; no data is needed to read them.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from shared.config import RunConfig
from shared.provenance import canonical_sha256, dictionary_sha256, running_app_hash
from shared.run_result import RoundRecord

# configuration keys that place a run's files but do not change the model
_PLACEMENT_KEYS = ("output-dir", "run-name", "resume-from", "data-dir", "round-timeout-s")
_STRATEGY_KEYS = re.compile(r"^(num-rounds|strategy|proximal-mu|server-.*|min-sites|aggregation|trim-fraction|"
                            r"update-.*|secure-aggregation.*|local-epochs|batch-size|learning-rate|local-optimizer|"
                            r"weight-decay|modality-dropout|network|interaction-rank|hidden-size|seed)$")
_PRIVACY_KEYS = re.compile(r"^(dp|.*epsilon.*|.*delta.*|max-grad-norm|central-dp-.*|secure-mode|min-cell-size)$")


class RunProvenance(BaseModel):
    """What a run was, fixed at its start."""

    app_sha256: str | None = Field(description="FAB hash of the coordinator's running app (= what `flwr run` "
                                               "submitted; `oncofed-app-hash <folder>` recomputes it)")
    resumed_with_app_sha256: list[str] = Field(default_factory=list,
                                               description="other app hashes the run was resumed with")
    config_sha256: str = Field(description="hash of the run configuration (file placement keys left out)")
    dictionary_sha256: str = Field(description="hash of the data dictionary (contract columns, kinds, codes)")
    data_fingerprints: dict[str, str] = Field(description="site → keyed hash of its data, computed at the site")
    strategy: dict[str, bool | int | float | str]
    privacy: dict[str, bool | int | float | str]


class ModelProvenance(RunProvenance):
    """A model of the run: the run's provenance and what the model had spent and scored when it was saved."""

    completed_round: int
    epsilon_by_site: dict[str, float] = Field(default_factory=dict,
                                              description="each site's cumulative ε as it reported after training")
    validation: dict[str, float] = Field(default_factory=dict,
                                         description="weighted mean of the sites' figures (validation split for "
                                                     "a round's checkpoint, test split for the final model)")
    validation_split: str = "validation"


def run_provenance(config: RunConfig, data_fingerprints: dict[str, str]) -> RunProvenance:
    settings = config.to_flower()
    model_settings = {k: v for k, v in settings.items() if k not in _PLACEMENT_KEYS}
    return RunProvenance(app_sha256=running_app_hash(), config_sha256=canonical_sha256(model_settings),
                         dictionary_sha256=dictionary_sha256(),
                         data_fingerprints=dict(sorted(data_fingerprints.items())),
                         strategy={k: v for k, v in settings.items() if _STRATEGY_KEYS.match(k)},
                         privacy={k: v for k, v in settings.items() if _PRIVACY_KEYS.match(k)})


def resumed(run: RunProvenance) -> RunProvenance:
    """The run's provenance after a resume: a different running app is recorded beside the original one."""
    now = running_app_hash()
    if now is None or now == run.app_sha256 or now in run.resumed_with_app_sha256:
        return run
    return run.model_copy(update={"resumed_with_app_sha256": [*run.resumed_with_app_sha256, now]})


def epsilon_so_far(history: list[RoundRecord]) -> dict[str, float]:
    """Each site's latest cumulative ε over the rounds recorded so far."""
    spent: dict[str, float] = {}
    for record in history:
        spent |= {site: float(f["epsilon"]) for site, f in record.train.items() if "epsilon" in f}
    return spent


def checkpoint_provenance(run: RunProvenance, completed_round: int, history: list[RoundRecord]) -> ModelProvenance:
    """A round's checkpoint: the run's provenance, ε per site so far and the round's validation figures."""
    return ModelProvenance(**run.model_dump(), completed_round=completed_round, epsilon_by_site=epsilon_so_far(history),
                           validation=dict(history[-1].validation_mean) if history else {})


def final_provenance(run: RunProvenance, completed_round: int, epsilon: dict[str, float],
                     test_mean: dict[str, float]) -> ModelProvenance:
    """The final model: ε per site over every phase of the run, and its test figures."""
    return ModelProvenance(**run.model_dump(), completed_round=completed_round, epsilon_by_site=dict(epsilon),
                           validation=dict(test_mean), validation_split="test")
