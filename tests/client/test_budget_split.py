"""The consortium's split of each site's ε between the deployed model and the validation phases is enforced."""

import pytest
from opacus.accountants import RDPAccountant

from client.training.privacy import (
    LedgerEntry,
    PrivacyBudgetExceeded,
    PrivacyLedger,
    calibrate_noise,
    check_budget,
    plan_round,
    rdp_epsilon,
    validation_budget,
)

TARGET, DELTA, SHARE = 3.0, 1e-4, 0.2
SITE = dict(num_train=480, batch_size=240, local_epochs=1)  # 2 steps per round at sample rate 1/2
FEDERATED_ROUNDS, VALIDATION_ROUNDS = 6, 9


def _spend(ledger: PrivacyLedger, phase: str, rounds: int) -> None:
    """Record `rounds` rounds of the phase, each as planned for this site (no training needed to account)."""
    group_rounds = FEDERATED_ROUNDS if phase == "federated" else VALIDATION_ROUNDS
    for server_round in range(1, rounds + 1):
        planned = plan_round(TARGET, DELTA, SHARE, phase, group_rounds, VALIDATION_ROUNDS, **SITE)
        check_budget(ledger, TARGET, planned.planned, planned.group, planned.group_budget)
        ledger.entries.append(LedgerEntry(run_id="run" if phase == "federated" else f"run:{phase}",
                                          server_round=server_round, noise_multiplier=planned.noise_multiplier,
                                          sample_rate=planned.sample_rate, steps=planned.steps, epsilon_after=0.0,
                                          phase=planned.group))


def test_the_federated_rounds_noise_is_calibrated_to_the_federated_share():
    federated = plan_round(TARGET, DELTA, SHARE, "federated", FEDERATED_ROUNDS, VALIDATION_ROUNDS, **SITE)
    validation = plan_round(TARGET, DELTA, SHARE, "loso", VALIDATION_ROUNDS, VALIDATION_ROUNDS, **SITE)
    alone = plan_round(TARGET, DELTA, SHARE, "federated", FEDERATED_ROUNDS, 0, **SITE)  # no validation planned
    assert alone.group_budget == TARGET and validation.group_budget == pytest.approx(TARGET * SHARE)
    # the federated share: at least ε × (1 − share), and what keeps the composed whole run at the target
    assert TARGET * (1 - SHARE) < federated.group_budget < TARGET
    assert federated.noise_multiplier > alone.noise_multiplier  # less than the whole ε needs more noise
    accountant = RDPAccountant()
    accountant.history = [(federated.noise_multiplier, federated.sample_rate, federated.steps * FEDERATED_ROUNDS)]
    assert accountant.get_epsilon(DELTA) == pytest.approx(federated.group_budget, rel=1e-9)
    accountant.history.append((validation.noise_multiplier, validation.sample_rate,
                               validation.steps * VALIDATION_ROUNDS))
    assert TARGET - 0.01 <= accountant.get_epsilon(DELTA) <= TARGET  # the whole plan spends exactly the target
    accountant.history = accountant.history[1:]
    assert accountant.get_epsilon(DELTA) == pytest.approx(TARGET * SHARE, abs=0.01)
    assert validation.noise_multiplier == calibrate_noise(TARGET * SHARE, DELTA, 0.5, 2 * VALIDATION_ROUNDS)


def test_a_validation_round_past_its_share_is_refused_while_the_total_has_room():
    ledger = PrivacyLedger(delta=DELTA)
    _spend(ledger, "loso", VALIDATION_ROUNDS)
    assert ledger.epsilon(group="validation") == pytest.approx(TARGET * SHARE, abs=0.01)
    assert ledger.epsilon() < TARGET / 2  # the site's total has plenty left …
    extra = plan_round(TARGET, DELTA, SHARE, "local", VALIDATION_ROUNDS, VALIDATION_ROUNDS, **SITE)
    with pytest.raises(PrivacyBudgetExceeded, match="validation phases' share"):  # … but validation's is spent
        check_budget(ledger, TARGET, extra.planned, extra.group, extra.group_budget)
    federated = plan_round(TARGET, DELTA, SHARE, "federated", FEDERATED_ROUNDS, VALIDATION_ROUNDS, **SITE)
    check_budget(ledger, TARGET, federated.planned, federated.group, federated.group_budget)  # the model's share is untouched


def test_a_federated_round_past_its_share_is_refused():
    ledger = PrivacyLedger(delta=DELTA)
    _spend(ledger, "federated", FEDERATED_ROUNDS)
    extra = plan_round(TARGET, DELTA, SHARE, "federated", FEDERATED_ROUNDS, VALIDATION_ROUNDS, **SITE)
    with pytest.raises(PrivacyBudgetExceeded, match="federated phases' share"):
        check_budget(ledger, TARGET, extra.planned, extra.group, extra.group_budget)


def test_the_whole_planned_run_never_passes_the_sites_target():
    ledger = PrivacyLedger(delta=DELTA)
    _spend(ledger, "federated", FEDERATED_ROUNDS)
    _spend(ledger, "local", 4)
    _spend(ledger, "loso", VALIDATION_ROUNDS - 4)
    total = ledger.epsilon()
    shares = ledger.epsilon(group="federated") + ledger.epsilon(group="validation")
    assert total <= TARGET * (1 + 1e-3) and total <= shares + 1e-9  # composition never exceeds the shares' sum
    assert total > ledger.epsilon(group="federated")  # and the validation rounds did spend
    for phase in ("federated", "local"):  # nothing more, in either group
        extra = plan_round(TARGET, DELTA, SHARE, phase, VALIDATION_ROUNDS, VALIDATION_ROUNDS, **SITE)
        with pytest.raises(PrivacyBudgetExceeded):
            check_budget(ledger, TARGET, extra.planned, extra.group, extra.group_budget)


def test_the_total_is_checked_even_when_a_group_has_room():
    ledger = PrivacyLedger(delta=DELTA)
    big = (0.6, 0.5, 40)  # a round far noisier-spent than any share allows
    ledger.entries.append(LedgerEntry(run_id="older-run", server_round=1, noise_multiplier=big[0],
                                      sample_rate=big[1], steps=big[2], epsilon_after=0.0, phase="federated"))
    assert ledger.epsilon() > TARGET
    planned = plan_round(TARGET, DELTA, SHARE, "local", VALIDATION_ROUNDS, VALIDATION_ROUNDS, **SITE)
    with pytest.raises(PrivacyBudgetExceeded, match="privacy budget exhausted"):
        check_budget(ledger, TARGET, planned.planned, planned.group, planned.group_budget)


def test_the_shares_and_older_ledgers():
    assert validation_budget(3.0, 0.25) == 0.75
    older = LedgerEntry.model_validate({"run_id": "7:loso-without-a", "server_round": 1, "noise_multiplier": 1.0,
                                        "sample_rate": 0.5, "steps": 2, "epsilon_after": 0.1})
    assert older.phase == "validation"
    assert LedgerEntry.model_validate(older.model_dump() | {"run_id": "7"}).phase == "validation"  # explicit wins


def test_the_memoised_ledger_epsilon_is_opacus_rdp_accountants():
    history = [(1.3, 0.25, 4)] * 3 + [(2.1, 0.5, 2)] * 5
    accountant = RDPAccountant()
    accountant.history = list(history)
    assert rdp_epsilon(history, 1e-5) == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-12)
