"""The site's validated contract table, kept on the site's own disk between messages.

A deployed SuperNode starts a fresh ClientApp process for every message, and reading, mapping and
validating the site's export costs seconds (more for an OMOP database). The table and its splits are
written once, as Parquet, under the site's state directory, keyed by a SHA-256 of everything that decides
them: the export's bytes, the site configuration, the split settings and the source of the code that maps
and validates. Any change to one of these gives a new key, so a stale table is never used. The file is
written next to its destination and renamed over it (as the privacy ledger is), so it is either absent or
complete; a file that does not read back is ignored and rewritten. It stays on the site's disk like every
per-patient output. A source that cannot be hashed (a database server) is not cached.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from shared.atomic import write_atomically
from shared.site_config import SiteConfig

CACHE_DIR = "cache"
SPLIT_COLUMN = "__split__"
_CODE = ("shared/contract.py", "shared/vocabulary.py", "shared/site_config.py", "client/data/mapping.py",
         "client/data/loader.py", "client/data/omop.py", "client/data/site.py", "client/data/cache.py")
_ROOT = Path(__file__).resolve().parents[2]  # the folder holding shared/ and client/


def _hash_file(digest: hashlib._Hash, path: Path) -> None:
    with path.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)


def _export_files(site_config: SiteConfig) -> list[Path] | None:
    """The files that hold the export, or None when it lives on a database server (not hashable here)."""
    source = site_config.data
    if source.format in ("csv", "parquet"):
        return [Path(source.path)]
    prefix = "duckdb:///"  # a DuckDB file (site_config resolved it against the config file's folder)
    path = Path(source.url[len(prefix):]) if source.url.startswith(prefix) else None
    return [path] if path is not None and path.is_file() else None


def table_key(site_config: SiteConfig, seed: int, validation_fraction: float, test_fraction: float) -> str | None:
    """SHA-256 of the export, the site configuration, the split settings and the validating code; None = no cache."""
    files = _export_files(site_config)
    if files is None:
        return None
    digest = hashlib.sha256()
    digest.update(site_config.model_dump_json().encode())
    digest.update(f"{seed}:{validation_fraction!r}:{test_fraction!r}".encode())
    for path in files + ([site_config.test_patients] if site_config.test_patients is not None else []):
        _hash_file(digest, path)
    for path in (_ROOT / name for name in _CODE):
        digest.update(str(path.relative_to(_ROOT)).encode())
        if path.is_file():
            _hash_file(digest, path)
    return digest.hexdigest()


def cached_site_table(site_config: SiteConfig, seed: int, validation_fraction: float, test_fraction: float,
                      load: Callable[[], tuple[pd.DataFrame, np.ndarray]]) -> tuple[pd.DataFrame, np.ndarray]:
    """The site's validated table and splits: from the cache when its key matches, else `load()` and cache it."""
    key = table_key(site_config, seed, validation_fraction, test_fraction)
    if key is None:
        return load()
    folder = site_config.state_dir / CACHE_DIR
    path = folder / f"site-table-{key}.parquet"
    if path.is_file():
        try:
            frame = pd.read_parquet(path)
            return frame.drop(columns=SPLIT_COLUMN), frame[SPLIT_COLUMN].to_numpy(dtype=object).astype(str)
        except Exception:  # noqa: BLE001 - an unreadable cache is rebuilt from the export, never trusted
            path.unlink(missing_ok=True)
    patients, split = load()
    table = patients.assign(**{SPLIT_COLUMN: split})  # absent or complete, readable by the site only
    write_atomically(path, lambda stream: table.to_parquet(stream, index=False), mode=0o600)
    for stale in folder.glob("site-table-*.parquet"):  # one table per site: older keys are obsolete
        if stale != path:
            stale.unlink(missing_ok=True)
    return patients, split
