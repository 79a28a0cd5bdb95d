"""A site takes part only in runs of the data dictionary it agreed to: the coordinator sends the dictionary's
content hash with every instruction, and a site whose local copy differs refuses before its data is opened.

The site's local copy is the file its site configuration names (`dictionary = "consortium.yaml"`), or the
app's default dictionary when it names none. Like code approval (client/governance/approval.py) the check is a client
mod, so no handler runs and no row is read on a mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable, Mod

from client.flower import outbox
from shared.dictionary import DataDictionary, DictionaryError, default_dictionary, load_dictionary
from shared.messages import DICTIONARY_KEY, PLAN_KEY
from shared.site_config import SiteConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalDictionary:
    """The dictionary a site agreed to, and where it is written (None: the app's default)."""

    site_id: str
    path: Path | None


def site_dictionary(config: SiteConfig) -> DataDictionary:
    """The site's local copy of the consortium's dictionary (DictionaryError when it is unusable)."""
    return load_dictionary(config.dictionary) if config.dictionary is not None else default_dictionary()


def mismatch_reason(site_id: str, local_sha256: str, run_sha256: str, where: Path | None) -> str | None:
    """Why this site will not take part in a run of another dictionary, or None when the hashes agree."""
    if local_sha256 == run_sha256:
        return None
    copy = f"its copy {where.name}" if where is not None else "the app's default dictionary"
    return (f"site {site_id} refuses: the run uses data dictionary {run_sha256}, but {copy} has hash "
            f"{local_sha256}; nothing was run and no data was read. The consortium and this site must agree on "
            f"one dictionary: get the coordinator's dictionary file, check it with `oncofed-check-site "
            f"--site-config <site.toml> --dictionary <file>`, and point `dictionary` in the site config at it")


def run_dictionary_sha256(message: Message) -> str | None:
    """The dictionary hash the coordinator sent with this instruction, if any."""
    if PLAN_KEY not in message.content.config_records:
        return None
    plan = message.content.config_records[PLAN_KEY]
    return str(plan[DICTIONARY_KEY]) if DICTIONARY_KEY in plan else None


def dictionary_mod(local_of: Callable[[Context], LocalDictionary]) -> Mod:
    """A Flower mod that refuses every instruction whose dictionary hash differs from the site's copy."""

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        run_sha256 = run_dictionary_sha256(message)
        if run_sha256 is None:
            return call_next(message, context)
        local = local_of(context)
        try:
            local_sha256 = (load_dictionary(local.path) if local.path is not None else default_dictionary()
                            ).content_sha256()
        except DictionaryError as error:
            logger.error("%s", error)
            return outbox.refusal(message, outbox.ERROR_CONFIG, f"site {local.site_id}: its data dictionary file "
                                  f"is not usable; its data steward runs `oncofed-check-site` to see why")
        reason = mismatch_reason(local.site_id, local_sha256, run_sha256, local.path)
        if reason is not None:
            logger.error("%s", reason)
            return outbox.refusal(message, outbox.ERROR_CONFIG, reason)
        return call_next(message, context)

    return mod
