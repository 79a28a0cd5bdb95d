"""What the coordinator sends with every instruction: the run plan, the round, and the pooled feature scaling.

Both sides import this module, so the keys are written once.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, RecordDict

from shared.config import RunConfig
from shared.harmonisation import NormalisationStats

PLAN_KEY = "config"
NORMALISATION_KEY = "normalisation"
# the site report's headline figures a site sends with its final test figures, each with "-lower"/"-upper"
# (outgoing metric key → key of shared.metrics.SITE_FIGURES)
REPORT_FIGURE_KEYS = {"response-auc": "response_auc", "pfs-cindex": "pfs_harrell_c", "os-cindex": "os_harrell_c"}


def instruction_records(config: RunConfig, stats: NormalisationStats, **extra: str | int | float | bool
                        ) -> dict[str, ConfigRecord]:
    """The records (besides the model's arrays) of a train or evaluate instruction."""
    plan = ConfigRecord({**config.to_flower(), **extra})
    return {PLAN_KEY: plan, NORMALISATION_KEY: ConfigRecord({"stats": stats.model_dump_json()})}


def read_instructions(content: RecordDict) -> tuple[RunConfig, NormalisationStats, int]:
    plan = dict(content[PLAN_KEY])
    server_round = int(plan.pop("server-round", 0))
    plan.pop("split", None)
    stats = NormalisationStats.model_validate_json(str(content[NORMALISATION_KEY]["stats"]))
    return RunConfig.from_mapping(plan), stats, server_round
