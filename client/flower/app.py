"""The site's ClientApp: feature statistics, DP training, and evaluation on the site's own held-out data.

Every reply is built by client/flower/outbox.py; per-patient values stay in this process and on the site's disk.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ArrayRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from client.data.encoded import encoded_part
from client.data.fingerprint import data_fingerprint
from client.flower import outbox
from client.governance.approval import ApprovalPolicy, approval_mod
from client.governance.dictionary_check import LocalDictionary, dictionary_mod
from client.governance.audit import AUDIT_FILE, AuditTarget, audit_mod
from client.training.privacy import (
    LedgerEntry,
    PrivacyBudgetExceeded,
    check_budget,
    load_ledger,
    plan_round,
    save_ledger,
)
from client.data.site import Site, locate_site, open_site, partition_count_problem
from client.flower.secure_aggregation import secure_aggregation_mod
from client.training.propensity import outcome_epsilon, train_propensity_round
from shared.config import RunConfig
from shared.encoding import SurvivalGrid
from shared.harmonisation import NormalisationStats, summarise_site, to_metric_record_dict
from shared.messages import (
    RECALIBRATION_INTERCEPT_KEY,
    RECALIBRATION_SLOPE_KEY,
    COUNT_KEY,
    EPSILON_KEY,
    LOSS_KEYS,
    MODEL_ARRAYS_KEY,
    PLAN_KEY,
    SPLIT_KEY,
    PhaseInstruction,
    read_instructions,
    read_phase,
)
from shared.model import OncoFedNet, model_for
from shared.propensity import (
    PROPENSITY_ARRAYS_KEY,
    PropensityModel,
    build_propensity_model,
    inverse_probability_weights,
)
from shared.provenance import running_app_hash
from shared.release_privacy import HARMONISATION_RELEASE, TEST_FIGURES_RELEASE, releases_under_dp
from shared.seeds import local_training_seed
from shared.site_config import SiteConfig
from shared.vocabulary import DICTIONARY

# A deployed SuperNode starts this module afresh for every message, so it imports only what every message
# needs (torch, flwr, numpy, pandas). Each handler imports the rest on first use: Opacus for training,
# scikit-learn / scikit-survival for evaluation, SHAP, matplotlib and the report templates for the site report.

logger = logging.getLogger(__name__)


def _model_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def train_round(site: Site, plan: RunConfig, stats: NormalisationStats, model: OncoFedNet, server_round: int,
                run_id: str, phase: PhaseInstruction, propensity: PropensityModel | None = None) -> dict[str, float]:
    """One round of (DP) local training of `model` in place; its figures, with the privacy spent so far.

    The noise is calibrated so that the rounds of this phase's budget group (the federated rounds, or every
    validation round: `planned-training-rounds`) together spend exactly the group's share of the site's ε
    (`validation-epsilon-share`); the ledger records each round with its group. Raises PrivacyBudgetExceeded
    before training when the round would take its group past its share or the site past its ε.
    With `propensity` (the released global propensity model) each patient's loss is inverse-probability weighted;
    with propensity weighting on, both groups share what the propensity model leaves (`outcome_epsilon`).
    """
    from client.training.dp_sgd import LocalTrainingPlan, PrivacyPlan, train_locally  # Opacus: on the first train message

    grid = SurvivalGrid.from_config(plan)
    cohort = encoded_part(site, "train", stats, grid)
    privacy, ledger, planned = None, None, None
    if plan.dp:
        delta = site.delta()
        from client.governance.release_privacy import planned_release_history

        planned = plan_round(outcome_epsilon(site.target_epsilon, plan), delta, plan.validation_epsilon_share,
                             phase.phase, phase.planned_rounds or plan.num_rounds, phase.validation_rounds,
                             len(cohort), plan.batch_size, plan.local_epochs,
                             releases=planned_release_history(site, plan))
        ledger = load_ledger(site.ledger_path, delta)
        check_budget(ledger, site.target_epsilon, planned.planned, planned.group, planned.group_budget)
        privacy = PrivacyPlan(noise_multiplier=planned.noise_multiplier, max_grad_norm=plan.max_grad_norm,
                              secure_mode=site.secure_mode, secret_noise=site.secret_dp_noise)
    local = LocalTrainingPlan.from_config(
        plan, seed=local_training_seed(plan.seed, server_round, site.site_id, phase.phase, phase.held_out_site),
        proximal_mu=plan.proximal_mu if plan.strategy == "fedprox" else 0.0)
    weights = None if propensity is None else inverse_probability_weights(propensity, cohort.inputs(),
                                                                          plan.propensity_weight_bound)
    result = train_locally(model, cohort, local, privacy, weights)
    metrics: dict[str, float] = {COUNT_KEY: len(cohort)}
    if not releases_under_dp(plan):  # the training loss is a figure of the training patients outside DP-SGD
        metrics[LOSS_KEYS["train"]] = result.mean_loss
    if ledger is not None and planned is not None:
        label = run_id if phase.phase == "federated" else f"{run_id}:{phase.label()}"
        ledger.entries.append(LedgerEntry(run_id=label, server_round=server_round,
                                          noise_multiplier=planned.noise_multiplier, sample_rate=result.sample_rate,
                                          steps=result.steps, epsilon_after=0.0, phase=planned.group))
        ledger.entries[-1].epsilon_after = ledger.epsilon()
        save_ledger(ledger, site.ledger_path)
        metrics |= {EPSILON_KEY: ledger.entries[-1].epsilon_after,
                    "epsilon-round": ledger.round_epsilon(label, server_round), "epsilon-budget": site.target_epsilon,
                    "epsilon-phase": ledger.epsilon(group=planned.group), "epsilon-phase-budget": planned.group_budget,
                    "delta": ledger.delta, "noise-multiplier": planned.noise_multiplier,
                    "sample-rate": result.sample_rate, "steps": result.steps}
    return metrics


def _received_model(message: Message, plan: RunConfig) -> OncoFedNet:
    """The global model an instruction carries, in the run's architecture."""
    model = model_for(plan)
    model.load_state_dict(message.content[MODEL_ARRAYS_KEY].to_torch_state_dict())
    return model


