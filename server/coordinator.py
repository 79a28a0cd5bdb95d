"""The coordinator: one object owns a run's Grid, configuration, feature scaling, site names and progress line,
and one round function trains and aggregates for the federation and for every validation phase alike.

So every phase gets the same screens (unusable and implausibly large updates are left out with their reason), the
same robust aggregation and server-side clipping (the phase's Flower strategy), and SecAgg+ where it is on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, RecordDict
from flwr.serverapp import Grid

from server.screening import oversized_updates, update_distance, update_problem
from server.secure_aggregation import secure_train_round
from shared.config import RunConfig
from shared.encoding import SurvivalGrid
from shared.harmonisation import NormalisationStats, from_metric_record_dict, pool_summaries
from shared.messages import (
    DATA_FINGERPRINT_KEY,
    DICTIONARY_KEY,
    METRICS_KEY,
    MODEL_ARRAYS_KEY,
    NORMALISATION_KEY,
    PLAN_KEY,
    SERVER_ROUND_KEY,
    SITE_ID_KEY,
    SITE_KEY,
    SPLIT_KEY,
    PhaseInstruction,
    instruction_records,
)
from shared.provenance import dictionary_sha256

Progress = Callable[[str], None]


@dataclass
class SiteReplies:
    """Replies of one exchange, split into usable figures per site and sites that sat out (and why)."""

    accepted: list[Message] = field(default_factory=list)
    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


@dataclass
class TrainedRound:
    """One training round: the aggregated model (the old one when too few sites were usable), who took part."""

    arrays: ArrayRecord
    replies: SiteReplies
    distances: dict[str, float]  # each screened update's distance from the round's global model
    aggregated: bool
    train_seconds: float
    aggregate_seconds: float


def _site_name(message: Message, node: int, names: dict[int, str]) -> str:
    if not message.has_error() and SITE_KEY in message.content:
        names[node] = str(message.content[SITE_KEY][SITE_ID_KEY])
    return names.get(node, f"node-{node}")


def collect(grid: Grid, messages: Iterable[Message], timeout: float, names: dict[int, str],
            reference: dict[str, np.ndarray] | None = None) -> SiteReplies:
    """Each site's reply, or why it has none: an error, a timeout, or (a site seen earlier in this run) offline.

    Replies are matched to sites through the message they answer: an error the SuperLink writes for an
    unreachable node comes from the SuperLink itself, not from the node. With `reference` (the model the
    sites started from) an update of the wrong shape or with NaN/inf is left out with its reason.
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
            problem = update_problem(reply.content[MODEL_ARRAYS_KEY], reference)
            if problem:
                result.missing[site] = f"update rejected: {problem}"
                continue
        result.accepted.append(reply)
        result.figures[site] = {k: float(v) for k, v in reply.content[METRICS_KEY].items()}
    for message in messages:
        if message.metadata.dst_node_id not in answered:
            site = names.get(message.metadata.dst_node_id, f"node-{message.metadata.dst_node_id}")
            result.missing[site] = f"no reply within {timeout:.0f} s"
    connected = set(grid.get_node_ids())  # a site left out on purpose (leave-one-site-out) is still connected
    for node, site in names.items():
        if node not in connected and site not in result.figures and site not in result.missing:
            result.missing[site] = "not connected: its SuperNode is offline"
    return result


def with_records(messages: Iterable[Message], records: dict[str, ConfigRecord | ArrayRecord]) -> list[Message]:
    messages = list(messages)
    for message in messages:
        for key, record in records.items():
            message.content[key] = record
    return messages


def wait_for_sites(grid: Grid, min_sites: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while len(nodes := list(grid.get_node_ids())) < min_sites:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(nodes)} site(s) connected after {timeout:.0f} s; min-sites is {min_sites}")
        time.sleep(0.5)
    return nodes


