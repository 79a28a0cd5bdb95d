"""Named seeds: every random stream of a run derives from the run's seed by one rule, so no two streams share a seed.

A round's training seed is `run seed × RUN_STRIDE + round × ROUND_STRIDE + site slot (+ phase slot × PHASE_STRIDE)`.
The strides are primes chosen so that, for the rounds and sites a run has, the terms do not overlap: a site slot
(< SITE_SLOTS) stays below one round's stride, and a run's rounds stay below one run's stride. The values are the
ones every released figure was made with; changing one changes every figure.
"""

from __future__ import annotations

import zlib

RUN_STRIDE = 100_003  # between two run seeds
ROUND_STRIDE = 101  # between two rounds of one run
SITE_SLOTS = 97  # a site's slot: a hash of its id modulo this prime (< ROUND_STRIDE)
PHASE_STRIDE = 7919  # between two validation phases (local-only, each leave-one-site-out federation)
PROPENSITY_SLOT = 7  # the propensity model's slot in a round (one stream per round, shared by the sites)


def name_slot(name: str, slots: int) -> int:
    """A stable slot for a name (a site, a phase): CRC-32 of its UTF-8 bytes modulo `slots`."""
    return zlib.crc32(name.encode()) % slots


def round_seed(run_seed: int, server_round: int, slot: int = 0) -> int:
    return run_seed * RUN_STRIDE + server_round * ROUND_STRIDE + slot


def local_training_seed(run_seed: int, server_round: int, site_id: str, phase: str = "federated",
                        held_out_site: str = "") -> int:
    """The seed of one site's local training in one round of one phase (the federation's phase has slot 0)."""
    phase_slot = 0 if phase == "federated" else name_slot(f"{phase}:{held_out_site}", RUN_STRIDE)
    return round_seed(run_seed, server_round, name_slot(site_id, SITE_SLOTS)) + phase_slot * PHASE_STRIDE


def propensity_seed(run_seed: int, server_round: int) -> int:
    return round_seed(run_seed, server_round, PROPENSITY_SLOT)
