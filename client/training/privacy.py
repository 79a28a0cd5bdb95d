"""The site's privacy ledger and noise calibration: the budget covers the whole run, not one round.

The unit of privacy is one patient record at one site. The ledger keeps the Opacus RDP accountant's
history (noise multiplier, sample rate, steps) on the site's disk, so spending composes across rounds and
across runs, and a round that would overspend the site's budget is refused before it starts.

The consortium splits each site's ε between two budget groups (run-config `validation-epsilon-share`): the
federated rounds that train the model it deploys, and the validation phases (local-only models, the
cross-site matrix, leave-one-site-out federations). Each group's noise is calibrated to its own share and the
ledger refuses a round that would take its group past its share. Composed by RDP, two mechanisms of ε₁ and
ε₂ at the same δ never exceed ε₁ + ε₂, so the shares keep the site's total within its target; the ledger
checks the total over every entry as well.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from shared.atomic import write_atomically
from shared.html_report import PrivacyRound


BudgetGroup = Literal["federated", "validation", "propensity", "release"]


def budget_group(phase: str) -> BudgetGroup:
    """The budget a phase spends from: the federation's own rounds, or any validation phase's."""
    return "federated" if phase == "federated" else "validation"


class LedgerEntry(BaseModel):
    run_id: str
    server_round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    epsilon_after: float = Field(description="cumulative ε of the site after this entry")
    phase: BudgetGroup = Field(default="federated", description="the budget group this round spent from")

    @model_validator(mode="before")
    @classmethod
    def _group_of_older_entries(cls, values: dict) -> dict:
        """Ledgers written before the split label validation rounds '<run>:<phase>' and carry no group."""
        if isinstance(values, dict) and "phase" not in values and ":" in str(values.get("run_id", "")):
            values = {**values, "phase": "propensity" if str(values["run_id"]).endswith(":propensity")
                      else "validation"}
        return values


class PrivacyLedger(BaseModel):
    """Everything the site has spent, in the accountant's own terms."""

    delta: float
    entries: list[LedgerEntry] = []

    def history(self, group: BudgetGroup | None = None) -> list[tuple[float, float, int]]:
        return [(e.noise_multiplier, e.sample_rate, e.steps) for e in self.entries if group in (None, e.phase)]

    def epsilon(self, extra: list[tuple[float, float, int]] | None = None, group: BudgetGroup | None = None
                ) -> float:
        """Cumulative ε (of every entry, or of one budget group), optionally with planned steps added."""
        return rdp_epsilon(self.history(group) + (extra or []), self.delta)

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
    """ε at δ of the composed (noise multiplier, sample rate, steps) history: Opacus's RDP accountant's sum.

    Exactly RDPAccountant.get_privacy_spent (the RDP of each entry at its default orders, summed, converted
    at δ), with each entry's one-step RDP memoised: a ledger repeats a few (σ, q) pairs over many rounds and
    the accountant recomputed every entry at every call, which cost seconds per round on a long ledger.
    """
    if not history:
        return 0.0
    from opacus.accountants import RDPAccountant  # on first use: opacus loads scipy and torch.distributed (~1 s)
    from opacus.accountants.analysis import rdp as rdp_analysis

    rdp = sum(np.asarray(_one_step_rdp(sample_rate, noise_multiplier)) * steps
              for noise_multiplier, sample_rate, steps in history)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")  # bound still valid
        epsilon, _ = rdp_analysis.get_privacy_spent(orders=RDPAccountant.DEFAULT_ALPHAS, rdp=rdp, delta=delta)
    return float(epsilon)


@lru_cache(maxsize=4096)
def _one_step_rdp(sample_rate: float, noise_multiplier: float) -> tuple[float, ...]:
    from opacus.accountants import RDPAccountant
    from opacus.accountants.analysis import rdp as rdp_analysis

    return tuple(rdp_analysis.compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1,
                                          orders=RDPAccountant.DEFAULT_ALPHAS))


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
    write_atomically(path, json.dumps(ledger.model_dump(), indent=2), mode=0o600)


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


def validation_budget(target_epsilon: float, validation_share: float) -> float:
    """ε the validation phases together may spend: the consortium's validation share of the site's ε."""
    return target_epsilon * validation_share


@dataclass(frozen=True)
class RoundPrivacy:
    """One training round's DP plan at a site: its noise, its steps, and the budget group it spends from."""

    noise_multiplier: float
    sample_rate: float
    steps: int
    group: BudgetGroup
    group_budget: float

    @property
    def planned(self) -> tuple[float, float, int]:
        return self.noise_multiplier, self.sample_rate, self.steps