def _trained_reply(message: Message, site: Site, model: torch.nn.Module, train: Callable[[], dict[str, float]]
                   ) -> Message:
    """Train `model` in place and reply with it and its figures, or refuse when the site's budget would be passed."""
    try:
        metrics = train()
    except PrivacyBudgetExceeded as refused:
        return outbox.refusal(message, outbox.ERROR_BUDGET_EXHAUSTED, f"site {site.site_id}: {refused}")
    return outbox.reply(message, site_id=site.site_id, metrics=metrics, min_cell_size=site.min_cell_size,
                        arrays=ArrayRecord(model.state_dict()), expected_arrays=_model_shapes(model))


def _secure_mode_refusal(site: Site, plan: RunConfig, message: Message) -> Message | None:
    """A refusal when the site asks for Opacus's secure noise but its generator (torchcsprng) is missing."""
    from client.training.dp_sgd import secure_rng_available

    if plan.dp and site.secure_mode and not secure_rng_available():
        return outbox.refusal(message, outbox.ERROR_CONFIG, f"site {site.site_id}: secure-mode needs the torchcsprng "
                              f"package (Opacus's secure noise generator), which is not installed here; install it "
                              f"or run with secure-mode=false")
    return None


class _RebuiltOnUnpickling(ClientApp):
    """A ClientApp that pickles as the call that builds it (build_client_app's arguments), not its closures.

    Flower's Ray engine ships the ClientApp to a worker with every message; pickled by value, its handlers and mods
    came to about 48 KB and tens of milliseconds of the coordinator's process per message."""

    def __init__(self, mods: list[Mod], recipe: tuple[Mapping[str, Any] | None, list[Mod] | None]) -> None:
        super().__init__(mods=mods)
        self._recipe = recipe

    def __reduce__(self) -> tuple[Callable[..., ClientApp], tuple[Any, ...]]:
        return build_client_app, self._recipe


