"""The coordinator's round loop: harmonise features, train with a Flower strategy, evaluate every site.

Written as an explicit loop over the strategy's configure/aggregate methods (rather than Strategy.start)
so that every round is checkpointed, a run resumes at the next round, and each site's own figures are
kept beside the weighted means.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from server.central_privacy import central_epsilon
from server.checkpoint import ServerState, load_checkpoint, save_checkpoint
from server.propensity import propensity_phase
from server.consortium_report import write_consortium_report
from server.consortium_summary import last_training_figures, summary_from_results
from server.provenance import final_provenance, resumed, run_provenance
from server.recalibration import recalibrate_response
from server.screening import oversized_updates, update_distance, update_problem
from server.secure_aggregation import secure_train_round
from server.strategies import build_strategy, restore_strategy_state, strategy_state
from server.validation import budget_split, headline_only, planned_training_rounds, run_validation
from shared.config import RunConfig
from shared.encoding import SurvivalGrid
from shared.harmonisation import NormalisationStats, from_metric_record_dict, pool_summaries
from shared.messages import DATA_FINGERPRINT_KEY, NORMALISATION_KEY, PhaseInstruction, instruction_records
from shared.model import build_model, fold_response_recalibration
from shared.propensity import PROPENSITY_ARRAYS_KEY
from shared.release_privacy import releases_under_dp

Progress = Callable[[str], None]


@dataclass
class SiteReplies:
    """Replies of one exchange, split into usable figures per site and sites that sat out (and why)."""

    accepted: list[Message] = field(default_factory=list)
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


def _site_name(message: Message, node: int, names: dict[int, str]) -> str:
    if not message.has_error() and "site" in message.content:
        names[node] = str(message.content["site"]["site-id"])
    return names.get(node, f"node-{node}")


def collect(grid: Grid, messages: Iterable[Message], timeout: float, names: dict[int, str],
            reference: dict[str, np.ndarray] | None = None) -> SiteReplies:
    """Each site's reply, or why it has none: an error, a timeout, or (a site seen earlier in this run) offline.

    Replies are matched to sites through the message they answer: an error the SuperLink writes for an
    unreachable node comes from the SuperLink itself, not from the node.
    """
    messages = list(messages)
    replies = list(grid.send_and_receive(messages, timeout=timeout))
    destination = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
    result = SiteReplies()
    answered = set()
    for reply in replies:
        node = destination.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        site = _site_name(reply, node, names)
        answered.add(node)
        if reply.has_error():
            result.missing[site] = reply.error.reason or f"error code {reply.error.code}"
            continue
        if reference is not None:
            problem = update_problem(reply.content["arrays"], reference)
            if problem:
                result.missing[site] = f"update rejected: {problem}"
                continue
        result.accepted.append(reply)
        result.figures[site] = {k: float(v) for k, v in reply.content["metrics"].items()}
    for message in messages:
        if message.metadata.dst_node_id not in answered:
            site = names.get(message.metadata.dst_node_id, f"node-{message.metadata.dst_node_id}")
            result.missing[site] = f"no reply within {timeout:.0f} s"
    for node, site in names.items():
        if node not in destination.values() and site not in result.figures and site not in result.missing:
            result.missing[site] = "not connected: its SuperNode is offline"
    return result


def _reject_oversized(replies: SiteReplies, reference: dict[str, np.ndarray], ratio: float,
                      progress: Progress) -> dict[str, float]:
    """Leave out updates implausibly far from the global model (a scaled or runaway site); say so."""
    sites = [str(m.content["site"]["site-id"]) for m in replies.accepted]  # accepted replies name their site
    distances = {site: update_distance(m.content["arrays"], reference) for site, m in zip(sites, replies.accepted)}
    rejected = oversized_updates(distances, ratio)
    for site, reason in rejected.items():
        progress(f"{site}: {reason}")
        replies.missing[site] = reason
        replies.figures.pop(site, None)
    replies.accepted = [m for site, m in zip(sites, replies.accepted) if site not in rejected]
    return distances


def weighted_means(figures: dict[str, dict[str, float]]) -> dict[str, float]:
    """Mean of each figure over the sites that report it, weighted by their patient counts."""
    keys = {k for f in figures.values() for k in f if k != "num-examples"}
    means = {}
    for key in sorted(keys):
        pairs = [(f[key], f.get("num-examples", 1.0)) for f in figures.values() if key in f]
        means[key] = sum(v * w for v, w in pairs) / sum(w for _, w in pairs)
    return means


def _with_records(messages: Iterable[Message], records: dict[str, ConfigRecord]) -> list[Message]:
    messages = list(messages)
    for message in messages:
        for key, record in records.items():
            message.content[key] = record
    return messages


def harmonise(grid: Grid, config: RunConfig, names: dict[int, str],
              fingerprints: dict[str, str] | None = None) -> NormalisationStats:
    """Pool every site's feature sums and counts into one scaling; no row leaves a site.

    `fingerprints` receives each site's data fingerprint (a keyed hash computed at the site) for provenance."""
    nodes = wait_for_sites(grid, config.min_sites, config.round_timeout_s)
    query = [Message(RecordDict({"config": ConfigRecord({"server-round": 0})}), dst_node_id=node,
                     message_type=f"{MessageType.QUERY}.feature_summary") for node in nodes]
    replies = collect(grid, query, config.round_timeout_s, names)
    if len(replies.accepted) < config.min_sites:
        raise RuntimeError(f"only {len(replies.accepted)} site(s) sent feature statistics, "
                           f"min-sites is {config.min_sites}: {replies.missing}")
    if fingerprints is not None:
        fingerprints |= {str(m.content["site"]["site-id"]): str(m.content["site"][DATA_FINGERPRINT_KEY])
                         for m in replies.accepted if DATA_FINGERPRINT_KEY in m.content["site"]}
    return pool_summaries([from_metric_record_dict(dict(m.content["metrics"])) for m in replies.accepted])


