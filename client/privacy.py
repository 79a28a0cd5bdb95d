"""The site's privacy ledger and noise calibration: the budget covers the whole run, not one round.

The unit of privacy is one patient record at one site. The ledger keeps the Opacus RDP accountant's
history (noise multiplier, sample rate, steps) on the site's disk, so spending composes across rounds and
across runs, and a round that would overspend the site's budget is refused before it starts.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import warnings
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field

from shared.html_report import PrivacyRound


class LedgerEntry(BaseModel):
    run_id: str
    server_round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon_after: float = Field(description="cumulative ε of the site after this entry")


class PrivacyLedger(BaseModel):
    """Everything the site has spent, in the accountant's own terms."""

    delta: float
    entries: list[LedgerEntry] = []

    def history(self) -> list[tuple[float, float, int]]:
        return [(e.noise_multiplier, e.sample_rate, e.steps) for e in self.entries]

    def epsilon(self, extra: list[tuple[float, float, int]] | None = None) -> float:
        """Cumulative ε, optionally with planned steps added (to check a round before running it)."""
        return rdp_epsilon(self.history() + (extra or []), self.delta)

    def round_epsilon(self, run_id: str, server_round: int) -> float:
        """ε spent by one round alone (its entries only). Rounds do not add up: RDP composes sub-linearly."""
        return rdp_epsilon([(e.noise_multiplier, e.sample_rate, e.steps) for e in self.entries
                            if e.run_id == run_id and e.server_round == server_round], self.delta)

    def spending(self) -> list[PrivacyRound]:
        """Every round the site trained in, oldest first: its own ε and the cumulative ε up to it."""
        rounds: list[PrivacyRound] = []
        for index, entry in enumerate(self.entries):
            if rounds and (rounds[-1].run_id, rounds[-1].server_round) == (entry.run_id, entry.server_round):
                rounds.pop()  # a round recorded in several entries is one point
            rounds.append(PrivacyRound(run_id=entry.run_id, server_round=entry.server_round,
                                       epsilon_round=self.round_epsilon(entry.run_id, entry.server_round),
                                       epsilon_cumulative=rdp_epsilon(self.history()[:index + 1], self.delta)))
        return rounds


def rdp_epsilon(history: list[tuple[float, float, int]], delta: float) -> float:
    """ε at δ of the composed (noise multiplier, sample rate, steps) history, by Opacus's RDP accountant."""
    if not history:
        return 0.0
    from opacus.accountants import RDPAccountant  # on first use: opacus loads scipy and torch.distributed (~1 s)

    accountant = RDPAccountant()
    accountant.history = list(history)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")  # bound still valid
        return float(accountant.get_epsilon(delta))


class PrivacyBudgetExceeded(RuntimeError):
    """The site refuses a round: running it would take ε past the site's budget."""


def load_ledger(path: Path, delta: float) -> PrivacyLedger:
    if not path.exists():
        return PrivacyLedger(delta=delta)
    ledger = PrivacyLedger.model_validate_json(path.read_text())
    if not math.isclose(ledger.delta, delta, rel_tol=1e-9):
        raise ValueError(f"{path}: the ledger was kept at δ={ledger.delta}, this run asks δ={delta}; "
                         f"ε at different δ does not compose — keep the site's target-delta fixed")
    return ledger


def save_ledger(ledger: PrivacyLedger, path: Path) -> None:
    """Atomic write: a crash never leaves a half-written ledger (that would under-count spending)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".ledger-", suffix=".json")
    with os.fdopen(handle, "w") as file:
        file.write(json.dumps(ledger.model_dump(), indent=2))
    os.replace(temporary, path)


def default_delta(num_train: int) -> float:
    """δ well below 1/n: the chance of a total privacy failure for one of n patients stays small."""
    return 0.1 / max(num_train, 1)


def steps_per_round(num_train: int, batch_size: int, local_epochs: int) -> tuple[float, int]:
    """(Poisson sample rate, optimiser steps per round), exactly as Opacus's DPDataLoader takes them."""
    batches_per_epoch = math.ceil(num_train / batch_size)
    return 1.0 / batches_per_epoch, local_epochs * batches_per_epoch


@lru_cache(maxsize=1024)
def calibrate_noise(target_epsilon: float, delta: float, sample_rate: float, total_steps: int) -> float:
    """The noise multiplier that spends exactly the target ε over every planned step of the run.

    A pure function of its four numbers, memoised: the search costs about a second of RDP evaluations and a
    site asks the same question every round (in simulation, in a worker process that serves every site).
    """
    from opacus.accountants.utils import get_noise_multiplier  # on first use, as in rdp_epsilon

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta,
                                          sample_rate=sample_rate, steps=total_steps, accountant="rdp",
                                          epsilon_tolerance=0.005))


def check_budget(ledger: PrivacyLedger, budget_epsilon: float, planned: tuple[float, float, int]) -> float:
    """ε after the planned round, or PrivacyBudgetExceeded naming what was spent and what is left."""
    after = ledger.epsilon([planned])
    if after > budget_epsilon * (1 + 1e-3):
        spent = ledger.epsilon()
        raise PrivacyBudgetExceeded(
            f"privacy budget exhausted: ε spent {spent:.3f} of {budget_epsilon:.3f} (δ={ledger.delta:.2e}); "
            f"this round would reach ε={after:.3f}. The site stops training; raise its target-epsilon only "
            f"with its data governance approval.")
    return after
