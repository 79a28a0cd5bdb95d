"""What an evaluation-only run adds to the messages: the registered model's training sites, and the message type.

Both sides import it. A site that trained the model reports on its held-out test split (its other patients
trained or tuned the model); any other site is external and reports on all of its patients.
"""

from __future__ import annotations

from flwr.app import ConfigRecord, RecordDict

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
