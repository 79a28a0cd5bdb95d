"""The federation: harmonise features, train round after round (server/coordinator.py), evaluate every site.

Written as an explicit loop over the coordinator's round function (rather than Strategy.start)
so that every round is checkpointed, a run resumes at the next round, and each site's own figures are
kept beside the weighted means.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from server.central_privacy import central_epsilon
from server.checkpoint import ServerState, load_checkpoint, save_checkpoint
from server.consortium_report import ReferenceRow, write_consortium_report
from server.consortium_summary import last_training_figures, summary_from_results
from server.coordinator import Coordinator, SiteReplies
from server.propensity import propensity_phase
from server.provenance import final_provenance, resumed, run_provenance
from server.recalibration import recalibrate_response
from server.strategies import build_strategy, restore_strategy_state, strategy_state
from server.validation import budget_split, headline_only, planned_training_rounds, run_validation
from shared.config import RunConfig
from shared.messages import COUNT_KEY, PhaseInstruction
from shared.model import model_for, fold_response_recalibration
from shared.propensity import PROPENSITY_ARRAYS_KEY
from shared.release_privacy import releases_under_dp
from shared.run_result import RoundRecord, RunResult
from shared.vocabulary import DICTIONARY

Progress = Callable[[str], None]
# an experiment's reference rows for the consortium report, and their figures for metrics.json (by row, by site)
References = Callable[[RunConfig], tuple[list[ReferenceRow], dict[str, dict[str, dict[str, float]]]]]


def weighted_means(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of each figure over the sites that report it, weighted by their patient counts.

    A count released under DP can come back suppressed (0): that site weighs nothing, and a figure no site with a
    positive count reports has no mean."""
    keys = {k for f in figures.values() for k in f if k != COUNT_KEY}
    means = {}
    for key in sorted(keys):
        pairs = [(f[key], f.get(COUNT_KEY, 1.0)) for f in figures.values() if key in f]
        total = sum(w for _, w in pairs if w > 0)
        if total > 0:
            means[key] = sum(v * w for v, w in pairs if w > 0) / total
    return means


