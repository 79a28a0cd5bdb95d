"""DP-SGD really clips and noises, and the ledger accounts for every step across rounds and runs."""

import math

import pytest
import torch
from opacus import PrivacyEngine
from opacus.accountants import RDPAccountant
from torch.utils.data import DataLoader, TensorDataset

from client.training.privacy import (
    LedgerEntry,
    PrivacyBudgetExceeded,
    PrivacyLedger,
    calibrate_noise,
    check_budget,
    load_ledger,
    save_ledger,
    steps_per_round,
)
from client.training.dp_sgd import LocalTrainingPlan, PrivacyPlan, train_locally
from shared.losses import batch_loss
from tests.factories import encoded_cohort, tiny_model

PLAN = LocalTrainingPlan(local_epochs=1, batch_size=16, learning_rate=1e-2, proximal_mu=0.0,
                         modality_dropout=0.0, seed=0)


def test_opacus_clips_each_patient_and_adds_noise():
    cohort = encoded_cohort(64, seed=5)
    model = tiny_model()
    engine = PrivacyEngine(accountant="rdp")
    loader = DataLoader(TensorDataset(*cohort.tensors()), batch_size=32)
    private, optimizer, loader = engine.make_private(
        module=model, optimizer=torch.optim.SGD(model.parameters(), lr=1.0), data_loader=loader,
        noise_multiplier=0.0, max_grad_norm=1e-3, poisson_sampling=False)
    batch = next(iter(loader))
    batch_loss(private(*batch[:6]), batch[6:]).backward()
    raw = torch.sqrt(sum((p.grad_sample.flatten(1) ** 2).sum(1) for p in private.parameters()))
    assert raw.min() > 1e-3  # every patient's own gradient is far above the bound …
    optimizer.pre_step()
    clipped_sum = torch.sqrt(sum((p.summed_grad ** 2).sum() for p in private.parameters()))
    assert clipped_sum <= 32 * 1e-3 * (1 + 1e-4)  # … and the sum of clipped gradients respects it
    # with noise, the same batch gives a different gradient each time
    optimizer.noise_multiplier = 1.0
    grads = []
    for _ in range(2):
        optimizer.zero_grad()
        batch_loss(private(*batch[:6]), batch[6:]).backward()
        optimizer.pre_step()
        grads.append(torch.cat([p.grad.flatten() for p in private.parameters()]))
    assert not torch.allclose(grads[0], grads[1])


def test_a_dp_round_spends_a_finite_positive_epsilon_that_grows_with_rounds(tmp_path):
    cohort = encoded_cohort(96, seed=6)
    sample_rate, steps = steps_per_round(len(cohort), PLAN.batch_size, PLAN.local_epochs)
    sigma = calibrate_noise(target_epsilon=3.0, delta=1e-3, sample_rate=sample_rate, total_steps=3 * steps)
    ledger = PrivacyLedger(delta=1e-3)
    spent = []
    for server_round in (1, 2, 3):
        model = tiny_model()
        result = train_locally(model, cohort, PLAN, PrivacyPlan(noise_multiplier=sigma, max_grad_norm=1.0,
                                                                secure_mode=False))
        assert result.steps == steps and math.isclose(result.sample_rate, sample_rate)
        ledger.entries.append(LedgerEntry(run_id="r", server_round=server_round, noise_multiplier=sigma,
                                          sample_rate=result.sample_rate, steps=result.steps, epsilon_after=0))
        spent.append(ledger.epsilon())
    assert 0 < spent[0] < spent[1] < spent[2] and math.isfinite(spent[2])
    assert spent[2] == pytest.approx(3.0, abs=0.02)  # the noise was calibrated to the whole run


def test_dp_training_changes_the_model_differently_from_plain_training():
    cohort = encoded_cohort(96, seed=7)
    plain, private = tiny_model(), tiny_model()
    train_locally(plain, cohort, PLAN, None)
    train_locally(private, cohort, PLAN, PrivacyPlan(noise_multiplier=1.0, max_grad_norm=0.1, secure_mode=False))
    differences = [not torch.allclose(a, b) for a, b in zip(plain.parameters(), private.parameters(), strict=True)]
    assert all(differences)


