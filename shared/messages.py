"""The message schema: every key of what the coordinator sends and what a site replies, in one place.

Both sides import this module, so each key is written once: the records of a message, the run plan and the
instruction-only keys, the figures a site may send (one table), the subgroup and SHAP keys with the one `slug`,
and the patterns client/flower/outbox.py builds its outgoing allow-list from.
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

from flwr.app import ConfigRecord, RecordDict
from pydantic import BaseModel, ConfigDict, Field

from shared.config import RunConfig
from shared.harmonisation import NormalisationStats
from shared.provenance import dictionary_sha256

# ----------------------------------------------------------------------------------------------------------
# The records of a message (keys of Flower's RecordDict)
# ----------------------------------------------------------------------------------------------------------

MODEL_ARRAYS_KEY = "arrays"  # ArrayRecord: the global model (instruction) or the site's trained model (reply)
METRICS_KEY = "metrics"  # MetricRecord: a reply's aggregate figures, checked by client/flower/outbox.py
SITE_KEY = "site"  # ConfigRecord: who replies
SITE_ID_KEY = "site-id"  # in the site record: the site's id
DATA_FINGERPRINT_KEY = "data-fingerprint"  # in a reply's site record: the site's keyed hash of its data (provenance)
PLAN_KEY = "config"  # ConfigRecord: the run plan (RunConfig.to_flower) and the instruction-only keys below
DICTIONARY_KEY = "dictionary-sha256"  # in every plan: the run's data dictionary (client/governance/dictionary_check.py)
NORMALISATION_KEY = "normalisation"  # ConfigRecord: the pooled feature scaling
NORMALISATION_STATS_KEY = "stats"  # in the normalisation record: NormalisationStats as JSON
SERVER_ROUND_KEY = "server-round"  # in the plan: the round this instruction belongs to
SPLIT_KEY = "split"  # in an evaluate plan: "validation" (every round) or "test" (final and validation phases)

# ----------------------------------------------------------------------------------------------------------
# The figures a site sends (one table)
# ----------------------------------------------------------------------------------------------------------

COUNT_KEY = "num-examples"  # patients a reply rests on (the weight of its figures)
RESPONSE_AUC, PFS_CINDEX, OS_CINDEX = "response-auc", "pfs-cindex", "os-cindex"
CINDEX_KEYS = {"pfs": PFS_CINDEX, "os": OS_CINDEX}  # by endpoint (shared.metrics.ENDPOINTS)


class Figure(NamedTuple):
    """A headline figure: its key on the wire, its name in shared.metrics (SITE_FIGURES, SubgroupEvaluation), its
    label. Sent as `key`, with `key-lower`/`key-upper` when it has a bootstrap interval."""

    key: str
    estimate: str
    label: str


FIGURES = (Figure(RESPONSE_AUC, "response_auc", "Response AUC"), Figure(PFS_CINDEX, "pfs_harrell_c", "PFS C-index"),
           Figure(OS_CINDEX, "os_harrell_c", "OS C-index"))
FIGURE_ESTIMATES = {figure.key: figure.estimate for figure in FIGURES}  # wire key → shared.metrics name
INTERVAL_SUFFIXES = ("-lower", "-upper")
LOSS_KEYS = {"train": "train-loss", "validation": "val-loss", "test": "test-loss"}  # by split
PRIVACY_KEYS = ("epsilon", "epsilon-round", "epsilon-budget", "epsilon-phase", "epsilon-phase-budget", "delta",
                "noise-multiplier", "sample-rate", "steps")  # a training reply's privacy accounting (client ledger)
EPSILON_KEY = "epsilon"  # the site's cumulative ε after the round


def interval_keys(key: str) -> tuple[str, str]:
    return key + INTERVAL_SUFFIXES[0], key + INTERVAL_SUFFIXES[1]


def instruction_records(config: RunConfig, stats: NormalisationStats, **extra: str | int | float | bool
                        ) -> dict[str, ConfigRecord]:
    """The records (besides the model's arrays) of a train or evaluate instruction."""
    plan = ConfigRecord({**config.to_flower(), DICTIONARY_KEY: dictionary_sha256(), **extra})
    return {PLAN_KEY: plan, NORMALISATION_KEY: ConfigRecord({NORMALISATION_STATS_KEY: stats.model_dump_json()})}


def read_instructions(content: RecordDict) -> tuple[RunConfig, NormalisationStats, int]:
    plan = dict(content[PLAN_KEY])
    server_round = int(plan.pop(SERVER_ROUND_KEY, 0))
    for key in INSTRUCTION_ONLY_KEYS:
        plan.pop(key, None)
    stats = NormalisationStats.model_validate_json(str(content[NORMALISATION_KEY][NORMALISATION_STATS_KEY]))
    return RunConfig.from_mapping(plan), stats, server_round


# ----------------------------------------------------------------------------------------------------------
# Federated validation: phases of a run, and the keys of the figures sites share about subgroups and SHAP
# ----------------------------------------------------------------------------------------------------------

# instruction-only keys of the plan record (not RunConfig fields); read_instructions drops them
PHASE_KEY = "phase"  # "federated" (the run itself), "local" (a site alone), "loso" (a federation without one site)
PLANNED_ROUNDS_KEY = "planned-training-rounds"  # training rounds of this phase's budget group in this run
VALIDATION_ROUNDS_KEY = "validation-training-rounds"  # the run's validation training rounds (0: none)
SITE_REPORT_KEY = "site-report"  # evaluate: write the site report (only for the final global model)
HELD_OUT_KEY = "held-out-site"  # loso: the site left out of this federation
INTERVALS_KEY = "intervals"  # evaluate: add bootstrap intervals to the headline figures
RECALIBRATION_SLOPE_KEY = "recalibration-a"  # evaluate.recalibration: the current a of p = σ(a·z + b)
RECALIBRATION_INTERCEPT_KEY = "recalibration-b"  # evaluate.recalibration: the current b
INSTRUCTION_ONLY_KEYS = (SPLIT_KEY, DICTIONARY_KEY, PHASE_KEY, PLANNED_ROUNDS_KEY, VALIDATION_ROUNDS_KEY, SITE_REPORT_KEY, HELD_OUT_KEY,
                         INTERVALS_KEY, RECALIBRATION_SLOPE_KEY, RECALIBRATION_INTERCEPT_KEY)
LOCAL_TRAINING = "train.local_only"  # message type: train a local-only model for the run's rounds in one go
# message type: the sums of one Newton step of the response logit's recalibration over the validation split
RECALIBRATION = "evaluate.recalibration"
# what a site sends back for it: the gradient and Hessian of the logistic log-loss in (a, b), summed over its
# validation patients with a known response, and their count (client/training/recalibration.py)
RECALIBRATION_COUNT_KEY = "n-recalibration"
RECALIBRATION_SUM_KEYS = ("recal-gradient-a", "recal-gradient-b", "recal-hessian-aa", "recal-hessian-ab",
                          "recal-hessian-bb")

_SLUG_ALLOWED = re.compile(r"[^a-z0-9_+.<>=-]+")
_GROUP_SLUGS = {"Comorbidity (Charlson)": "comorbidity"}
SLUG = r"[a-z0-9_+.<>=-]+"


def _one_of(names) -> str:
    return "(?:" + "|".join(re.escape(name) for name in names) + ")"


FIGURE_PATTERN = _one_of(FIGURE_ESTIMATES) + _one_of(INTERVAL_SUFFIXES) + "?"  # a headline figure or its bounds
SUBGROUP_COUNT = "n"  # sub:<group>:<level>:n, the subgroup's patients
SUBGROUP_KEY = re.compile(rf"^sub:({SLUG}):({SLUG}):({SUBGROUP_COUNT}|{FIGURE_PATTERN})$")
SHAP_OUTPUT_UNITS = {"response": "probability of response", "pfs": "expected PFS days within the horizon",
                     "os": "expected OS days within the horizon"}
SHAP_COUNT_KEY = "n-shap-explained"  # patients whose SHAP values were averaged (a count: suppressed if small)
SHAP_KEY = re.compile(rf"^shap:({'|'.join(SHAP_OUTPUT_UNITS)}):(\w+)$")

# What client/flower/outbox.py lets leave a site. Counts: 0 (suppressed) or at least the minimum cell size.
# The harmonisation keys are those of shared/harmonisation.py's to_metric_record_dict.
COUNT_PATTERNS = (re.escape(COUNT_KEY), re.escape(SHAP_COUNT_KEY), re.escape(RECALIBRATION_COUNT_KEY),
                  r"n:\w+", r"hist:\w+:\d+", r"cat:\w+:[\w .+-]+", r"site:n_patients",  # harmonisation counts
                  rf"sub:{SLUG}:{SLUG}:{SUBGROUP_COUNT}")  # a subgroup's patients
# Aggregate figures, each guarded by its count (outbox.check_metrics).
FIGURE_PATTERNS = (_one_of(LOSS_KEYS.values()), _one_of(PRIVACY_KEYS), FIGURE_PATTERN,
                   r"(?:sum|sumsq):\w+", r"site:min_cell_size", r"site:grid_version",  # harmonisation sums
                   rf"sub:{SLUG}:{SLUG}:{FIGURE_PATTERN}",  # a subgroup's figures
                   SHAP_KEY.pattern[1:-1],  # mean |SHAP| per contract field over the explained test patients
                   _one_of(RECALIBRATION_SUM_KEYS))  # recalibration sums (validation split)


def slug(text: str) -> str:
    """A subgroup name as it goes over the wire: 'Race/ethnicity' → 'race-ethnicity', '≥ 70' → 'ge70'."""
    text = _GROUP_SLUGS.get(text, text).lower().strip()
    for symbol, word in (("≥", "ge"), ("≤", "le"), ("<", "lt"), (">", "gt"), ("–", "-"), ("—", "-")):
        text = text.replace(symbol, word)
    text = re.sub(r"(ge|le|lt|gt)\s+", r"\1", text)
    text = _SLUG_ALLOWED.sub("-", text.replace("/", "-").replace(" ", "-")).strip("-")
    if not text:
        raise ValueError("a subgroup name must hold at least one letter or digit")
    return text


def subgroup_key(group: str, level: str, figure: str) -> str:
    """`sub:<group-slug>:<level-slug>:<figure>`, e.g. sub:age:ge70:response-auc (read by the model card)."""
    key = f"sub:{slug(group)}:{slug(level)}:{figure}"
    if not SUBGROUP_KEY.match(key):
        raise ValueError(f"{figure!r} is not a subgroup figure; use n or one of {', '.join(FIGURE_ESTIMATES)}"
                         f" (optionally with -lower/-upper)")
    return key


def subgroup_count_key(group_slug: str, level_slug: str) -> str:
    """The key of a subgroup's patient count, from the slugs a received subgroup key carries (SUBGROUP_KEY)."""
    return f"sub:{group_slug}:{level_slug}:{SUBGROUP_COUNT}"


def shap_key(output: str, field: str) -> str:
    key = f"shap:{output}:{field}"
    if not SHAP_KEY.match(key):
        raise ValueError(f"no SHAP key for output {output!r} and field {field!r}")
    return key


class PhaseInstruction(BaseModel):
    """What an instruction asks beyond the run plan: which phase of the run, and how much training it plans."""

    model_config = ConfigDict(frozen=True)

    phase: Literal["federated", "local", "loso"] = "federated"
    planned_rounds: int = Field(default=0, ge=0, description="training rounds of this phase's budget group in the "
                                "run (federated: num-rounds; validation: every validation round); 0: num-rounds")
    validation_rounds: int = Field(default=0, ge=0, description="the run's validation training rounds; 0: none, "
                                   "so the federated rounds may spend the site's whole ε")
    held_out_site: str = ""
    site_report: bool = Field(default=False, description="evaluate: write the site report (final global model)")
    intervals: bool = False

    def label(self) -> str:
        return f"loso-without-{self.held_out_site}" if self.phase == "loso" else self.phase

    def records(self) -> dict[str, str | int | bool]:
        """The instruction-only keys to add to the plan record."""
        return {PHASE_KEY: self.phase, PLANNED_ROUNDS_KEY: self.planned_rounds,
                VALIDATION_ROUNDS_KEY: self.validation_rounds, HELD_OUT_KEY: self.held_out_site,
                SITE_REPORT_KEY: self.site_report, INTERVALS_KEY: self.intervals}


def read_phase(content: RecordDict) -> PhaseInstruction:
    """The phase of an instruction; an instruction without phase keys is the final test of a plain federation
    (split=test writes the site report, as before these keys existed)."""
    plan = content[PLAN_KEY]
    if PHASE_KEY not in plan:
        return PhaseInstruction(site_report=str(plan.get(SPLIT_KEY, "")) == "test")
    return PhaseInstruction(phase=str(plan[PHASE_KEY]), planned_rounds=int(plan.get(PLANNED_ROUNDS_KEY, 0)),
                            validation_rounds=int(plan.get(VALIDATION_ROUNDS_KEY, 0)),
                            held_out_site=str(plan.get(HELD_OUT_KEY, "")),
                            site_report=bool(plan.get(SITE_REPORT_KEY, False)),
                            intervals=bool(plan.get(INTERVALS_KEY, False)))


# ----------------------------------------------------------------------------------------------------------
# Evaluation-only runs (server/evaluation_run.py, client/evaluation/evaluation_only.py): a registered model
# evaluated without training. A site that trained it reports on its held-out test split; any other site is
# external and reports on all of its patients.
# ----------------------------------------------------------------------------------------------------------

EXTERNAL_EVALUATION = "evaluate.external"  # message type: evaluate a registered model, write the site report
EVALUATION_KEY = "evaluation"  # the record that names the registered model and the sites that trained it
TRAINED_ON_KEY = "trained-on"  # comma-separated site ids of the registered model's training sites
MODEL_LABEL_KEY = "model"  # the registered model as the site report names it
COMPLETED_ROUND_KEY = "completed-round"  # federated rounds behind the registered model


def evaluation_record(trained_on: list[str], model_label: str, completed_round: int) -> ConfigRecord:
    for site in trained_on:
        if "," in site:
            raise ValueError(f"site id {site!r} holds a comma; site ids are sent comma-separated")
    return ConfigRecord({TRAINED_ON_KEY: ",".join(sorted(trained_on)), MODEL_LABEL_KEY: model_label,
                         COMPLETED_ROUND_KEY: completed_round})


def read_evaluation(content: RecordDict) -> tuple[frozenset[str], str, int]:
    """(training sites, model label, rounds) of an external-evaluation instruction."""
    if EVALUATION_KEY not in content:
        raise ValueError(f"an {EXTERNAL_EVALUATION} instruction needs its {EVALUATION_KEY!r} record")
    record = content[EVALUATION_KEY]
    sites = frozenset(s for s in str(record[TRAINED_ON_KEY]).split(",") if s)
    return sites, str(record[MODEL_LABEL_KEY]), int(record[COMPLETED_ROUND_KEY])
