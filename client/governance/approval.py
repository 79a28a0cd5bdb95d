"""Site approval of code: a site runs only the app versions its data steward approved, by their FAB hash.

The FAB hash is the SHA-256 of the Flower App Bundle that `flwr run` builds from the coordinator's app folder and
submits. A ClientApp is not told it, so shared/provenance.py rebuilds the bundle with Flower's own builder from the
folder the SuperNode installed the app into: the hash of the code that actually runs, whatever the coordinator
claims.

flwr 1.42's own SuperNode option `--trusted-entities` accepts only apps signed through Flower Hub: an app submitted
with `flwr run <folder>` carries no Hub verification and is refused by every SuperNode using that option, and the
Hub cannot be reached from an offline hospital network. So the check is made here, in a client mod that runs
before any handler, i.e. before the site's data is opened.

`oncofed-app-hash <app folder>` prints the hash a coordinator is about to submit; the steward reviews that code
and adds the hash to `approved_apps` in the site's configuration (shared/site_config.py).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context, Message
from flwr.clientapp.typing import ClientAppCallable, Mod

from client.flower import outbox
from shared.provenance import app_hash, running_app_hash

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class ApprovalPolicy:
    """A site's rule: which app hashes it runs (None: approval is not required) and where the rule is written."""

    site_id: str
    approved_apps: tuple[str, ...] | None
    config_file: Path | None


def refusal_reason(policy: ApprovalPolicy, running: str | None) -> str | None:
    """Why this site will not run the app, or None when it may."""
    if policy.approved_apps is None or (running is not None and running in policy.approved_apps):
        return None
    # the file's name only: the reason goes to the coordinator, the site's folder layout need not
    where = f"approved_apps in its {policy.config_file.name if policy.config_file else 'site config'}"
    if running is None:
        return (f"site {policy.site_id} runs only approved apps, and the hash of this app could not be computed "
                f"(its code was not loaded from a Flower app folder); nothing was run")
    return (f"site {policy.site_id} has not approved app {running}; nothing was run and no data was read. To "
            f"approve it, the site's data steward reviews the coordinator's code, checks that `oncofed-app-hash "
            f"<app folder>` prints this hash, and adds \"{running}\" to {where}")


def approval_mod(policy_of: Callable[[Context], ApprovalPolicy],
                 running_hash: Callable[[], str | None] = running_app_hash) -> Mod:
    """A Flower mod that refuses every message of an app the site has not approved, before any handler runs."""

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        def check(message: Message, context: Context) -> Message | None:
            policy = policy_of(context)  # reads the site's configuration file only, never its data
            reason = refusal_reason(policy, running_hash() if policy.approved_apps is not None else None)
            if reason is not None:
                logger.warning(reason)
                return outbox.refusal(message, outbox.ERROR_APP_NOT_APPROVED, reason)
            return None

        refused = outbox.contain_failures(message, context, check)  # a broken site config: no text leaves
        return refused if refused is not None else call_next(message, context)

    return mod


def main(argv: list[str] | None = None) -> int:
    """`oncofed-app-hash [app folder]`: the FAB hash `flwr run` will submit for this folder."""
    parser = argparse.ArgumentParser(prog="oncofed-app-hash",
                                     description="Print the FAB hash of a Flower app folder: the value a site lists "
                                                 "in approved_apps to accept that exact code.")
    parser.add_argument("app", type=Path, nargs="?", default=Path("."), help="the app folder (default: here)")
    args = parser.parse_args(argv)
    try:
        digest = app_hash(args.app.expanduser().resolve())
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))  # the folder given is the problem: argparse's usage line, message and exit 2
    print(digest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