@pytest.mark.parametrize("mode", ["functorch", "ghost"])
def test_each_grad_sample_mode_trains_the_model_hooks_train_with_the_same_accounting(mode):
    """Opacus's per-sample clipping modes are one algorithm: same steps and sample rate (so the same ε), and the
    same model to float rounding (ghost clipping clips through a second backward pass), empty batches included."""
    cohort = encoded_cohort(40, seed=9)
    plan = LocalTrainingPlan(local_epochs=2, batch_size=4, learning_rate=1e-2, proximal_mu=0.01,
                             modality_dropout=0.2, seed=3)  # batch 4 of 40: some Poisson batches are empty
    models, results = {}, {}
    for chosen in ("hooks", mode):
        models[chosen] = tiny_model()
        results[chosen] = train_locally(models[chosen], cohort, plan, PrivacyPlan(
            noise_multiplier=0.8, max_grad_norm=0.5, secure_mode=False, secret_noise=False, grad_sample_mode=chosen))
    assert (results[mode].steps, results[mode].sample_rate) == (results["hooks"].steps, results["hooks"].sample_rate)
    assert math.isfinite(results[mode].mean_loss)
    assert results[mode].mean_loss == pytest.approx(results["hooks"].mean_loss, rel=1e-5)
    for ours, reference in zip(models[mode].parameters(), models["hooks"].parameters(), strict=True):
        assert torch.allclose(ours, reference, atol=1e-5), (ours - reference).abs().max()
    untrained = torch.cat([p.flatten() for p in tiny_model().parameters()])
    assert not torch.allclose(torch.cat([p.detach().flatten() for p in models[mode].parameters()]), untrained)


def test_an_unknown_grad_sample_mode_is_refused_with_the_allowed_ones():
    with pytest.raises(ValueError, match="'vmap' is not one of"):
        train_locally(tiny_model(), encoded_cohort(20, seed=1), PLAN, PrivacyPlan(
            noise_multiplier=1.0, max_grad_norm=1.0, secure_mode=False, grad_sample_mode="vmap"))


def test_the_ledger_composes_across_runs_and_refuses_past_the_budget(tmp_path):
    path = tmp_path / "privacy_ledger.json"
    one_run = (1.2, 0.1, 50)
    first = load_ledger(path, delta=1e-4)
    first.entries.append(LedgerEntry(run_id="run-1", server_round=1, noise_multiplier=1.2, sample_rate=0.1,
                                     steps=50, epsilon_after=first.epsilon([one_run])))
    save_ledger(first, path)
    second = load_ledger(path, delta=1e-4)  # a later run at the same site starts from what was spent
    assert second.epsilon() == pytest.approx(first.epsilon())
    both = second.epsilon([one_run])
    assert both > second.epsilon()
    assert check_budget(second, budget_epsilon=both + 0.01, planned=one_run) == pytest.approx(both)
    with pytest.raises(PrivacyBudgetExceeded, match="privacy budget exhausted"):
        check_budget(second, budget_epsilon=both - 0.05, planned=one_run)
    with pytest.raises(ValueError, match="does not compose"):
        load_ledger(path, delta=1e-5)