def wait_for_sites(grid: Grid, min_sites: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < min_sites:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(nodes)} site(s) connected after {timeout:.0f} s; min-sites is {min_sites}")
        time.sleep(0.5)
    return nodes


def run_federation(grid: Grid, config: RunConfig, run_dir: Path, progress: Progress = print) -> dict:
    """Run (or resume) every round, checkpoint each, then evaluate the final model on every site's test data."""
    started_at, phase_started = time.time(), time.perf_counter()
    seconds: dict[str, float] = {}  # where the run's time goes, phase by phase (metrics.json "seconds")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(config.to_flower(), indent=2))
    strategy = build_strategy(config)
    names: dict[int, str] = {}
    grid_days = SurvivalGrid(config.survival_interval_days, config.survival_horizon_days)
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
    else:
        fingerprints: dict[str, str] = {}
        stats = harmonise(grid, config, names, fingerprints)
        model_state = build_model(grid_days.num_intervals, config.hidden_size, config.seed).state_dict()
        state = ServerState(completed_round=0, normalisation=stats, history=[],
                            provenance=run_provenance(config, fingerprints))
    arrays = ArrayRecord(model_state)
    planned = planned_training_rounds(config, len(list(grid.get_node_ids())))
    propensity = propensity_phase(grid, config, state.normalisation, names, collect, run_dir, progress)
    released = {} if propensity is None else {PROPENSITY_ARRAYS_KEY: propensity}
    seconds["sites' first message and harmonisation"], phase_started = time.perf_counter() - phase_started, time.perf_counter()
    for server_round in range(state.completed_round + 1, config.num_rounds + 1):
        started = time.perf_counter()
        reference = {k: v.numpy() for k, v in arrays.items()}  # this round's global model
        phase = PhaseInstruction(planned_rounds=planned.federated, validation_rounds=planned.validation)
        records = instruction_records(config, state.normalisation, **phase.records())
        if config.secure_aggregation:  # SecAgg+: only the mean is seen, so no per-site screening is possible
            secure = secure_train_round(grid, config, arrays, records, server_round, names)
            trained, distances = SiteReplies(figures=secure.figures, missing=secure.missing), {}
        else:
            train_messages = _with_records(strategy.configure_train(server_round, arrays, records["config"], grid),
                                           {NORMALISATION_KEY: records[NORMALISATION_KEY], **released})
            trained = collect(grid, train_messages, config.round_timeout_s, names, reference)
            distances = _reject_oversized(trained, reference, config.update_norm_ratio, progress)
        if len(trained.figures) < config.min_sites:
            raise RuntimeError(f"round {server_round}: {len(trained.figures)} site(s) usable, min-sites is "
                               f"{config.min_sites}; sites out: {trained.missing}. The last checkpoint is kept; "
                               f"fix the sites and resume with resume-from={run_dir}")
        if config.aggregation == "trimmed-mean" and int(config.trim_fraction * len(trained.accepted)) == 0:
            progress(f"round {server_round}: trim-fraction {config.trim_fraction} cuts no site out of "
                     f"{len(trained.accepted)}, so this is a plain (unweighted) mean; use trim-fraction "
                     f">= {1 / len(trained.accepted):.2f} or aggregation=median")
        trained_at = time.perf_counter()
        if config.secure_aggregation:
            new_arrays = secure.arrays
        else:
            new_arrays, _ = strategy.aggregate_train(server_round, trained.accepted)
        arrays = new_arrays if new_arrays is not None else arrays
        aggregated_at = time.perf_counter()
        evaluated = (SiteReplies() if releases_under_dp(config)  # only the final test figures are released
                     else _evaluate(grid, strategy, config, state.normalisation, arrays, server_round, "validation",
                                    names))
        record = {
            "round": server_round,
            "train": trained.figures, "validation": evaluated.figures, "update_distance": distances,
            "validation_mean": weighted_means(evaluated.figures),
            "missing": {**trained.missing, **{s: r for s, r in evaluated.missing.items() if s not in trained.missing}},
            "seconds": {"train": trained_at - started, "aggregate": aggregated_at - trained_at,
                        "evaluate": time.perf_counter() - aggregated_at},
        }
        state = ServerState(completed_round=server_round, normalisation=state.normalisation,
                            history=[*state.history, record], provenance=state.provenance)
        save_checkpoint(run_dir, state, arrays.to_torch_state_dict(), strategy_state(strategy))
        progress(_round_line(record, config.num_rounds))
    seconds["rounds"], phase_started = time.perf_counter() - phase_started, time.perf_counter()
    recalibration = None
    if config.recalibrate_response:  # the final test and every later phase see the recalibrated model
        arrays, recalibration = recalibrate_response(grid, collect, config, state.normalisation, arrays, names)
        if recalibration.applied:
            state = state.model_copy(update={"recalibration": (recalibration.slope, recalibration.intercept)})
            save_checkpoint(run_dir, state, arrays.to_torch_state_dict(), strategy_state(strategy), round_file=False)
        progress(_recalibration_line(recalibration))
        seconds["response recalibration"], phase_started = time.perf_counter() - phase_started, time.perf_counter()
    final = _evaluate(grid, strategy, config, state.normalisation, arrays, config.num_rounds, "test", names)
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
    initial = ArrayRecord(build_model(grid_days.num_intervals, config.hidden_size, config.seed).state_dict())
    validation = run_validation(grid, collect, config, state.normalisation, initial, final.figures, planned, names,
                                progress)
    if validation:
        seconds |= validation.pop("seconds")
        results["validation"] = validation
        results["epsilon"] = results["epsilon"] | validation["epsilon"]
    results |= {"started_at": started_at, "seconds": seconds}
    if state.provenance is not None:
        results["provenance"] = final_provenance(state.provenance, state.completed_round, results["epsilon"],
                                                 results["test_mean"]).model_dump()
    _write_json(run_dir / "metrics.json", results)
    try:
        write_consortium_report(run_dir / "consortium_report.html", summary_from_results(results, run_dir))
    except Exception as error:  # the run's figures are already saved; say what failed and carry on
        progress(f"consortium report not written: {type(error).__name__}: {error}")
    return results


