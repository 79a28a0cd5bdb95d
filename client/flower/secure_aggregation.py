"""This site's side of SecAgg+: the model it trained leaves only masked, in Flower's secaggplus_mod.

`secure_aggregation_mod` passes every message through unless the coordinator runs the SecAgg+ protocol for a
training round; then Flower's secaggplus_mod runs it, and the adapter below turns the protocol's legacy fit
records into the Message-API records the site's @app.train handler reads, and the reply back.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord
from flwr.client.mod.secure_aggregation import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from shared.messages import COUNT_KEY, METRICS_KEY, NORMALISATION_KEY, PLAN_KEY, SITE_ID_KEY, SITE_KEY
from shared.messages import MODEL_ARRAYS_KEY as ARRAYS_KEY
from shared.messages import NORMALISATION_STATS_KEY as STATS_KEY
from shared.secure_aggregation import (
    ARRAY_NAMES_KEY,
    FITINS_CONFIG,
    FITINS_PARAMETERS,
    FITRES_METRICS,
    FITRES_NUM_EXAMPLES,
    FITRES_PARAMETERS,
    FITRES_STATUS,
    NORMALISATION_STATS_KEY,
)

def secure_aggregation_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Flower's secaggplus_mod for SecAgg+ training rounds; any other message goes straight to the handler."""
    if message.metadata.message_type != MessageType.TRAIN or RECORD_KEY_CONFIGS not in message.content:
        return call_next(message, context)
    return secaggplus_mod(message, context, lambda m, c: _train_in_fit_layout(m, c, call_next))


def _train_in_fit_layout(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Unpack the legacy fit instruction for the train handler, and pack its reply for masking."""
    plan = dict(message.content[FITINS_CONFIG])
    names = json.loads(str(plan.pop(ARRAY_NAMES_KEY)))
    stats = str(plan.pop(NORMALISATION_STATS_KEY))
    values = [array.numpy() for array in message.content[FITINS_PARAMETERS].values()]
    message.content[ARRAYS_KEY] = ArrayRecord({n: Array(v) for n, v in zip(names, values, strict=True)})
    message.content[PLAN_KEY] = ConfigRecord(plan)
    message.content[NORMALISATION_KEY] = ConfigRecord({STATS_KEY: stats})
    reply = call_next(message, context)
    if reply.has_error():  # the site sits this round out; SecAgg+ recovers the others' sum without it
        raise RuntimeError(f"secure aggregation: the site did not train: {reply.error.reason}")
    trained = [reply.content[ARRAYS_KEY][name].numpy() for name in names]
    if not all(np.all(np.isfinite(v)) for v in trained):  # a masked NaN would corrupt the sum unseen
        raise ValueError("secure aggregation: the trained model holds NaN or infinite values; not sent")
    figures = dict(reply.content[METRICS_KEY])
    examples = int(figures[COUNT_KEY])
    limit = int(plan["secure-aggregation-max-weight"])
    if examples > limit:
        raise ValueError(f"secure aggregation: {examples} training patients exceed "
                         f"secure-aggregation-max-weight={limit}; raise it in the run configuration")
    site_id = str(reply.content[SITE_KEY][SITE_ID_KEY])
    del reply.content[ARRAYS_KEY], reply.content[METRICS_KEY], reply.content[SITE_KEY]
    reply.content[FITRES_PARAMETERS] = ArrayRecord(trained)  # masked and cleared by secaggplus_mod
    reply.content[FITRES_NUM_EXAMPLES] = MetricRecord({"num_examples": examples})
    reply.content[FITRES_METRICS] = ConfigRecord({**figures, SITE_ID_KEY: site_id})
    reply.content[FITRES_STATUS] = ConfigRecord({"code": 0, "message": "Success"})
    return reply
