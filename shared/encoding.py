"""Turn contract records into the model's tensors: one block per dictionary modality, a presence mask, the regimen.

Every site encodes identically because the vocabularies come from the contract and the numeric scaling
from the consortium's pooled statistics (shared/harmonisation.py), never from another site's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

from shared.contract import MODALITIES, MODALITY_FIELDS
from shared.harmonisation import NUMERIC_TRANSFORMS, NormalisationStats
from shared.vocabulary import (
    DICTIONARY,
    REGIMEN_BY_CODE,
    REGIMEN_CODES,
    RESPONDER,
    BestResponse,
    DrugClass,
)

if TYPE_CHECKING:
    from shared.config import RunConfig


def _of_type(modality: str, *types: str) -> tuple[str, ...]:
    return tuple(f.name for f in DICTIONARY.fields_of(modality) if f.type in types)


# The encoded columns, read from the default dictionary: per modality its numeric fields, then its boolean
# flags, then its categorical one-hots (a two-code enum field such as sex gets one column, for its first code;
# cancer types and histologies always get one column per code).
NUMERIC_BY_MODALITY: dict[str, tuple[str, ...]] = {m: _of_type(m, "number", "integer") for m in MODALITIES}
BOOLEAN_BY_MODALITY: dict[str, tuple[str, ...]] = {m: _of_type(m, "boolean") for m in MODALITIES}
CATEGORIES: dict[str, tuple[str, ...]] = {
    f.name: DICTIONARY.codes(f)[:1] if len(DICTIONARY.codes(f)) == 2 and f.vocabulary is None else DICTIONARY.codes(f)
    for m in MODALITIES for f in DICTIONARY.fields_of(m) if f.categorical}
DRUG_CLASSES: tuple[str, ...] = tuple(c.value for c in DrugClass)
LINE_OF_THERAPY = "line_of_therapy" in DICTIONARY.columns  # a dictionary without the field has no such column


@dataclass(frozen=True)
class SurvivalGrid:
    """Discrete time intervals [edge_k, edge_k+1) of the hazard model; survival is reported at their ends."""

    interval_days: int
    horizon_days: int

    @property
    def edges(self) -> np.ndarray:
        return np.arange(0, self.horizon_days + 1, self.interval_days, dtype=np.float64)

    @property
    def time_grid_days(self) -> np.ndarray:
        return self.edges[1:]

    @property
    def num_intervals(self) -> int:
        return len(self.edges) - 1

    @classmethod
    def from_config(cls, config: RunConfig) -> SurvivalGrid:
        """The run's grid: every side derives it from the run configuration, never by hand."""
        return cls(config.survival_interval_days, config.survival_horizon_days)


@dataclass(frozen=True)
class EncodedCohort:
    """Model inputs and training targets for a set of patients, as float tensors of equal length.

    `blocks` holds one tensor per modality of the dictionary (MODALITIES order): a one-modality dictionary
    gives one block, the default dictionary four.
    """

    blocks: dict[str, torch.Tensor]
    modality_mask: torch.Tensor  # (n, modalities): 1 where the modality was measured
    treatment: torch.Tensor
    responder: torch.Tensor
    responder_known: torch.Tensor
    pfs_survived: torch.Tensor  # (n, K): interval fully survived
    pfs_event: torch.Tensor  # (n, K): progression (or death) in this interval
    pfs_known: torch.Tensor
    os_survived: torch.Tensor
    os_event: torch.Tensor
    os_known: torch.Tensor

    def __post_init__(self) -> None:
        if tuple(self.blocks) != MODALITIES:
            raise ValueError(f"EncodedCohort needs the blocks {', '.join(MODALITIES)} (the dictionary's "
                             f"modalities), in this order; got {', '.join(self.blocks)}")

    def __len__(self) -> int:
        return int(self.treatment.shape[0])

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Inputs first (in model.forward order: blocks, mask, treatment), then targets: a TensorDataset's order."""
        return (*self.blocks.values(), *(getattr(self, f.name) for f in fields(self)[1:]))

    def inputs(self) -> tuple[torch.Tensor, ...]:
        return self.tensors()[:NUM_INPUTS]

    @classmethod
    def from_tensors(cls, tensors: tuple[torch.Tensor, ...] | list[torch.Tensor]) -> EncodedCohort:
        """The inverse of tensors() (e.g. after selecting rows of each)."""
        blocks, rest = tensors[:len(MODALITIES)], tensors[len(MODALITIES):]
        return cls(dict(zip(MODALITIES, blocks, strict=True)), *rest)


NUM_INPUTS = len(MODALITIES) + 2  # the modality blocks, the presence mask, the treatment
MODALITY_MASK_INPUT = len(MODALITIES)  # position of modality_mask among the model's inputs (EncodedCohort.inputs)


def _indicated(modality: str) -> tuple[str, ...]:
    """The fields of a modality whose missingness gets its own column (the dictionary's missingIndicator)."""
    ordered = (*NUMERIC_BY_MODALITY[modality], *BOOLEAN_BY_MODALITY[modality],
               *(f for f in CATEGORIES if DICTIONARY.field(f).modality == modality))
    return tuple(f for f in ordered if DICTIONARY.field(f).missing_indicator)


def _categories_of(modality: str) -> dict[str, tuple[str, ...]]:
    return {f: codes for f, codes in CATEGORIES.items() if DICTIONARY.field(f).modality == modality}


