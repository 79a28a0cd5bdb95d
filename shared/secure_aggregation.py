"""How a training instruction travels inside Flower's SecAgg+ protocol, which speaks the legacy fit layout.

Flower 1.41's SecAgg+ (SecAggPlusWorkflow + secaggplus_mod) carries the model as an unnamed, ordered list
("fitins.parameters") and the instruction as one scalar ConfigRecord ("fitins.config"); the project's
Message-API records are packed into and out of that layout with these keys on both sides.
"""

from __future__ import annotations

FITINS_PARAMETERS, FITINS_CONFIG = "fitins.parameters", "fitins.config"
FITRES_PARAMETERS, FITRES_NUM_EXAMPLES = "fitres.parameters", "fitres.num_examples"
FITRES_METRICS, FITRES_STATUS = "fitres.metrics", "fitres.status"
ARRAY_NAMES_KEY = "array-names"  # JSON list: the names of the ordered arrays
NORMALISATION_STATS_KEY = "normalisation-stats"  # JSON: the pooled feature scaling
