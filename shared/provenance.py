"""Hashes that say which code and which data dictionary produced something; both sides compute them alike.

The app hash is Flower's FAB hash: the SHA-256 of the Flower App Bundle that `flwr run` builds from the app folder
and submits; the SuperLink and every SuperNode key the app by it. Neither a ClientApp nor a ServerApp is told that
hash (flwr 1.42 passes no FAB information in Context or Message), so it is rebuilt, with Flower's own builder, from
the folder the running code was loaded from: the folder the SuperNode (or SuperLink) installed the FAB into, or
the project folder itself in a local simulation. Rebuilding is deterministic (fixed dates, sorted files), so the
hash equals the one `flwr run` computed, and it describes the code that actually runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

RUNNING_APP_ROOT = Path(__file__).resolve().parent.parent  # the folder holding shared/, client/, pyproject.toml
HEX_DIGEST_LENGTH = 64


def canonical_sha256(value: Any) -> str:
    """SHA-256 of a JSON-able value in canonical form (sorted keys, no spaces): equal values, equal hashes."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_sha256(text: str) -> bool:
    return len(text) == HEX_DIGEST_LENGTH and all(c in "0123456789abcdef" for c in text)


def _collect_files(root: Path) -> dict[str, Path]:
    """Every file flwr's `collect_files` would list, without walking folders .gitignore excludes whole.

    Flower's own walk enters every folder (a virtual environment inside the project costs seconds) and then drops
    what .gitignore excludes; pruning those folders first gives Flower's builder the same files it keeps.
    """
    from flwr.cli.utils import build_pathspec, load_gitignore_patterns

    ignored = build_pathspec(load_gitignore_patterns(root / ".gitignore"))
    resolved_root, files = root.resolve(), {}
    for directory, folders, names in os.walk(root, followlinks=False):
        relative = Path(directory).relative_to(root)
        folders[:] = [f for f in folders if not ignored.match_file((relative / f).as_posix() + "/")]
        for name in names:
            path = Path(directory) / name
            if path.is_symlink() or not path.resolve().is_relative_to(resolved_root):
                continue
            files[path.relative_to(root).as_posix()] = path
    return files


def build_app_bundle(root: Path) -> bytes:
    """The FAB `flwr run <root>` builds and submits, byte for byte (Flower's builder on the same files)."""
    from flwr.cli.build import build_fab_from_files

    if not (root / "pyproject.toml").is_file():
        raise FileNotFoundError(f"{root} is not a Flower app folder (no pyproject.toml)")
    with warnings.catch_warnings():  # flwr 1.42 asks pathspec for its 'gitwildmatch' name: deprecated, same patterns
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="pathspec")
        return build_fab_from_files(_collect_files(root))[0]


def app_hash(root: Path) -> str:
    """The FAB hash of the app in `root`: what the SuperLink and SuperNodes identify the app by."""
    return hashlib.sha256(build_app_bundle(root)).hexdigest()


@lru_cache(maxsize=4)
def running_app_hash(root: Path = RUNNING_APP_ROOT) -> str | None:
    """The hash of the code this process runs; None when it was not loaded from an app folder. Memoised: the
    code of a running process does not change."""
    try:
        return app_hash(root)
    except FileNotFoundError as error:  # installed as a package, not run from an app folder
        logger.warning("the running app's hash is unknown: %s", error)
        return None
    except Exception:  # noqa: BLE001 - an unknown hash is refused where approval is required, recorded otherwise
        logger.exception("the running app's hash could not be computed from %s", root)
        return None


def dictionary_sha256() -> str:
    """The content hash of the consortium's data dictionary (shared/dictionaries/default.yaml, as loaded)."""
    from shared.dictionary import default_dictionary

    return default_dictionary().content_sha256()