class SubsetGrid:
    """The Grid as seen by a federation of some sites only: the strategy samples from `node_ids` alone.

    Every other call goes to the real Grid, so messages travel exactly as in the federation.
    """

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._allowed = set(node_ids)

    def get_node_ids(self) -> list[int]:
        return [node for node in self._grid.get_node_ids() if node in self._allowed]

    def __getattr__(self, name: str):  # noqa: ANN204 - delegate everything else to Flower's Grid
        return getattr(self._grid, name)


@dataclass
class Coordinator:
    """What every phase of a run shares: the Grid, the run configuration, the pooled feature scaling (once the
    sites harmonised), the site names (learnt from their replies) and where progress lines go."""

    grid: Grid
    config: RunConfig
    progress: Progress = print
    stats: NormalisationStats | None = None
    names: dict[int, str] = field(default_factory=dict)

    @property
    def survival_grid(self) -> SurvivalGrid:
        return SurvivalGrid.from_config(self.config)

    def node_ids(self) -> list[int]:
        return list(self.grid.get_node_ids())

    def site_name(self, node: int) -> str:
        return self.names.get(node, f"node-{node}")

    def collect(self, messages: Iterable[Message], timeout: float | None = None,
                reference: dict[str, np.ndarray] | None = None) -> SiteReplies:
        return collect(self.grid, messages, self.config.round_timeout_s if timeout is None else timeout, self.names,
                       reference)

    def records(self, phase: PhaseInstruction | None = None, **extra: str | int | float | bool
                ) -> dict[str, ConfigRecord]:
        """The plan and feature-scaling records of an instruction (with the phase's keys, if any)."""
        if self.stats is None:
            raise RuntimeError("the sites have not harmonised yet: no feature scaling to send")
        return instruction_records(self.config, self.stats, **(phase.records() if phase else {}), **extra)

    def messages(self, arrays: ArrayRecord, records: dict[str, ConfigRecord], nodes: Iterable[int],
                 message_type: str) -> list[Message]:
        """One instruction per node carrying `arrays` and `records` (validation phases, recalibration)."""
        return [Message(RecordDict({MODEL_ARRAYS_KEY: arrays, PLAN_KEY: records[PLAN_KEY],
                                    NORMALISATION_KEY: records[NORMALISATION_KEY]}),
                        dst_node_id=node, message_type=message_type) for node in nodes]

    def harmonise(self, fingerprints: dict[str, str] | None = None) -> NormalisationStats:
        """Pool every site's feature sums and counts into one scaling; no row leaves a site.

        `fingerprints` receives each site's data fingerprint (a keyed hash computed at the site) for provenance."""
        nodes = wait_for_sites(self.grid, self.config.min_sites, self.config.round_timeout_s)
        plan = ConfigRecord({SERVER_ROUND_KEY: 0, DICTIONARY_KEY: dictionary_sha256()})  # sites check the dictionary
        query = [Message(RecordDict({PLAN_KEY: plan}), dst_node_id=node,
                         message_type=f"{MessageType.QUERY}.feature_summary") for node in nodes]
        replies = self.collect(query)
        if len(replies.accepted) < self.config.min_sites:
            raise RuntimeError(f"only {len(replies.accepted)} site(s) sent feature statistics, "
                               f"min-sites is {self.config.min_sites}: {replies.missing}")
        if fingerprints is not None:
            fingerprints |= {str(m.content[SITE_KEY][SITE_ID_KEY]): str(m.content[SITE_KEY][DATA_FINGERPRINT_KEY])
                             for m in replies.accepted if DATA_FINGERPRINT_KEY in m.content[SITE_KEY]}
        self.stats = pool_summaries([from_metric_record_dict(dict(m.content[METRICS_KEY])) for m in replies.accepted])
        return self.stats

    def _reject_oversized(self, replies: SiteReplies, reference: dict[str, np.ndarray]) -> dict[str, float]:
        """Leave out updates implausibly far from the global model (a scaled or runaway site); say so."""
        sites = [str(m.content[SITE_KEY][SITE_ID_KEY]) for m in replies.accepted]  # accepted replies name their site
        distances = {site: update_distance(m.content[MODEL_ARRAYS_KEY], reference)
                     for site, m in zip(sites, replies.accepted)}
        rejected = oversized_updates(distances, self.config.update_norm_ratio)
        for site, reason in rejected.items():
            self.progress(f"{site}: {reason}")
            replies.missing[site] = reason
            replies.figures.pop(site, None)
        replies.accepted = [m for site, m in zip(sites, replies.accepted) if site not in rejected]
        return distances

    def train_round(self, strategy, server_round: int, arrays: ArrayRecord, phase: PhaseInstruction,
                    grid: Grid | SubsetGrid | None = None, released: dict[str, ArrayRecord] | None = None,
                    message_type: str = MessageType.TRAIN) -> TrainedRound:
        """One round of training on `grid` (default: every site): the strategy's instructions, the sites' updates
        screened (shape, NaN/inf, then size against the round's median), and the strategy's aggregate of the rest.

        With fewer usable sites than min-sites nothing is aggregated (`aggregated` False): the caller decides
        whether that stops the run. `released` records (the propensity model) travel with every instruction;
        `message_type` names the sites' handler (the propensity model's rounds: train.propensity)."""
        grid = self.grid if grid is None else grid
        started = time.perf_counter()
        reference = {k: v.numpy() for k, v in arrays.items()}  # this round's global model
        records = self.records(phase)
        if self.config.secure_aggregation:  # SecAgg+: only the mean is seen, so no per-site screening is possible
            secure = secure_train_round(grid, self.config, arrays, records, server_round, self.names)
            replies, distances = SiteReplies(figures=secure.figures, missing=secure.missing), {}
        else:
            messages = with_records(strategy.configure_train(server_round, arrays, records[PLAN_KEY], grid),
                                    {NORMALISATION_KEY: records[NORMALISATION_KEY], **(released or {})})
            for message in messages:  # Flower's strategies address the default train handler
                message.metadata.message_type = message_type
            allowed = set(grid.get_node_ids())
            if any(m.metadata.dst_node_id not in allowed for m in messages):
                raise RuntimeError(f"round {server_round}: the strategy addressed a site outside this federation")
            replies = self.collect(messages, reference=reference)
            distances = self._reject_oversized(replies, reference)
        trained_at = time.perf_counter()
        if len(replies.figures) < self.config.min_sites:
            return TrainedRound(arrays, replies, distances, False, trained_at - started, 0.0)
        if self.config.aggregation == "trimmed-mean" and int(self.config.trim_fraction * len(replies.accepted)) == 0:
            self.progress(f"round {server_round}: trim-fraction {self.config.trim_fraction} cuts no site out of "
                          f"{len(replies.accepted)}, so this is a plain (unweighted) mean; use trim-fraction "
                          f">= {1 / len(replies.accepted):.2f} or aggregation=median")
        if self.config.secure_aggregation:
            new_arrays = secure.arrays
        else:
            new_arrays, _ = strategy.aggregate_train(server_round, replies.accepted)
        return TrainedRound(new_arrays if new_arrays is not None else arrays, replies, distances, True,
                            trained_at - started, time.perf_counter() - trained_at)

    def evaluate_round(self, strategy, server_round: int, arrays: ArrayRecord, split: str) -> SiteReplies:
        """The strategy's evaluation of `arrays` on every site's `split` (validation each round, test at the end)."""
        records = self.records(**{SPLIT_KEY: split})
        messages = with_records(strategy.configure_evaluate(server_round, arrays, records[PLAN_KEY], self.grid),
                                {NORMALISATION_KEY: records[NORMALISATION_KEY]})
        return self.collect(messages)

    def evaluate_model(self, arrays: ArrayRecord, phase: PhaseInstruction,
                       nodes: Iterable[int] | None = None) -> SiteReplies:
        """One model evaluated on the test patients of every site (or of `nodes`), with bootstrap intervals."""
        records = self.records(phase.model_copy(update={"intervals": True, "site_report": False}),
                               **{SPLIT_KEY: "test"})
        targets = self.node_ids() if nodes is None else list(nodes)
        return self.collect(self.messages(arrays, records, targets, MessageType.EVALUATE))
