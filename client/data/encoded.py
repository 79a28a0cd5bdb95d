"""A site's encoded splits, kept for the life of the ClientApp process.

Flower's simulation engine runs every message of a simulated site in the same few Ray worker processes, and each
training and validation message encoded its split again: pandas work that took about a third of a site's time
per round. The memo is keyed by everything that decides the tensors: the site's table (`Site.table_key`, the
export's identity and the split settings), the split, the pooled feature scaling and the survival grid, so new
scaling or an edited export gives a new entry, never a stale one. A site without a table key (one read through its
site.toml: deployed, each message runs in a fresh process, so a memo would not outlive it) is encoded every time. Callers get their own copy of the tensors: what one message does to them reaches no other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from client.data.site import Site
from shared.encoding import EncodedCohort, SurvivalGrid, encode_cohort
from shared.harmonisation import NormalisationStats


@dataclass(frozen=True)
class _Request:
    """What decides the tensors (compared and hashed), and the objects to encode from (neither)."""

    table_key: str
    split: str
    stats_json: str
    grid: SurvivalGrid
    site: Site = field(compare=False)
    stats: NormalisationStats = field(compare=False)


def encoded_part(site: Site, split: str, stats: NormalisationStats, grid: SurvivalGrid) -> EncodedCohort:
    """The site's `split` encoded with `stats` on `grid`: what encode_cohort(site.part(split), stats, grid) gives."""
    if site.table_key is None:
        return encode_cohort(site.part(split), stats, grid)
    cached = _encoded(_Request(site.table_key, split, stats.model_dump_json(), grid, site, stats))
    return EncodedCohort.from_tensors([tensor.clone() for tensor in cached.tensors()])


@lru_cache(maxsize=64)  # a few sites × splits × scalings per worker process; under 1 MB each
def _encoded(request: _Request) -> EncodedCohort:
    return encode_cohort(request.site.part(request.split), request.stats, request.grid)
