"""The site's data fingerprint: a keyed hash of its validated export, so a model can name the data it came from.

Only the hash leaves the site (in the feature-summary reply, through client/flower/outbox.py). It is an HMAC keyed with a
secret that never leaves the site's state dir: a plain hash of a table could be tested against guesses of the
table by whoever knows all of it but one value; a keyed one cannot, yet the site can always recompute it to show
that a model was trained on this version of its data. Equal data and key give equal fingerprints across runs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path

import pandas as pd

KEY_FILE = "fingerprint.key"


def site_key(state_dir: Path) -> bytes:
    """The site's fingerprint key, created once (32 random bytes, readable by the site's user only)."""
    path = state_dir / KEY_FILE
    if not path.exists():
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another ClientApp process of this site created it first
            return path.read_bytes()
        with os.fdopen(handle, "wb") as file:
            file.write(secrets.token_bytes(32))
            file.flush()
            os.fsync(file.fileno())
    return path.read_bytes()


def data_fingerprint(patients: pd.DataFrame, state_dir: Path) -> str:
    """HMAC-SHA256 of the validated contract table, rows ordered by patient id (order-independent)."""
    table = patients.sort_values("patient_id", kind="stable").reset_index(drop=True)
    return hmac.new(site_key(state_dir), table.to_csv(index=False).encode("utf-8"), hashlib.sha256).hexdigest()
