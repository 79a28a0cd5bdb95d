"""Federated validation after the run: local-only models and the cross-site matrix, leave-one-site-out.

Every phase runs through the same Flower Grid and the same strategy as the federation; sites evaluate on
their own test patients and send aggregate figures only. Each training round of every phase spends the
sites' privacy budgets. The consortium splits each site's ε (`validation-epsilon-share`): the validation
phases together may spend that share, the federated model the rest. The coordinator tells every site, from
the first round, how many training rounds each group will do in the whole run (`planned_training_rounds`)
and the sites calibrate each group's noise to its own share over its own rounds (client/training/privacy.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from flwr.app import ArrayRecord

from server.coordinator import Coordinator, SubsetGrid
from server.strategies import build_strategy
from shared.config import RunConfig
from shared.run_result import LeaveOneSiteOutRow, LocalModels, ValidationResult
from shared.messages import (
    EPSILON_KEY,
    LOCAL_TRAINING,
    MODEL_ARRAYS_KEY,
    SHAP_COUNT_KEY,
    SHAP_KEY,
    PhaseInstruction,
)

GLOBAL_MODEL = "Federated (global)"


def local_model_label(site: str) -> str:
    return f"Local: {site}"


def runs_local_models(config: RunConfig) -> bool:
    return config.share_local_models or config.local_references


def loso_possible(config: RunConfig, num_sites: int) -> bool:
    """A leave-one-site-out federation needs min-sites sites besides the one left out."""
    return config.leave_one_site_out and num_sites - 1 >= max(config.min_sites, 1)


def loso_rounds(config: RunConfig) -> int:
    return config.loso_rounds or config.num_rounds


@dataclass(frozen=True)
class TrainingRounds:
    """Training rounds each site does in this run, per budget group: the numbers its DP noise must cover."""

    federated: int
    validation: int

    @property
    def total(self) -> int:
        return self.federated + self.validation



def planned_training_rounds(config: RunConfig, num_sites: int) -> TrainingRounds:
    """Federated rounds; validation rounds = the local-only model's rounds plus one leave-one-site-out federation
    for each of the other sites (a site trains in every LOSO federation but its own)."""
    validation = 0
    if runs_local_models(config):
        validation += config.num_rounds
    if loso_possible(config, num_sites):
        validation += loso_rounds(config) * (num_sites - 1)
    return TrainingRounds(federated=config.num_rounds, validation=validation)


def validation_phase(phase: str, planned: TrainingRounds, held_out_site: str = "") -> PhaseInstruction:
    """A validation phase's instruction: its noise covers every validation round of the run."""
    return PhaseInstruction(phase=phase, planned_rounds=planned.validation, validation_rounds=planned.validation,
                            held_out_site=held_out_site)


def budget_split(config: RunConfig, planned: TrainingRounds) -> dict:
    """What metrics.json and the consortium report say about how each site's ε was split.

    The validation phases may spend validation-epsilon-share × ε; the federated model gets the rest of the
    composed budget, which each site computes from its own sampling (client/training/privacy.py plan_round) and reports
    as `epsilon-phase-budget` in its training replies.
    """
    share = config.validation_epsilon_share if planned.validation else 0.0
    return {"dp": config.dp, "target_epsilon": config.target_epsilon, "validation_epsilon_share": share,
            "validation_epsilon": config.target_epsilon * share,
            "federated_rounds": planned.federated, "validation_rounds": planned.validation}


def run_local_models(coordinator: Coordinator, initial: ArrayRecord, planned: TrainingRounds) -> dict:
    """Each site trains alone from the federation's initial weights; its own test figures, and its model if shared.

    One instruction per site covers all its rounds (it aggregates with nobody), so this is not a federated round."""
    config = coordinator.config
    started = time.perf_counter()
    records = coordinator.records(validation_phase("local", planned))
    reference = {k: v.numpy() for k, v in initial.items()} if config.share_local_models else None
    replies = coordinator.collect(coordinator.messages(initial, records, coordinator.node_ids(), LOCAL_TRAINING),
                                  config.round_timeout_s * config.num_rounds, reference)
    models = {}
    if config.share_local_models:
        models = {coordinator.names[reply.metadata.src_node_id]: reply.content[MODEL_ARRAYS_KEY]
                  for reply in replies.accepted}
    coordinator.progress(f"local-only models: {len(replies.figures)} site(s) trained for {config.num_rounds} rounds "
                         f"({time.perf_counter() - started:.1f} s)" + (f" | out: {', '.join(replies.missing)}"
                                                                        if replies.missing else ""))
    return {"figures": replies.figures, "missing": replies.missing, "models": models}


def run_cross_site(coordinator: Coordinator, local_models: dict[str, ArrayRecord],
                   global_test: dict[str, dict[str, float]]) -> dict[str, dict[str, dict[str, float]]]:
    """Figures of every shared model at every site: {model label: {test site: figures}}.

    The global model's row is its final test evaluation (already done); each local model is sent to every site.
    """
    started = time.perf_counter()
    matrix = {GLOBAL_MODEL: global_test}
    for site, arrays in sorted(local_models.items()):
        matrix[local_model_label(site)] = coordinator.evaluate_model(arrays, PhaseInstruction(phase="local")).figures
    coordinator.progress(f"cross-site matrix: {len(matrix)} models × {len(global_test)} sites "
                         f"({time.perf_counter() - started:.1f} s)")
    return matrix