def plan_round(target_epsilon: float, delta: float, validation_share: float, phase: str, group_rounds: int,
               validation_rounds: int, num_train: int, batch_size: int, local_epochs: int,
               releases: tuple[float, float, int] | None = None) -> RoundPrivacy:
    """Noise for one round of a phase, calibrated over every planned round of its budget group.

    Validation phases: their `validation_rounds` together spend exactly the validation share of ε.
    Federated rounds: with no validation planned, the whole ε; otherwise the most that, composed by RDP with
    the validation phases' planned spending, keeps the site at exactly its ε. RDP composes sub-additively, so
    this is more than ε × (1 − share) (about 2.9 of 3 with a 0.2 share in the main job): the federated model
    gets the larger share, and the ledger enforces the number it was calibrated to.
    `releases`: the run's planned DP releases besides the model (client/release_privacy.py), as (σ, 1, count);
    the federated rounds are calibrated beside them too.
    """
    group = budget_group(phase)
    sample_rate, steps = steps_per_round(num_train, batch_size, local_epochs)
    validation_epsilon = validation_budget(target_epsilon, validation_share)
    if group == "validation":
        sigma = calibrate_noise(validation_epsilon, delta, sample_rate, steps * max(group_rounds, 1))
        return RoundPrivacy(sigma, sample_rate, steps, group, validation_epsilon)
    if validation_rounds == 0 and releases is None:
        sigma = calibrate_noise(target_epsilon, delta, sample_rate, steps * max(group_rounds, 1))
        return RoundPrivacy(sigma, sample_rate, steps, group, target_epsilon)
    others: tuple[tuple[float, float, int], ...] = () if releases is None else (releases,)
    if validation_rounds:
        validation_sigma = calibrate_noise(validation_epsilon, delta, sample_rate, steps * validation_rounds)
        others += ((validation_sigma, sample_rate, steps * validation_rounds),)
    sigma = calibrate_beside(target_epsilon, delta, sample_rate, steps * max(group_rounds, 1), others)
    budget = rdp_epsilon([(sigma, sample_rate, steps * max(group_rounds, 1))], delta)
    return RoundPrivacy(sigma, sample_rate, steps, group, budget)


@lru_cache(maxsize=1024)
def calibrate_beside(target_epsilon: float, delta: float, sample_rate: float, total_steps: int,
                     other: tuple[tuple[float, float, int], ...]) -> float:
    """The smallest noise multiplier whose `total_steps` steps, composed with `other`, stay within target ε.

    Opacus's get_noise_multiplier calibrates one mechanism alone; this is its bisection with another
    mechanism's RDP added (hand-written because Opacus has no calibration against a composed history).
    """
    if rdp_epsilon(list(other), delta) >= target_epsilon:
        raise PrivacyBudgetExceeded(f"the other phases alone would spend ε ≥ {target_epsilon:.3f}")
    spent = lambda sigma: rdp_epsilon([*other, (sigma, sample_rate, total_steps)], delta)  # noqa: E731
    low, high = 0.1, 1.0
    while spent(high) > target_epsilon:
        low, high = high, high * 2
    while spent(high) < target_epsilon - 0.005 and high - low > 1e-4:
        middle = (low + high) / 2
        if spent(middle) > target_epsilon:
            low = middle
        else:
            high = middle
    return high


def check_budget(ledger: PrivacyLedger, budget_epsilon: float, planned: tuple[float, float, int],
                 group: BudgetGroup | None = None, group_budget: float | None = None) -> float:
    """ε after the planned round, or PrivacyBudgetExceeded naming what was spent and what is left.

    With `group`, the round must also keep its budget group within `group_budget` (its share of the site's ε),
    even when the site's total has room: the consortium's split is a limit, not a guideline.
    """
    if group is not None and group_budget is not None and group_budget < budget_epsilon:  # else: the total's check
        group_after = ledger.epsilon([planned], group=group)
        if group_after > group_budget * (1 + 1e-3):
            raise PrivacyBudgetExceeded(
                f"the {group} phases' share of the privacy budget is spent: ε {ledger.epsilon(group=group):.3f} "
                f"of their {group_budget:.3f} (δ={ledger.delta:.2e}); this round would reach ε={group_after:.3f}. "
                f"The site's split between the federated model and validation is set by validation-epsilon-share.")
    after = ledger.epsilon([planned])
    if after > budget_epsilon * (1 + 1e-3):
        spent = ledger.epsilon()
        raise PrivacyBudgetExceeded(
            f"privacy budget exhausted: ε spent {spent:.3f} of {budget_epsilon:.3f} (δ={ledger.delta:.2e}); "
            f"this round would reach ε={after:.3f}. The site stops training; raise its target-epsilon only "
            f"with its data governance approval.")
    return after