def run_federation(grid: Grid, config: RunConfig, run_dir: Path, progress: Progress = print,
                   references: References | None = None) -> RunResult:
    """Run (or resume) every round, checkpoint each, then evaluate the final model on every site's test data.

    `references` (simulations only: pooled centralised training, the generator's oracle) gives reference rows for
    the consortium report and their figures; they are added before metrics.json is written, once."""
    started_at, phase_started = time.time(), time.perf_counter()
    seconds: dict[str, float] = {}  # where the run's time goes, phase by phase (metrics.json "seconds")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_flower(), indent=2))
    coordinator = Coordinator(grid, config, progress)
    strategy = build_strategy(config)
    if config.resume_from:
        state, model_state, saved_strategy = load_checkpoint(run_dir)
        restore_strategy_state(strategy, saved_strategy)
        progress(f"resuming {run_dir} after round {state.completed_round}")
        if state.provenance is not None:
            state = state.model_copy(update={"provenance": resumed(state.provenance)})
        if state.recalibration is not None:  # train on from the trained model; the end recalibrates afresh
            a, b = state.recalibration
            model_state = fold_response_recalibration(model_state, 1 / a, -b / a)
            state = state.model_copy(update={"recalibration": None})
        coordinator.stats = state.normalisation
    else:
        fingerprints: dict[str, str] = {}
        stats = coordinator.harmonise(fingerprints)
        model_state = model_for(config).state_dict()
        state = ServerState(completed_round=0, normalisation=stats, history=[],
                            provenance=run_provenance(config, fingerprints))
    arrays = ArrayRecord(model_state)
    planned = planned_training_rounds(config, len(coordinator.node_ids()))
    propensity = propensity_phase(coordinator, run_dir)
    released = {} if propensity is None else {PROPENSITY_ARRAYS_KEY: propensity}
    seconds["sites' first message and harmonisation"], phase_started = time.perf_counter() - phase_started, time.perf_counter()
    phase = PhaseInstruction(planned_rounds=planned.federated, validation_rounds=planned.validation)
    for server_round in range(state.completed_round + 1, config.num_rounds + 1):
        trained = coordinator.train_round(strategy, server_round, arrays, phase, released=released)
        if not trained.aggregated:
            raise RuntimeError(f"round {server_round}: {len(trained.replies.figures)} site(s) usable, min-sites is "
                               f"{config.min_sites}; sites out: {trained.replies.missing}. The last checkpoint is "
                               f"kept; fix the sites and resume with resume-from={run_dir}")
        arrays = trained.arrays
        evaluate_started = time.perf_counter()
        evaluated = (SiteReplies() if releases_under_dp(config)  # only the final test figures are released
                     else coordinator.evaluate_round(strategy, server_round, arrays, "validation"))
        record = RoundRecord(
            round=server_round,
            train=trained.replies.figures, validation=evaluated.figures, update_distance=trained.distances,
            validation_mean=weighted_means(evaluated.figures),
            missing={**trained.replies.missing,
                     **{s: r for s, r in evaluated.missing.items() if s not in trained.replies.missing}},
            seconds={"train": trained.train_seconds, "aggregate": trained.aggregate_seconds,
                     "evaluate": time.perf_counter() - evaluate_started},
        )
        state = ServerState(completed_round=server_round, normalisation=state.normalisation,
                            history=[*state.history, record], provenance=state.provenance)
        save_checkpoint(run_dir, state, arrays.to_torch_state_dict(), strategy_state(strategy))
        progress(_round_line(record, config.num_rounds))
    seconds["rounds"], phase_started = time.perf_counter() - phase_started, time.perf_counter()
    recalibration = None
    # the final test and every later phase see the recalibrated model; a consortium without a response endpoint
    # has nothing to recalibrate
    if config.recalibrate_response and "response" in DICTIONARY.endpoints:
        arrays, recalibration = recalibrate_response(coordinator, arrays)
        if recalibration.applied:
            state = state.model_copy(update={"recalibration": (recalibration.slope, recalibration.intercept)})
            save_checkpoint(run_dir, state, arrays.to_torch_state_dict(), strategy_state(strategy), round_file=False)
        progress(_recalibration_line(recalibration))
        seconds["response recalibration"], phase_started = time.perf_counter() - phase_started, time.perf_counter()
    final = coordinator.evaluate_round(strategy, config.num_rounds, arrays, "test")
    seconds["final evaluation and site reports"] = time.perf_counter() - phase_started
    progress(f"final evaluation: {len(final.figures)} site(s) tested and wrote their reports "
             f"({seconds['final evaluation and site reports']:.1f} s)"
             + (f" | out: {', '.join(final.missing)}" if final.missing else ""))
    results = {"config": config.to_flower(), "rounds": state.history, "test": final.figures,
               "test_mean": weighted_means(headline_only(final.figures)), "test_missing": final.missing,
               "epsilon": _epsilon_by_site(state.history), "budget_split": budget_split(config, planned)}
    if recalibration is not None:
        results["recalibration"] = recalibration.model_dump()
    if (central := central_epsilon(config, state.history)) is not None:
        results["central_dp"] = central
    validation, validation_seconds = run_validation(coordinator, ArrayRecord(model_for(config).state_dict()),
                                                    final.figures, planned)
    if validation is not None:
        seconds |= validation_seconds
        results["validation"] = validation
        results["epsilon"] = results["epsilon"] | validation.epsilon
    if state.provenance is not None:
        results["provenance"] = final_provenance(state.provenance, state.completed_round, results["epsilon"],
                                                 results["test_mean"]).model_dump()
    rows: list[ReferenceRow] = []
    if references is not None:
        started = time.perf_counter()
        rows, results["references"] = references(config)
        seconds["references"] = time.perf_counter() - started
        progress(f"references (pooled centralised, oracle) ({seconds['references']:.1f} s)")
    result = RunResult(**results, started_at=started_at, seconds=seconds)
    result.write(run_dir)
    try:
        write_consortium_report(run_dir / "consortium_report.html", summary_from_results(result, run_dir, rows))
    except Exception as error:  # the run's figures are already saved; say what failed and carry on
        progress(f"consortium report not written: {type(error).__name__}: {error}")
    return result


def _recalibration_line(recalibration) -> str:
    if not recalibration.applied:
        return (f"response recalibration not applied: {recalibration.reason}"
                + (f" | out: {recalibration.missing}" if recalibration.missing else ""))
    return (f"response recalibration: p = σ({recalibration.slope:.3f}·logit {recalibration.intercept:+.3f}) on "
            f"{recalibration.validation_patients} validation patients of {len(recalibration.sites)} site(s)"
            + (f" | out: {', '.join(recalibration.missing)}" if recalibration.missing else ""))


def _epsilon_by_site(history: list[RoundRecord]) -> dict[str, float]:
    return {site: f["epsilon"] for site, f in last_training_figures(history).items() if "epsilon" in f}


def _round_line(record: RoundRecord, num_rounds: int) -> str:
    mean = record.validation_mean
    eps = [f["epsilon"] for f in record.train.values() if "epsilon" in f]
    show = lambda key: f"{mean[key]:.3f}" if key in mean and math.isfinite(mean[key]) else "n/a"  # noqa: E731
    missing = f" | out: {', '.join(record.missing)}" if record.missing else ""
    return (f"round {record.round}/{num_rounds}: {len(record.train)} sites | val response AUC {show('response-auc')}"
            f" | PFS C {show('pfs-cindex')} | OS C {show('os-cindex')}"
            f" | max ε {max(eps) if eps else float('nan'):.2f} | {sum(record.seconds.values()):.1f} s{missing}")