def feature_names() -> dict[str, list[str]]:
    """Column names of each block, in encoding order (for SHAP and reports)."""
    names: dict[str, list[str]] = {}
    for modality in MODALITIES:
        block = [*NUMERIC_BY_MODALITY[modality], *BOOLEAN_BY_MODALITY[modality]]
        block += [f"{field}={code}" for field, codes in _categories_of(modality).items() for code in codes]
        block += [f"{f} missing" for f in _indicated(modality)]
        names[modality] = block
    names["treatment"] = [f"regimen={c}" for c in REGIMEN_CODES] + [f"drug class={c}" for c in DRUG_CLASSES] \
        + (["line_of_therapy"] if LINE_OF_THERAPY else [])
    return names


def _numeric(frame: pd.DataFrame, column: str) -> np.ndarray:
    return pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)


def _boolean(frame: pd.DataFrame, column: str) -> np.ndarray:
    """+1 / -1 for measured true / false, nan where not measured."""
    values = frame[column].map(lambda v: np.nan if v is None or (isinstance(v, float) and np.isnan(v))
                               else (1.0 if bool(v) and str(v).lower() not in ("false", "0") else -1.0))
    return values.to_numpy(dtype=np.float64)


def _scaled(frame: pd.DataFrame, column: str, stats: NormalisationStats) -> np.ndarray:
    transform = NUMERIC_TRANSFORMS.get(column)
    raw = _numeric(frame, column)
    values = transform(raw) if transform is not None else raw
    return (values - stats.mean[column]) / max(stats.std[column], 1e-6)


def _modality_block(frame: pd.DataFrame, modality: str, stats: NormalisationStats) -> np.ndarray:
    columns = [_scaled(frame, c, stats) for c in NUMERIC_BY_MODALITY[modality]]
    columns += [_boolean(frame, c) for c in BOOLEAN_BY_MODALITY[modality]]
    columns += [(frame[field].astype(str).to_numpy()[:, None] == np.array(codes)[None, :]).astype(np.float64)
                for field, codes in _categories_of(modality).items()]
    missing = [frame[f].isna().to_numpy(dtype=np.float64) if f in CATEGORIES else np.isnan(
        _numeric(frame, f) if f in NUMERIC_BY_MODALITY[modality] else _boolean(frame, f)) for f in _indicated(modality)]
    block = np.nan_to_num(np.column_stack(columns))
    return np.column_stack([block, *missing]) if missing else block


def encode_treatment(regimens: pd.Series | list[str], line_of_therapy: np.ndarray,
                     stats: NormalisationStats) -> np.ndarray:
    """Regimen one-hot, its drug classes, and the line of therapy: what the trunk is conditioned on."""
    codes = np.asarray(list(regimens), dtype=object)
    onehot = (codes[:, None] == np.array(REGIMEN_CODES, dtype=object)[None, :]).astype(np.float64)
    classes = np.array([[float(DrugClass(c) in REGIMEN_BY_CODE[code].classes) for c in DRUG_CLASSES]
                        for code in codes]).reshape(len(codes), len(DRUG_CLASSES))
    if not LINE_OF_THERAPY:
        return np.column_stack([onehot, classes])
    line = np.nan_to_num((np.asarray(line_of_therapy, dtype=np.float64) - stats.mean["line_of_therapy"]) / max(
        stats.std["line_of_therapy"], 1e-6))  # an unrecorded line of therapy sits at the consortium mean
    return np.column_stack([onehot, classes, line])


def _survival_targets(frame: pd.DataFrame, endpoint: str, grid: SurvivalGrid) -> tuple[np.ndarray, ...]:
    days = _numeric(frame, f"{endpoint}_days")
    event = _boolean(frame, f"{endpoint}_event") > 0
    known = ~np.isnan(days)
    t = np.nan_to_num(days, nan=0.0)[:, None]
    lower, upper = grid.edges[None, :-1], grid.edges[None, 1:]
    survived = (t >= upper) & known[:, None]
    in_interval = (t >= lower) & (t < upper)
    events = in_interval & event[:, None] & known[:, None]
    return survived.astype(np.float32), events.astype(np.float32), known.astype(np.float32)


def modality_presence(frame: pd.DataFrame) -> np.ndarray:
    """(n, modalities) presence mask: a modality is present when any of its fields was measured."""
    return np.column_stack([frame[list(MODALITY_FIELDS[m])].notna().any(axis=1).to_numpy()
                            for m in MODALITIES]).astype(np.float32)


def encode_cohort(frame: pd.DataFrame, stats: NormalisationStats, grid: SurvivalGrid) -> EncodedCohort:
    """Encode a validated contract table (see shared.contract.validate_frame)."""
    blocks = {m: torch.tensor(_modality_block(frame, m, stats), dtype=torch.float32) for m in MODALITIES}
    line_of_therapy = _numeric(frame, "line_of_therapy") if LINE_OF_THERAPY else np.full(len(frame), np.nan)
    treatment = encode_treatment(frame["regimen"], line_of_therapy, stats)
    response = frame["best_response"].map(lambda v: None if pd.isna(v) else BestResponse(v) in RESPONDER)
    pfs = _survival_targets(frame, "pfs", grid)
    os_ = _survival_targets(frame, "os", grid)
    as_tensor = lambda a: torch.tensor(np.asarray(a, dtype=np.float32))  # noqa: E731
    return EncodedCohort(
        blocks=blocks, modality_mask=as_tensor(modality_presence(frame)),
        treatment=as_tensor(treatment),
        responder=as_tensor(response.map(lambda v: float(v) if v is not None else 0.0)),
        responder_known=as_tensor(response.notna()),
        pfs_survived=as_tensor(pfs[0]), pfs_event=as_tensor(pfs[1]), pfs_known=as_tensor(pfs[2]),
        os_survived=as_tensor(os_[0]), os_event=as_tensor(os_[1]), os_known=as_tensor(os_[2]),
    )


def input_sizes() -> dict[str, int]:
    return {name: len(columns) for name, columns in feature_names().items()}