def _evaluate(grid: Grid, strategy, config: RunConfig, stats: NormalisationStats, arrays: ArrayRecord,
              server_round: int, split: str, names: dict[int, str]) -> SiteReplies:
    records = instruction_records(config, stats, split=split)
    messages = _with_records(strategy.configure_evaluate(server_round, arrays, records["config"], grid),
                             {NORMALISATION_KEY: records[NORMALISATION_KEY]})
    return collect(grid, messages, config.round_timeout_s, names)


def _recalibration_line(recalibration) -> str:
    if not recalibration.applied:
        return (f"response recalibration not applied: {recalibration.reason}"
                + (f" | out: {recalibration.missing}" if recalibration.missing else ""))
    return (f"response recalibration: p = σ({recalibration.slope:.3f}·logit {recalibration.intercept:+.3f}) on "
            f"{recalibration.validation_patients} validation patients of {len(recalibration.sites)} site(s)"
            + (f" | out: {', '.join(recalibration.missing)}" if recalibration.missing else ""))


def _epsilon_by_site(history: list[dict]) -> dict[str, float]:
    return {site: f["epsilon"] for site, f in last_training_figures(history).items() if "epsilon" in f}


def _round_line(record: dict, num_rounds: int) -> str:
    mean = record["validation_mean"]
    eps = [f["epsilon"] for f in record["train"].values() if "epsilon" in f]
    show = lambda key: f"{mean[key]:.3f}" if key in mean and math.isfinite(mean[key]) else "n/a"  # noqa: E731
    missing = f" | out: {', '.join(record['missing'])}" if record["missing"] else ""
    return (f"round {record['round']}/{num_rounds}: {len(record['train'])} sites | val response AUC {show('response-auc')}"
            f" | PFS C {show('pfs-cindex')} | OS C {show('os-cindex')}"
            f" | max ε {max(eps) if eps else float('nan'):.2f} | {sum(record['seconds'].values()):.1f} s{missing}")


def _write_json(path: Path, payload: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload, indent=2))
    temporary.replace(path)