def build_client_app(overrides: Mapping[str, Any] | None = None, mods: list[Mod] | None = None) -> ClientApp:
    """A ClientApp; `overrides` stand in for the run configuration when the project's own command runs it.

    The site's audit log (client/governance/audit.py) is outermost: it records every instruction and the reply exactly as
    it leaves. Code approval (client/governance/approval.py) comes next, before anything opens the site's data. `mods` wrap
    the handlers inside the SecAgg+ mod (which passes every other message through), and client/flower/outbox.py's
    contain_failures is always innermost, so no exception's text is sent."""

    def local_config(context: Context) -> RunConfig:
        return RunConfig.from_mapping({**dict(context.run_config), **dict(overrides or {})})

    def audit_target(context: Context) -> AuditTarget:
        location = locate_site(context, local_config(context))
        return AuditTarget(site_id=location.site_id, path=location.state_dir / AUDIT_FILE,
                           app_sha256=running_app_hash())

    def approval_policy(context: Context) -> ApprovalPolicy:
        location = locate_site(context, local_config(context))
        return ApprovalPolicy(site_id=location.site_id, approved_apps=location.approved_apps,
                              config_file=location.config_file)

    def local_dictionary(context: Context) -> LocalDictionary:
        location = locate_site(context, local_config(context))
        path = SiteConfig.from_file(location.config_file).dictionary if location.config_file is not None else None
        return LocalDictionary(site_id=location.site_id, path=path)

    app = _RebuiltOnUnpickling(mods=[audit_mod(audit_target), approval_mod(approval_policy),
                                     dictionary_mod(local_dictionary), secure_aggregation_mod,
                                     *(mods or []), outbox.contain_failures], recipe=(overrides, mods))

    def site_of(context: Context) -> Site:
        site = open_site(context, local_config(context))
        if site.torch_threads is not None:  # this process serves one message; the cap is the site's to set
            torch.set_num_threads(site.torch_threads)
        return site

    def training_instruction(message: Message, context: Context
                             ) -> tuple[Site, RunConfig, NormalisationStats, int] | Message:
        """The site and what a training instruction asks (plan, feature scaling, round), or the site's refusal
        when it cannot train as asked (secure noise without its generator)."""
        site = site_of(context)
        plan, stats, server_round = read_instructions(message.content)
        refused = _secure_mode_refusal(site, plan, message)
        return refused if refused is not None else (site, plan, stats, server_round)

    @app.query("feature_summary")
    def feature_summary(message: Message, context: Context) -> Message:
        """Sums, counts and coarse histograms of the training split: enough to standardise, no rows."""
        if (problem := partition_count_problem(context, local_config(context))) is not None:
            return outbox.refusal(message, outbox.ERROR_CONFIG, problem)  # the run stops here and says why
        site = site_of(context)
        train = site.part("train")
        if len(train) < site.min_cell_size:
            return outbox.refusal(message, outbox.ERROR_DATA,
                                  f"site {site.site_id}: fewer training patients than the minimum cell size")
        plan = local_config(context)
        if releases_under_dp(plan):  # Gaussian noise, charged to the site's ledger (client/governance/release_privacy)
            from client.governance.release_privacy import charge_release, noisy_feature_summary

            try:
                sigma = charge_release(site, plan, str(context.run_id), HARMONISATION_RELEASE)
            except PrivacyBudgetExceeded as refused:
                return outbox.refusal(message, outbox.ERROR_BUDGET_EXHAUSTED, f"site {site.site_id}: {refused}")
            summary = noisy_feature_summary(train, site.min_cell_size, sigma)
        else:
            summary = summarise_site(train, min_cell_size=site.min_cell_size)
        metrics = to_metric_record_dict(summary)
        return outbox.reply(message, site_id=site.site_id, metrics=metrics, min_cell_size=site.min_cell_size,
                            data_fingerprint=data_fingerprint(site.patients, site.state_dir))

    @app.train()
    def train(message: Message, context: Context) -> Message:
        if isinstance(instruction := training_instruction(message, context), Message):
            return instruction
        site, plan, stats, server_round = instruction
        phase = read_phase(message.content)
        model = _received_model(message, plan)
        propensity = None
        if plan.propensity_weighting and PROPENSITY_ARRAYS_KEY in message.content:
            propensity = build_propensity_model(plan.seed)
            propensity.load_state_dict(message.content[PROPENSITY_ARRAYS_KEY].to_torch_state_dict())
        return _trained_reply(message, site, model, lambda: train_round(site, plan, stats, model, server_round,
                                                                          str(context.run_id), phase, propensity))

    @app.train("propensity")
    def train_propensity(message: Message, context: Context) -> Message:
        """One round of the propensity model's federation (shared/propensity.py), spent through the ledger."""
        if isinstance(instruction := training_instruction(message, context), Message):
            return instruction
        site, plan, stats, server_round = instruction
        model = build_propensity_model(plan.seed)
        model.load_state_dict(message.content[MODEL_ARRAYS_KEY].to_torch_state_dict())
        return _trained_reply(message, site, model, lambda: train_propensity_round(site, plan, stats, model,
                                                                                     server_round, str(context.run_id)))

    @app.train("local_only")
    def train_local_only(message: Message, context: Context) -> Message:
        """A model from this site's data alone (same start, rounds, epochs and DP plan as the federation).

        Its test figures always go back (the local-only reference); its parameters only when the consortium
        opted in to sharing local models (share-local-models) for the cross-site matrix.
        """
        if isinstance(instruction := training_instruction(message, context), Message):
            return instruction
        site, plan, stats, _ = instruction
        phase = read_phase(message.content)
        grid = SurvivalGrid.from_config(plan)
        model = _received_model(message, plan)
        metrics: dict[str, float] = {}
        try:
            for local_round in range(1, plan.num_rounds + 1):
                if local_round > 1:  # a fresh module each round: Opacus hooks the one it trains
                    trained, model = model, model_for(plan)
                    model.load_state_dict(trained.state_dict())
                metrics = train_round(site, plan, stats, model, local_round, str(context.run_id), phase)
        except PrivacyBudgetExceeded as refused:
            return outbox.refusal(message, outbox.ERROR_BUDGET_EXHAUSTED, f"site {site.site_id}: {refused}")
        from client.evaluation.validation import headline_intervals
        from shared.metrics import EvaluationSettings

        test = site.part("test")
        settings = EvaluationSettings.from_config(plan, site.min_cell_size)
        metrics = {k: v for k, v in metrics.items() if k != LOSS_KEYS["train"]} | {COUNT_KEY: len(test)}
        metrics |= headline_intervals(model, test, stats, grid, settings, np.random.default_rng(plan.seed))
        if not plan.share_local_models:
            return outbox.reply(message, site_id=site.site_id, metrics=metrics, min_cell_size=site.min_cell_size)
        return outbox.reply(message, site_id=site.site_id, metrics=metrics, min_cell_size=site.min_cell_size,
                            arrays=ArrayRecord(model.state_dict()), expected_arrays=_model_shapes(model))

    @app.evaluate()
    def evaluate(message: Message, context: Context) -> Message:
        site = site_of(context)
        plan, stats, server_round = read_instructions(message.content)
        split = str(message.content[PLAN_KEY].get(SPLIT_KEY, "validation"))
        if releases_under_dp(plan) and split != "test":
            return outbox.refusal(message, outbox.ERROR_CONFIG, f"site {site.site_id}: under release-epsilon-share "
                                  f"only the final test figures are released; {split} figures are not sent")
        patients = site.part(split)
        if len(patients) < site.min_cell_size:
            return outbox.refusal(message, outbox.ERROR_DATA, f"site {site.site_id}: the {split} split is "
                                  f"smaller than the minimum cell size; nothing can be reported")
        from client.evaluation.cohort import evaluate_cohort  # scikit-learn and scikit-survival: on first evaluation

        grid = SurvivalGrid.from_config(plan)
        model = _received_model(message, plan)
        phase = read_phase(message.content)
        personalised = None
        if (split == "test" and plan.site_personalisation != "none" and "response" in DICTIONARY.endpoints
                and phase.site_report and plan.site_reports):
            from client.training.personalise import personalise_at_site

            personalised = personalise_at_site(model, site.part("train"), stats, grid, plan.site_personalisation,
                                               plan.site_personalisation_ridge, site.min_cell_size)
            logger.info("site %s: response head refitted on its training split (%s, ridge %g): %s", site.site_id,
                        plan.site_personalisation, plan.site_personalisation_ridge,
                        "not fitted (too few training patients with a known response)" if personalised is None
                        else "shown in its report beside the consortium model, kept at the site")
        if split == "test" and plan.site_recalibration != "none" and "response" in DICTIONARY.endpoints:
            from client.training.recalibration import recalibrate_at_site

            model, fitted = recalibrate_at_site(model, site.part("validation"), stats, grid, plan.site_recalibration,
                                                plan.site_recalibration_ridge, site.min_cell_size)
            logger.info("site %s: own response recalibration on its validation split: %s", site.site_id,
                        "not applied (too few validation patients, or no ranking left)" if fitted is None else
                        f"a = {fitted[0]:.3f}, b = {fitted[1]:+.3f} (kept at the site)")
        figures = evaluate_cohort(model, patients, encoded_part(site, split, stats, grid), grid,
                                  site.min_cell_size, split)
        if split == "test" and phase.intervals:
            from client.evaluation.validation import headline_intervals
            from shared.metrics import EvaluationSettings

            settings = EvaluationSettings.from_config(plan, site.min_cell_size)
            figures |= headline_intervals(model, patients, stats, grid, settings, np.random.default_rng(plan.seed))
        if split == "test" and phase.site_report and plan.site_reports:
            from client.evaluation.report import report_at_site

            try:
                figures |= report_at_site(site, model, stats, grid, plan, str(context.run_id), server_round,
                                          personalised=personalised)
            except Exception:  # the report is the site's own output; the federation's test figures still go out
                logger.exception("site %s: the site report could not be written", site.site_id)
        if releases_under_dp(plan):
            from client.governance.release_privacy import charge_release, noisy_test_figures

            try:
                sigma = charge_release(site, plan, str(context.run_id), TEST_FIGURES_RELEASE)
            except PrivacyBudgetExceeded as refused:
                return outbox.refusal(message, outbox.ERROR_BUDGET_EXHAUSTED, f"site {site.site_id}: {refused}")
            figures = noisy_test_figures(figures, patients, site.min_cell_size, sigma)
        return outbox.reply(message, site_id=site.site_id, metrics=figures, min_cell_size=site.min_cell_size)

    @app.evaluate("external")
    def external(message: Message, context: Context) -> Message:
        """A registered model evaluated without training (client/evaluation/evaluation_only.py); no ε on weights."""
        from client.evaluation.evaluation_only import evaluate_registered_model

        return evaluate_registered_model(message, site_of(context), str(context.run_id))

    @app.evaluate("recalibration")
    def recalibration(message: Message, context: Context) -> Message:
        """Sums for one Newton step of the response recalibration over the validation split (no rows, no ε)."""
        from client.training.recalibration import recalibration_sums, response_logits

        site = site_of(context)
        plan, stats, _ = read_instructions(message.content)
        grid = SurvivalGrid.from_config(plan)
        model = _received_model(message, plan)
        logit, responder = response_logits(model, site.part("validation"), stats, grid)
        if len(logit) < site.min_cell_size:
            return outbox.refusal(message, outbox.ERROR_DATA, f"site {site.site_id}: fewer validation patients with "
                                  f"a known response than the minimum cell size; no recalibration sums are sent")
        a = float(message.content[PLAN_KEY][RECALIBRATION_SLOPE_KEY])
        b = float(message.content[PLAN_KEY][RECALIBRATION_INTERCEPT_KEY])
        sums = recalibration_sums(logit, responder, a, b)
        return outbox.reply(message, site_id=site.site_id, metrics=sums, min_cell_size=site.min_cell_size)

    return app


app = build_client_app()