def test_two_runs_at_one_site_spend_what_one_accountant_over_both_runs_steps_spends(tmp_path):
    """The ledger on disk composes run 1 and run 2 exactly as one accountant stepped through every step would."""
    path = tmp_path / "privacy_ledger.json"
    cohort = encoded_cohort(80, seed=8)
    sample_rate, steps = steps_per_round(len(cohort), PLAN.batch_size, PLAN.local_epochs)
    fresh = RDPAccountant()
    run_sigmas = {"run-1": 1.1, "run-2": 0.9}  # the second run planned a different noise level
    for run_id, sigma in run_sigmas.items():
        ledger = load_ledger(path, delta=1e-3)  # each run starts from what the site's disk says
        for server_round in (1, 2):
            result = train_locally(tiny_model(), cohort, PLAN, PrivacyPlan(noise_multiplier=sigma, max_grad_norm=1.0,
                                                                           secure_mode=False))
            for _ in range(result.steps):
                fresh.step(noise_multiplier=sigma, sample_rate=result.sample_rate)
            ledger.entries.append(LedgerEntry(run_id=run_id, server_round=server_round, noise_multiplier=sigma,
                                              sample_rate=result.sample_rate, steps=result.steps, epsilon_after=0))
            ledger.entries[-1].epsilon_after = ledger.epsilon()
        save_ledger(ledger, path)
    both = load_ledger(path, delta=1e-3)
    assert [(e.run_id, e.server_round) for e in both.entries] == [("run-1", 1), ("run-1", 2), ("run-2", 1),
                                                                  ("run-2", 2)]
    assert both.epsilon() == pytest.approx(fresh.get_epsilon(1e-3), rel=1e-9)
    only_first = PrivacyLedger(delta=1e-3, entries=both.entries[:2])
    assert only_first.epsilon() < both.epsilon() < 2 * only_first.epsilon()  # composition, sub-additive
    assert steps == both.entries[0].steps


def test_the_ledger_reports_each_rounds_own_epsilon_and_the_cumulative_one():
    ledger = PrivacyLedger(delta=1e-4)
    for run_id, server_round, sigma in (("a", 1, 1.0), ("a", 2, 1.0), ("b", 1, 2.0)):
        ledger.entries.append(LedgerEntry(run_id=run_id, server_round=server_round, noise_multiplier=sigma,
                                          sample_rate=0.05, steps=40, epsilon_after=0))
    single = PrivacyLedger(delta=1e-4, entries=ledger.entries[:1]).epsilon()
    assert ledger.round_epsilon("a", 1) == pytest.approx(single)
    assert ledger.round_epsilon("a", 2) == pytest.approx(single)  # same noise, same steps, same cost
    assert ledger.round_epsilon("b", 1) < single  # twice the noise costs less
    assert ledger.round_epsilon("c", 1) == 0.0  # a round the site never trained in cost nothing
    spending = ledger.spending()
    assert [(r.run_id, r.server_round) for r in spending] == [("a", 1), ("a", 2), ("b", 1)]
    assert [r.epsilon_cumulative for r in spending] == pytest.approx(
        [PrivacyLedger(delta=1e-4, entries=ledger.entries[:k]).epsilon() for k in (1, 2, 3)])
    assert spending[-1].epsilon_cumulative == pytest.approx(ledger.epsilon())
    assert spending[1].epsilon_cumulative < spending[0].epsilon_round + spending[1].epsilon_round


def test_a_real_sites_dp_noise_is_secret_and_only_a_rehearsals_follows_the_run_seed():
    """DP assumes nobody who sees an update can regenerate its noise; the run's seed is the coordinator's."""
    cohort = encoded_cohort(64, seed=11)

    def trained(secret: bool) -> list[torch.Tensor]:
        model = tiny_model()
        train_locally(model, cohort, PLAN, PrivacyPlan(noise_multiplier=1.0, max_grad_norm=0.5, secure_mode=False,
                                                       secret_noise=secret))
        return [p.detach().clone() for p in model.parameters()]

    seeded = trained(secret=False), trained(secret=False)
    assert all(torch.equal(a, b) for a, b in zip(*seeded, strict=True))  # a rehearsal reproduces
    secret = trained(secret=True), trained(secret=True)
    assert not all(torch.equal(a, b) for a, b in zip(*secret, strict=True))  # same seed, fresh noise
    assert not all(torch.equal(a, b) for a, b in zip(seeded[0], secret[0], strict=True))
    assert PrivacyPlan(noise_multiplier=1.0, max_grad_norm=0.5, secure_mode=False).secret_noise  # the default