def run_leave_one_site_out(coordinator: Coordinator, initial: ArrayRecord, planned: TrainingRounds
                           ) -> list[LeaveOneSiteOutRow]:
    """For every site: a federation of the others (same strategy, start, DP plan, screens and robust aggregation:
    the coordinator's round function), tested at the left-out site.

    The held-out site receives no training instruction in its own LOSO federation and no update of it enters
    the model (only replies from the other sites are aggregated); it only evaluates the final LOSO model.
    """
    config = coordinator.config
    nodes = sorted(coordinator.node_ids())
    results = []
    for held_out in nodes:
        started = time.perf_counter()
        site = coordinator.site_name(held_out)
        others = SubsetGrid(coordinator.grid, [n for n in nodes if n != held_out])
        strategy = build_strategy(config)
        phase = validation_phase("loso", planned, held_out_site=site)
        arrays, trained_on, missing, completed, spent = initial, set(), {}, 0, {}
        for server_round in range(1, loso_rounds(config) + 1):
            trained = coordinator.train_round(strategy, server_round, arrays, phase, grid=others)
            missing |= trained.replies.missing
            if not trained.aggregated:
                break
            trained_on |= set(trained.replies.figures)
            spent |= {s: f[EPSILON_KEY] for s, f in trained.replies.figures.items() if EPSILON_KEY in f}
            arrays = trained.arrays
            completed = server_round
        row = LeaveOneSiteOutRow(held_out_site=site, trained_on=sorted(trained_on), rounds=completed,
                                 missing=missing, epsilon=spent)
        if completed:
            evaluated = coordinator.evaluate_model(arrays, phase)
            row.held_out = evaluated.figures.get(site, {})
            row.in_distribution = {s: f for s, f in evaluated.figures.items() if s != site}
            row.missing |= {s: r for s, r in evaluated.missing.items() if s not in missing}
        results.append(row)
        coordinator.progress(f"leave-one-site-out without {site}: {completed} round(s) on {len(trained_on)} site(s) "
                             f"({time.perf_counter() - started:.1f} s)")
    return results


def pool_shap(test_figures: dict[str, dict[str, float]]) -> dict:
    """The consortium's global importance: each site's mean |SHAP| per field, weighted by patients explained.

    {"patients": {site: n}, "importance": {output: {field: pooled mean}}}; sites that shared no SHAP are left out.
    """
    patients = {site: int(f[SHAP_COUNT_KEY]) for site, f in test_figures.items() if f.get(SHAP_COUNT_KEY, 0) > 0}
    sums: dict[str, dict[str, float]] = {}
    weights: dict[str, dict[str, float]] = {}
    for site, count in patients.items():
        for key, value in test_figures[site].items():
            if (match := SHAP_KEY.match(key)) is None:
                continue
            output, field = match.groups()
            sums.setdefault(output, {})[field] = sums.get(output, {}).get(field, 0.0) + count * value
            weights.setdefault(output, {})[field] = weights.get(output, {}).get(field, 0.0) + count
    importance = {output: {field: sums[output][field] / weights[output][field] for field in sorted(sums[output])}
                  for output in ("response", "pfs", "os") if output in sums}
    return {"patients": patients, "importance": importance}


def headline_only(figures: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Site figures without the subgroup and SHAP keys (those are not averaged across sites by patient count)."""
    return {site: {k: v for k, v in f.items() if not k.startswith(("sub:", "shap:", "n-shap"))}
            for site, f in figures.items()}


def run_validation(coordinator: Coordinator, initial: ArrayRecord, global_test: dict[str, dict[str, float]],
                   planned: TrainingRounds) -> tuple[ValidationResult | None, dict[str, float]]:
    """The phases after the federation that the run configuration asks for (None when none), and their seconds.

    The result is what metrics.json keeps under "validation": the local-only figures, the cross-site matrix, the
    leave-one-site-out rows, and each site's ε after every phase (the budget they all share).
    """
    config = coordinator.config
    num_sites = len(coordinator.node_ids())
    if config.leave_one_site_out and not loso_possible(config, num_sites):
        coordinator.progress(f"leave-one-site-out skipped: {num_sites} site(s) leave fewer than "
                             f"min-sites={config.min_sites} to train without one")
    if not runs_local_models(config) and not loso_possible(config, num_sites):
        return None, {}
    result = ValidationResult(planned_training_rounds=planned.total, budget_split=budget_split(config, planned))
    epsilon: dict[str, float] = {}
    seconds: dict[str, float] = {}  # per phase, for the run's closing summary (metrics.json "seconds")
    if runs_local_models(config):
        started = time.perf_counter()
        local = run_local_models(coordinator, initial, planned)
        result.local = LocalModels(figures=local["figures"], missing=local["missing"],
                                   shared_models=sorted(local["models"]))
        epsilon |= {s: f[EPSILON_KEY] for s, f in local["figures"].items() if EPSILON_KEY in f}
        seconds["local-only"] = time.perf_counter() - started
        if config.share_local_models:
            started = time.perf_counter()
            result.cross_site = run_cross_site(coordinator, local["models"], global_test)
            seconds["cross-site"] = time.perf_counter() - started
    if loso_possible(config, num_sites):
        started = time.perf_counter()
        result.leave_one_site_out = run_leave_one_site_out(coordinator, initial, planned)
        seconds["leave-one-site-out"] = time.perf_counter() - started
        for row in result.leave_one_site_out:
            for site, spent in row.epsilon.items():
                epsilon[site] = max(spent, epsilon.get(site, 0.0))
    result.epsilon = epsilon
    return result, seconds
