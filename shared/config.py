"""The run configuration: one typed place for every knob of a federated run.

Its source is `[tool.flwr.app.config]` in pyproject.toml (hyphenated keys, as Flower passes them),
overridden by the project's own command. Validation happens before any work starts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Strategy = Literal["fedavg", "fedprox", "fedadam", "fedyogi"]
Aggregation = Literal["mean", "trimmed-mean", "median"]
SiteRecalibration = Literal["none", "intercept", "platt"]
SitePersonalisation = Literal["none", "response-head", "response-intercept"]
Network = Literal["wide-deep", "wide"]
LocalOptimizer = Literal["adam", "sgd"]


def _hyphenate(name: str) -> str:
    return name.replace("_", "-")


class ConfigError(ValueError):
    """A configuration that cannot run, with the field and what is allowed."""


class RunConfig(BaseModel):
    """Everything the coordinator needs to run a federation; sites receive their part in each message."""

    model_config = ConfigDict(alias_generator=_hyphenate, populate_by_name=True, extra="forbid",
                              frozen=True)
    # the validation phases the main job (oncofed-simulate) runs unless told not to (--no-cross-site, --no-loso):
    # it answers the consortium's questions by default; a plain federation (flwr run, the library) runs none
    MAIN_JOB_PHASES: ClassVar[dict[str, bool]] = {"share-local-models": True, "leave-one-site-out": True}

    # federation
    num_rounds: int = Field(default=20, ge=1, le=1000)
    strategy: Strategy = "fedavg"
    proximal_mu: float = Field(default=0.01, ge=0, description="FedProx proximal weight")
    server_learning_rate: float = Field(default=0.01, gt=0, description="FedAdam/FedYogi eta")
    server_tau: float = Field(default=1e-3, gt=0, description="FedAdam/FedYogi adaptivity")
    min_sites: int = Field(default=2, ge=1, description="fewest sites a round may proceed with")
    # aggregation defences (docs/aggregation.md)
    aggregation: Aggregation = Field(default="mean", description="mean (weighted), trimmed-mean or median "
                                     "(coordinate-wise, unweighted) of the sites' models")
    trim_fraction: float = Field(default=0.25, ge=0, lt=0.5, description="trimmed-mean: share cut from each tail")
    update_norm_ratio: float = Field(default=5.0, ge=0, description="reject an update farther from the global "
                                     "model than this × the round's median distance (≥3 updates; 0 = off)")
    update_clip_norm: float = Field(default=0.0, ge=0, description="server-side L2 bound on each site's update "
                                    "(0 = off)")
    central_dp_noise_multiplier: float = Field(default=0.0, ge=0, description="Gaussian noise on the aggregate, "
                                               "× update-clip-norm / min-sites (0 = off)")
    secure_aggregation: bool = Field(default=False, description="SecAgg+: the coordinator sees only the sum of "
                                     "the sites' weighted models")
    secure_aggregation_max_weight: int = Field(default=10_000, ge=1, description="SecAgg+: the most training "
                                               "patients a site may weigh in with (larger = coarser quantisation)")
    round_timeout_s: float = Field(default=600.0, gt=0)
    # local training
    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=256, ge=2, description="expected Poisson batch size")
    learning_rate: float = Field(default=0.03, gt=0)
    local_optimizer: LocalOptimizer = Field(default="adam", description="the sites' optimiser: 'adam' (a fresh "
                                            "one per round) or 'sgd' (plain steps, no state to restart)")
    weight_decay: float = Field(default=0.0, ge=0, description="L2 penalty on the weight matrices (a ridge "
                                "penalty; not biases, norms or the survival baselines); data-independent under DP")
    modality_dropout: float = Field(default=0.15, ge=0, lt=1,
                                    description="chance of hiding a present non-clinical modality in training")
    # differential privacy (per site; the unit of privacy is one patient record at one site)
    dp: bool = True
    target_epsilon: float = Field(default=3.0, gt=0, description="each site's (ε, δ) for the whole run")
    target_delta: float = Field(default=0.0, ge=0, lt=1, description="0: 0.1 / n_train, well below 1/n")
    max_grad_norm: float = Field(default=1.0, gt=0, description="per-sample clipping bound")
    validation_epsilon_share: float = Field(default=0.2, gt=0, lt=1, description="share of each site's ε the "
                                            "validation phases (local-only, cross-site, leave-one-site-out) may "
                                            "spend; the deployed federated model gets the rest (all of it when no "
                                            "validation phase trains)")
    secure_mode: bool = Field(default=False, description="Opacus cryptographically secure noise")
    release_epsilon_share: float = Field(default=0.0, ge=0, lt=1, description="share of each site's ε spent on "
                                         "Gaussian noise over its harmonisation statistics and test figures "
                                         "(client/governance/release_privacy.py); 0 = those are protected by the "
                                         "minimum cell size only")
    # confounding by indication (client/training/propensity.py): a federated propensity model, then inverse-probability
    # weights in the outcome loss; each weight depends on one patient and the released propensity model only
    propensity_weighting: bool = Field(default=False, description="train a federated DP propensity model first "
                                       "and weight each patient's outcome loss by its bounded inverse probability")
    propensity_rounds: int = Field(default=3, ge=1, le=100, description="federated rounds of the propensity model")
    propensity_epsilon_share: float = Field(default=0.1, gt=0, lt=1, description="share of each site's ε the "
                                            "propensity model spends; the outcome model gets the rest")
    propensity_learning_rate: float = Field(default=0.05, gt=0)
    propensity_weight_bound: float = Field(default=10.0, ge=1, description="largest inverse-probability weight")
    # recalibration of the response output after the last federated round (server/recalibration.py)
    recalibrate_response: bool = Field(default=True, description="fit p = σ(a·logit + b) on the sites' validation "
                                       "splits (aggregate sums only, no ε) and fold it into the response head")
    recalibration_iterations: int = Field(default=6, ge=1, le=50, description="Newton iterations of the "
                                          "recalibration, one exchange with the sites each")
    # each site's own refits after the consortium's model is final, for the site's test figures and report
    # beside the consortium model's; what a site fits stays at the site: its recalibration of the response output
    # on its validation split (client/training/recalibration.py) and its refit of the response head (or its
    # intercept) on its training split (client/training/personalise.py)
    site_recalibration: SiteRecalibration = Field(default="none", description="'intercept' (b only) or 'platt' "
                                                  "(a and b, shrunk by site-recalibration-ridge)")
    site_recalibration_ridge: float = Field(default=10.0, ge=0, description="platt: ridge of the site's (a, b) "
                                            "towards the consortium's fit (0 = the site's own fit alone)")
    site_personalisation: SitePersonalisation = Field(default="none", description="'response-head' (the "
                                                      "whole head) or 'response-intercept' (its intercept only)")
    site_personalisation_ridge: float = Field(default=0.3, ge=0, description="L2 pull of the site's refitted "
                                              "response head towards the consortium's, per training patient")
    # model and time grid
    network: Network = Field(default="wide-deep", description="'wide-deep' (shared/model.py) or 'wide': the linear "
                             "path and the interactions only, for data sets too small for depth")
    interaction_rank: int = Field(default=2, ge=0, le=16, description="regimen × patient interaction products (0: "
                                  "none, e.g. where every patient had the same treatment)")
    hidden_size: int = Field(default=16, ge=8, le=1024)
    survival_interval_days: int = Field(default=90, ge=7)
    survival_horizon_days: int = Field(default=1825, ge=30)
    # data, privacy of outputs, reproducibility
    data_dir: str = Field(default="", description="simulation only: folder of site folders; '' = default cohort")
    min_cell_size: int = Field(default=10, ge=1)
    bootstrap_samples: int = Field(default=100, ge=20,
                                   description="bootstrap resamples per interval in each site's final report")
    site_reports: bool = Field(default=True, description="each site writes its report at the final test evaluation "
                                                         "(benchmarks that only need the figures turn it off)")
    shap_patients: int = Field(default=100, ge=0, le=5000,
                               description="test patients each site explains with SHAP in its final report; 0 = none")
    shap_samples: int = Field(default=50, ge=10, description="expected-gradients samples per explained patient")
    # federated validation beyond the final test evaluation (each one spends the sites' privacy budgets)
    share_local_models: bool = Field(default=False, description="each site trains a local-only model and shares "
                                     "it for the cross-site matrix (a consortium decision)")
    local_references: bool = Field(default=False, description="each site trains a local-only model and reports "
                                   "its own test figures; the model stays at the site unless share-local-models")
    leave_one_site_out: bool = Field(default=False, description="one extra federation per site, without it, "
                                     "evaluated on its test patients")
    # every LOSO round spends each site's ε, and six sites mean six extra federations: two rounds keep the cost
    # and the privacy spend moderate
    loso_rounds: int = Field(default=2, ge=0, le=1000, description="rounds of each leave-one-site-out federation; "
                             "0 = num-rounds")
    validation_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0, lt=0.5)
    seed: int = 42
    # outputs
    output_dir: str = "runs"
    run_name: str = Field(default="", description="'' = a timestamped name")
    resume_from: str = Field(default="", description="a run directory to continue from its last checkpoint")
    # evaluation-only runs (server/evaluation_run.py): no training round, no ε spent on weights
    evaluate_model: str = Field(default="", description="a registered model (a run directory or its checkpoint "
                                ".pt, with provenance) that the connected sites evaluate without training; '' = train")

    @model_validator(mode="after")
    def _coherent(self) -> RunConfig:
        if self.survival_horizon_days <= self.survival_interval_days:
            raise ValueError("survival-horizon-days must exceed survival-interval-days")
        if self.validation_fraction + self.test_fraction >= 0.8:
            raise ValueError("validation-fraction + test-fraction must leave at least 20% for training")
        if self.central_dp_noise_multiplier > 0 and self.update_clip_norm == 0:
            raise ValueError("central-dp-noise-multiplier needs update-clip-norm > 0: the noise is calibrated "
                             "to the clipping bound")
        if self.central_dp_noise_multiplier > 0 and self.aggregation != "mean":
            raise ValueError(f"central-dp-noise-multiplier needs aggregation=mean: the clip norm bounds what one "
                             f"site changes in a (weighted) mean, not in a coordinate-wise {self.aggregation}, so no "
                             f"central ε could be stated (server/central_privacy.py)")
        if self.release_epsilon_share > 0:
            self._check_release_privacy()
        if self.evaluate_model and self.resume_from:
            raise ValueError("evaluate-model and resume-from exclude each other: an evaluation-only run trains "
                             "nothing to resume; leave one of them empty")
        if self.secure_aggregation:
            self._check_secure_aggregation()
            if self.propensity_weighting:
                raise ValueError("propensity-weighting needs secure-aggregation=false: the propensity model's "
                                 "federation averages the sites' models in the clear")
        return self

    def _check_release_privacy(self) -> None:
        """Under release DP only the harmonisation statistics and the final test figures leave a site besides the
        model; a phase that would send other figures cannot run beside it (its figures are not noised)."""
        if self.evaluate_model:
            return  # an evaluation-only run releases its figures only
        if not self.dp:
            raise ValueError("release-epsilon-share needs dp=true: one ε per site covering every release means the "
                             "model's training is DP too")
        others = [key for key, on in (("recalibrate-response", self.recalibrate_response),
                                      ("local-references", self.local_references),
                                      ("share-local-models", self.share_local_models),
                                      ("leave-one-site-out", self.leave_one_site_out),
                                      ("propensity-weighting", self.propensity_weighting)) if on]
        if others:
            raise ValueError(f"release-epsilon-share > 0 cannot run with {', '.join(others)}: those phases send "
                             f"figures (sums, local models' figures) that are not released under DP; set them to "
                             f"false, or release-epsilon-share=0")
        if self.release_epsilon_share + self.validation_epsilon_share >= 1:
            raise ValueError("release-epsilon-share + validation-epsilon-share must leave the federated model a "
                             "share of ε (their sum must be below 1)")

    def _check_secure_aggregation(self) -> None:
        """SecAgg+ hides each site's model, so nothing that needs one site's model can run with it."""
        hidden = "SecAgg+ hides each site's model from the coordinator"
        if self.strategy not in ("fedavg", "fedprox"):
            raise ValueError(f"secure-aggregation works with strategy fedavg or fedprox, not {self.strategy}: the "
                             f"server optimiser of FedAdam/FedYogi is not wired to the secure sum")
        if self.aggregation != "mean":
            raise ValueError(f"secure-aggregation needs aggregation=mean: a {self.aggregation} needs each site's "
                             f"model and {hidden}")
        if self.update_norm_ratio > 0:
            raise ValueError(f"secure-aggregation needs update-norm-ratio=0: the update-size screen needs each "
                             f"site's update and {hidden}")
        if self.update_clip_norm > 0 or self.central_dp_noise_multiplier > 0:
            raise ValueError(f"secure-aggregation needs update-clip-norm=0 and central-dp-noise-multiplier=0: "
                             f"server-side clipping needs each site's update and {hidden}")
        if self.min_sites < 2:
            raise ValueError("secure-aggregation needs min-sites >= 2: a sum of one site is that site's model")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from Flower's run_config (hyphenated keys) or keyword overrides; say what is wrong."""
        try:
            return cls.model_validate(dict(values))
        except ValidationError as error:
            raise ConfigError(format_validation_error(error, "run configuration")) from None

    def to_flower(self) -> dict[str, bool | int | float | str]:
        """Hyphenated scalar values, the shape of `[tool.flwr.app.config]` and of a ConfigRecord."""
        return self.model_dump(by_alias=True)


def format_validation_error(error: ValidationError, what: str) -> str:
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "(whole)"
        allowed = item.get("ctx", {}).get("expected")
        hint = f" (allowed: {allowed})" if allowed and str(allowed) not in item["msg"] else ""
        value = item.get("input")
        shown = "" if isinstance(value, dict) else f", got {value!r}"
        lines.append(f"'{field}': {item['msg'].removeprefix('Value error, ')}{hint}{shown}")
    return f"invalid {what}:\n  " + "\n  ".join(lines)


def run_directory(config: RunConfig, run_id: int) -> Path:
    """Where a run writes: the resumed run's folder, or output-dir/run-name (default: the Flower run id)."""
    if config.resume_from:
        return Path(config.resume_from).expanduser()
    return Path(config.output_dir).expanduser() / (config.run_name or f"run-{run_id}")


DEFAULT_COHORT_DIR = Path("~/.oncofed/default-cohort")


def cohort_directory(config: RunConfig) -> Path:
    """Simulation only: the folder of simulated site folders (default: the embedded default cohort)."""
    return Path(config.data_dir or DEFAULT_COHORT_DIR).expanduser()
