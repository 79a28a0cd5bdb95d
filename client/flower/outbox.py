"""The one place that builds every message a site sends, and refuses anything that could identify a patient.

What may leave: the model's parameters, counts at or above the minimum cell size, aggregate metrics,
privacy figures, the site's id, and aggregate feature statistics. Every value is a scalar (a list could
carry per-patient values) and every key is on the allow-list below. tests/client/test_outbox.py runs a
federation and checks what actually went over the wire.
"""

from __future__ import annotations

import logging
import math
import re

from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from shared.config import ConfigError
from shared.messages import (
    COUNT_PATTERNS,
    DATA_FINGERPRINT_KEY,
    FIGURE_PATTERNS,
    METRICS_KEY,
    MODEL_ARRAYS_KEY,
    RECALIBRATION_COUNT_KEY,
    RECALIBRATION_SUM_KEYS,
    SHAP_COUNT_KEY,
    SHAP_KEY,
    SITE_ID_KEY,
    SITE_KEY,
    SUBGROUP_KEY,
    subgroup_count_key,
)

# the allow-list, built from the message schema (shared/messages.py): counts, and aggregate figures
COUNT_KEYS = re.compile("^(?:" + "|".join(COUNT_PATTERNS) + ")$")
FIGURE_KEYS = re.compile("^(?:" + "|".join(FIGURE_PATTERNS) + ")$")

logger = logging.getLogger(__name__)
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
ERROR_BUDGET_EXHAUSTED = 4001
ERROR_DATA = 4002
ERROR_SITE_FAILED = 4003
ERROR_CONFIG = 4004
ERROR_AUDIT = 4005  # the site's audit log cannot be written: it runs and sends nothing (client/governance/audit.py)
ERROR_APP_NOT_APPROVED = 4006  # the submitted app is not on the site's approved list (client/governance/approval.py)


class DisclosureError(RuntimeError):
    """A site tried to send something that is not an allowed aggregate; nothing was sent."""


def check_metrics(metrics: dict[str, float], min_cell_size: int) -> MetricRecord:
    for key, value in metrics.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise DisclosureError(f"metric {key!r} is a {type(value).__name__}; only scalars may leave a site")
        if not math.isfinite(float(value)):
            raise DisclosureError(f"metric {key!r} is {value}; only finite figures may leave a site")
        if COUNT_KEYS.match(key):
            if 0 < value < min_cell_size:
                raise DisclosureError(f"count {key!r}={value} is below the minimum cell size {min_cell_size}; "
                                      f"suppress it before sending")
        elif not FIGURE_KEYS.match(key):
            raise DisclosureError(f"metric {key!r} is not on the outgoing allow-list (client/flower/outbox.py)")
        elif key.startswith(("sum:", "sumsq:")) and value != 0:
            count = metrics.get("n:" + key.split(":", 1)[1], 0)
            if count < min_cell_size:
                raise DisclosureError(f"{key!r} rests on {count} patients, below the minimum cell size "
                                      f"{min_cell_size}; suppress it before sending")
        elif (subgroup := SUBGROUP_KEY.match(key)) is not None:
            count = metrics.get(subgroup_count_key(subgroup.group(1), subgroup.group(2)), 0)
            if count < min_cell_size:
                raise DisclosureError(f"{key!r} rests on a subgroup of {count} patients (its :n key), below the "
                                      f"minimum cell size {min_cell_size}; send nothing for a suppressed subgroup")
        elif key in RECALIBRATION_SUM_KEYS and metrics.get(RECALIBRATION_COUNT_KEY, 0) < min_cell_size:
            raise DisclosureError(f"{key!r} sums over {metrics.get(RECALIBRATION_COUNT_KEY, 0)} patients "
                                  f"({RECALIBRATION_COUNT_KEY}), below the minimum cell size {min_cell_size}; "
                                  f"do not send it")
        elif SHAP_KEY.match(key) and metrics.get(SHAP_COUNT_KEY, 0) < min_cell_size:
            raise DisclosureError(f"{key!r} averages {metrics.get(SHAP_COUNT_KEY, 0)} patients ({SHAP_COUNT_KEY}), "
                                  f"below the minimum cell size {min_cell_size}; do not send it")
    return MetricRecord(dict(metrics))


def reply(to: Message, *, site_id: str, metrics: dict[str, float], min_cell_size: int,
          arrays: ArrayRecord | None = None, expected_arrays: dict[str, tuple[int, ...]] | None = None,
          data_fingerprint: str | None = None) -> Message:
    """A site's reply: model parameters (if any), aggregate metrics, its site id and (feature summary) the keyed
    hash of its data (client/data/fingerprint.py) — nothing else."""
    site = {SITE_ID_KEY: site_id}
    if data_fingerprint is not None:
        if not FINGERPRINT.match(data_fingerprint):
            raise DisclosureError("a data fingerprint must be 64 hex digits (an HMAC-SHA256); nothing else may be "
                                  "sent in its place")
        site[DATA_FINGERPRINT_KEY] = data_fingerprint
    content = RecordDict({METRICS_KEY: check_metrics(metrics, min_cell_size), SITE_KEY: ConfigRecord(site)})
    if arrays is not None:
        if expected_arrays is None:
            raise DisclosureError("model arrays can only be sent with the model's expected names and shapes")
        shapes = {name: tuple(array.shape) for name, array in arrays.items()}
        if shapes != expected_arrays:
            unexpected = sorted(set(shapes.items()) ^ set(expected_arrays.items()))[:3]
            raise DisclosureError(f"outgoing arrays do not match the model's parameters: {unexpected}")
        content[MODEL_ARRAYS_KEY] = arrays
    return Message(content=content, reply_to=to)


def refusal(to: Message, code: int, reason: str) -> Message:
    """Tell the coordinator why this site sits out (e.g. its privacy budget is spent)."""
    return Message(Error(code=code, reason=reason), reply_to=to)


def contain_failures(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """A Flower mod, innermost: no exception's text leaves the site.

    Flower would send an exception's text to the coordinator as the error's reason, bypassing this module;
    such text can quote a patient's value (a data error, a library's message). The site logs it in full and
    the coordinator learns only that the step failed. A configuration error quotes only the coordinator's
    own settings and is passed on, so the coordinator can fix them.
    """
    try:
        return call_next(message, context)
    except ConfigError as error:
        return refusal(message, ERROR_CONFIG, f"the run configuration cannot run at this site: {error}")
    except Exception:  # noqa: BLE001 - every failure must become a refusal that carries no data
        logger.exception("the site failed on a %s message; the coordinator is told only that it failed",
                         message.metadata.message_type)
        return refusal(message, ERROR_SITE_FAILED, "the site could not complete this step; the reason is in the "
                                                   "site's own log (not sent: it may quote patient data)")
